//! SQLite store: the embedded default. WAL mode, one file.
//!
//! SQLite serialises writers, so a write transaction opened with
//! `BEGIN IMMEDIATE` sees and changes the database atomically; statements
//! that must be atomic on their own (token consumption, outbox claims) are
//! single `UPDATE … RETURNING` statements.
//!
//! Queries go through rusqlite on a small pool of connections, each store
//! operation one closure with prepared statements cached per connection. It
//! runs on the async thread when it can, and on tokio's blocking pool when it
//! must wait for a lock (see `SqliteStore::execute`). This process's write
//! operations queue for one gate before they reach SQLite, so they never wait
//! for each other inside SQLite's busy handler. (sqlx's SQLite driver costs a
//! channel round trip per statement, about ten times the statement itself;
//! sqlx still applies the migrations, so both backends share one migration
//! format and history table.)

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::app_cache::AppCache;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often committed pages move from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Writes after which a checkpoint runs without waiting for its tick. Under
/// heavy writes the WAL so stays well inside `WAL_SIZE_LIMIT` (a write adds
/// a few frames of 4 KiB): past the limit, the first commit after the WAL
/// starts over cuts the file back, which holds that request up, and the WAL
/// then grows into new file pages again, which costs the kernel more per
/// frame than writing over pages it has.
const CHECKPOINT_AFTER_WRITES: u64 = 2000;
/// Checkpoint passes, at most, that hold no writer up before the last one,
/// which does (see `checkpoint_in_background`).
const FREE_PASSES: usize = 3;
/// A pass that copied at most this many frames took little time, so few
/// were appended meanwhile: the pass at the writers' gate can follow.
const FEW_FRAMES: i64 = 256;
/// Bytes of WAL file kept after a checkpoint resets it.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// Writes committed together at most: a batch runs on an async worker
/// (unless SQLite's lock is taken), which it holds for about 30 µs a write.
const MAX_BATCH: usize = 32;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

pub struct SqliteStore {
    pool: Arc<Pool>,
    /// The URL as given, for the migrator.
    url: String,
    apps: AppCache,
}

/// Idle connections, permits that bound how many exist, and the gate that
/// lets one of this process's write operations at a time reach SQLite.
struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// One permit. SQLite admits one writer at a time and makes the others
    /// retry after a sleep; queueing this process's writers here instead
    /// hands the lock over as soon as it is free, and leaves `SQLITE_BUSY` to
    /// other processes' writers (an operator's `apps` command, say).
    writer: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// Operations that met a lock held by another connection and ran again
    /// on the blocking pool.
    waited: AtomicU64,
    /// Writes waiting for the gate to commit together (see `write_batched`).
    queue: Mutex<Vec<(u64, Job)>>,
    /// Numbers the queued writes.
    queued: AtomicU64,
    /// The most writes one transaction has committed together, for tests.
    largest_batch: AtomicU64,
    /// Writes since the last checkpoint began.
    writes: AtomicU64,
    /// Wakes the checkpoint task after `CHECKPOINT_AFTER_WRITES` writes.
    checkpoint_due: Arc<Notify>,
    /// Checkpoints begun, for tests.
    checkpoints: AtomicU64,
}

impl Pool {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // NORMAL in WAL mode: a commit survives a crash of the process
        // (kill -9) without an fsync per transaction. Operators who need
        // power-loss durability run PostgreSQL.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        // Checkpoints (which fsync) run in the background, not in whichever
        // request's commit crosses the WAL size threshold.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))?;
        Ok(conn)
    }

    fn idle(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        match self.idle() {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    /// Counts `writes` towards the next checkpoint.
    fn wrote(&self, writes: u64) {
        let before = self.writes.fetch_add(writes, Ordering::Relaxed);
        if before < CHECKPOINT_AFTER_WRITES && before + writes >= CHECKPOINT_AFTER_WRITES {
            self.checkpoint_due.notify_one();
        }
    }

    fn give_back(&self, conn: Connection) {
        // A connection left inside a transaction (a panic mid-operation) is
        // not reused.
        if conn.is_autocommit() {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://` URL.
    pub async fn connect(database: &DatabaseOptions) -> StoreResult<Self> {
        Self::connect_checkpointing_every(database, CHECKPOINT_EVERY).await
    }

    async fn connect_checkpointing_every(database: &DatabaseOptions, every: Duration) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&database.url)?;
        let path = options.get_filename().to_path_buf();
        if is_in_memory(&database.url) || path.as_os_str().is_empty() {
            return Err(StoreError::UnsupportedUrl(format!(
                "{}: an in-memory database is private to one connection; use a file",
                redact_url(&database.url)
            )));
        }
        let max = usize::try_from(database.max_connections.max(1)).unwrap_or(1);
        let store = Self {
            pool: Arc::new(Pool {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max)),
                writer: Arc::new(Semaphore::new(1)),
                acquire_timeout: database.acquire_timeout,
                waited: AtomicU64::new(0),
                queue: Mutex::new(Vec::new()),
                queued: AtomicU64::new(0),
                largest_batch: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                checkpoint_due: Arc::new(Notify::new()),
                checkpoints: AtomicU64::new(0),
            }),
            url: database.url.clone(),
            apps: AppCache::new(),
        };
        // Open one connection now, so a bad path fails at start-up.
        store.run(|_| Ok(())).await?;
        tokio::spawn(checkpoint_in_background(
            Arc::downgrade(&store.pool),
            Arc::clone(&store.pool.checkpoint_due),
            every,
        ));
        Ok(store)
    }

    /// Runs a read-only `operation` on a pooled connection.
    async fn run<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.execute(None, operation).await
    }

    /// Runs an `operation` that writes, once this process's writers before it
    /// are done (see `Pool::writer`).
    async fn run_write<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let gate = tokio::time::timeout(self.pool.acquire_timeout, self.pool.writer.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::PoolTimedOut)?
            .map_err(|_| StoreError::PoolTimedOut)?;
        self.pool.wrote(1);
        self.execute(Some(gate), operation).await
    }

    /// Runs `operation` on a pooled connection, holding `gate` (if any) until
    /// it is done.
    ///
    /// Most operations take microseconds, less than handing them to another
    /// thread and back (two thread wake-ups), so they run right here when a
    /// connection is open and idle and no other writer holds SQLite's lock: with no
    /// busy wait, a locked database fails at once with `SQLITE_BUSY` instead
    /// of blocking the async worker. Then (and when every connection is in
    /// use) the operation runs again on tokio's blocking pool, where it waits
    /// up to the busy timeout. A busy statement changed nothing and a busy
    /// transaction was rolled back, so running again is safe.
    async fn execute<T, F>(&self, gate: Option<OwnedSemaphorePermit>, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        if let Ok(permit) = self.pool.permits.clone().try_acquire_owned()
            && let Some(mut conn) = self.pool.idle()
        {
            conn.busy_timeout(Duration::ZERO)?;
            let result = operation(&mut conn);
            self.pool.give_back(conn);
            drop(permit);
            match result {
                Err(StoreError::Sqlite(e)) if is_busy(&e) => {
                    self.pool.waited.fetch_add(1, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        let permit = tokio::time::timeout(self.pool.acquire_timeout, self.pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::PoolTimedOut)?
            .map_err(|_| StoreError::PoolTimedOut)?;
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let _held = (permit, gate);
            let mut conn = pool.take()?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let result = operation(&mut conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("database task failed: {e}")))?
    }

    /// Runs `operation` in a write transaction, together with the other
    /// batched writes waiting at the gate: group commit.
    ///
    /// Each write queues itself, then waits for the gate or for its result.
    /// Whoever gets the gate runs every queued write in one transaction, each
    /// inside its own savepoint, and commits once: one lock acquisition, one
    /// commit and one copy of each shared page (a table's last leaf, say) for
    /// all of them, where each used to pay for its own. With one write
    /// waiting (light load) that is a plain transaction, as before.
    ///
    /// `operation` returns its value and whether to keep what it wrote; an
    /// error, or `Keep::Discard`, rolls back its own changes only. Its value is
    /// handed over once the commit succeeded: nothing is answered that is not
    /// stored.
    async fn write_batched<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<(T, Keep)> + Send + 'static,
    {
        let (sender, mut result) = tokio::sync::oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(Pending { operation, sender });
        let id = self.pool.queued.fetch_add(1, Ordering::Relaxed);
        self.pool
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, job));
        let abandoned = || StoreError::Corrupt("a batched write was abandoned".into());
        loop {
            // The gate is free (light load): lead a batch without waiting.
            // Waiting on `result` first would register this task to be woken
            // when its own batch hands the result over, and a task woken while
            // it runs is scheduled again once it yields: on a multi-thread
            // runtime, that wakes another worker for nothing, every request.
            if let Ok(gate) = self.pool.writer.clone().try_acquire_owned() {
                self.lead_batch(gate).await;
                match result.try_recv() {
                    Ok(done) => return done,
                    Err(TryRecvError::Closed) => return Err(abandoned()),
                    // A full batch left ours queued: take the gate again.
                    Err(TryRecvError::Empty) => continue,
                }
            }
            let gate = tokio::select! {
                biased;
                done = &mut result => return done.map_err(|_| abandoned())?,
                gate = tokio::time::timeout(self.pool.acquire_timeout, self.pool.writer.clone().acquire_owned()) => gate,
            };
            let Ok(Ok(gate)) = gate else {
                // Timed out: withdraw the write, unless a leader has taken it.
                let withdrawn = {
                    let mut queue = self.pool.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    let at = queue.iter().position(|(queued, _)| *queued == id);
                    at.map(|at| queue.remove(at)).is_some()
                };
                if withdrawn {
                    return Err(StoreError::PoolTimedOut);
                }
                return result.await.map_err(|_| abandoned())?;
            };
            self.lead_batch(gate).await;
            // Ours was in this batch, or in one before, whose leader handed
            // the result over before it let go of the gate; or a full batch
            // left it queued, and the loop takes the gate again.
        }
    }

    /// Commits the first `MAX_BATCH` queued writes (if any), holding `gate`.
    async fn lead_batch(&self, gate: OwnedSemaphorePermit) {
        let jobs: Vec<Job> = {
            let mut queue = self.pool.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let take = queue.len().min(MAX_BATCH);
            queue.drain(..take).map(|(_, job)| job).collect()
        };
        if !jobs.is_empty() {
            self.pool.wrote(u64::try_from(jobs.len()).unwrap_or(u64::MAX));
            self.commit_batch(gate, jobs).await;
        }
    }

    /// Runs `jobs` in one transaction, holding `gate` until it is done: right
    /// here when a connection is idle and SQLite's lock is free, else on the
    /// blocking pool (see `execute`).
    async fn commit_batch(&self, gate: OwnedSemaphorePermit, jobs: Vec<Job>) {
        let size = u64::try_from(jobs.len()).unwrap_or(u64::MAX);
        self.pool.largest_batch.fetch_max(size, Ordering::Relaxed);
        if let Ok(permit) = self.pool.permits.clone().try_acquire_owned()
            && let Some(conn) = self.pool.idle()
        {
            let begun = conn
                .busy_timeout(Duration::ZERO)
                .and_then(|()| control(&conn, "BEGIN IMMEDIATE"));
            match begun {
                Ok(()) => {
                    run_jobs(&conn, jobs);
                    self.pool.give_back(conn);
                    return;
                }
                Err(error) if is_busy(&error) => {
                    self.pool.give_back(conn);
                    drop(permit);
                    self.pool.waited.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.pool.give_back(conn);
                    return fail_jobs(jobs, || copy_error(&error));
                }
            }
        }
        // In a task of its own, so that a leader whose request goes away
        // does not take the other writes of its batch with it.
        let waiting = tokio::spawn(commit_batch_waiting(Arc::clone(&self.pool), gate, jobs));
        if let Err(error) = waiting.await {
            // A write panicked: the others' senders went with the task.
            tracing::error!(%error, "a batch of writes failed");
        }
    }

    /// Runs `operation` in a write transaction that holds SQLite's write lock
    /// from its start; commits when it returns `Ok`.
    async fn write<T, F>(&self, operation: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.run_write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = operation(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }
}

const APP_COLUMNS: &str =
    "id, name, plan, burst, monthly_limit, token_ttl_s, session_ttl_s, redirect_urls, disabled, created_at";

fn app_from_row(row: &Row<'_>) -> StoreResult<AppRecord> {
    let plan: String = row.get("plan")?;
    let urls: String = row.get("redirect_urls")?;
    Ok(AppRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        plan: Plan::parse(&plan).ok_or_else(|| StoreError::Corrupt(format!("plan {plan:?}")))?,
        burst: u32::try_from(row.get::<_, i64>("burst")?).map_err(|_| StoreError::Corrupt("burst".into()))?,
        monthly_limit: row
            .get::<_, Option<i64>>("monthly_limit")?
            .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt("monthly_limit".into())))
            .transpose()?,
        token_ttl_s: row.get("token_ttl_s")?,
        session_ttl_s: row.get("session_ttl_s")?,
        redirect_urls: serde_json::from_str(&urls).map_err(|e| StoreError::Corrupt(format!("redirect_urls: {e}")))?,
        disabled: row.get::<_, i64>("disabled")? != 0,
        created_at: row.get("created_at")?,
    })
}

/// Stores a finished response under a key nobody holds, in one statement;
/// false, with nothing written, when the key has a record.
fn insert_response(
    conn: &Connection,
    app_id: &str,
    key: &str,
    request_hash: &[u8],
    now: Millis,
    response: &StoredResponse,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at, status, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (app_id, key) DO NOTHING",
        )?
        .execute(params![
            app_id,
            key,
            request_hash,
            now,
            i64::from(response.status),
            response.body
        ])?;
    Ok(inserted == 1)
}

/// Deletes the idempotency records created at or before `?1` without an
/// index on `created_at` (one page less for every keyed request to write):
/// records are inserted in time order, so the expired ones come first in
/// rowid order. It deletes those before the first record still kept, and
/// reads only them and that one. A record inserted out of order (a clock
/// stepped back) is never deleted early; it can only stay a little longer.
const PURGE_IDEMPOTENCY_KEYS: &str = "DELETE FROM idempotency_keys WHERE rowid < coalesce(
         (SELECT rowid FROM idempotency_keys WHERE created_at > ?1 ORDER BY rowid LIMIT 1),
         (SELECT max(rowid) + 1 FROM idempotency_keys))";

/// Copies the WAL's committed pages into the database file every
/// `CHECKPOINT_EVERY`, and after every `CHECKPOINT_AFTER_WRITES` writes, on
/// the blocking pool, until the store is dropped.
///
/// SQLite starts writing the WAL from its beginning again only when a write
/// begins with every frame already copied. Under a steady stream of writes a
/// checkpoint never gets there on its own: frames are appended while it copies.
/// The WAL then grows for as long as the server runs (and each append to a new
/// region of the file costs the kernel a page to zero). So after the copy, a
/// second pass copies the frames appended meanwhile while this process's
/// writers wait at their gate (`Pool::writer`), and the next write starts the
/// WAL over. The passes before it do the bulk of the work (and their fsyncs)
/// without holding anyone up: each copies what was appended during the one
/// before, until one finds few frames (at most `FREE_PASSES`), so the pass at
/// the gate has little left to copy.
///
/// PASSIVE: neither pass waits for SQLite's locks; what one cannot copy (a
/// reader still on an older snapshot, another process's writer) waits for the
/// next tick.
async fn checkpoint_in_background(pool: Weak<Pool>, due: Arc<Notify>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The WAL's frame count after the last tick's checkpoint.
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = due.notified() => tick.reset(),
        }
        let Some(pool) = pool.upgrade() else { return };
        pool.writes.store(0, Ordering::Relaxed);
        pool.checkpoints.fetch_add(1, Ordering::Relaxed);
        let outcome = match checkpoint(&pool, None).await {
            // Nothing was written since the last tick.
            Ok(Some(wal)) if Some(wal) == last && wal.copied == wal.frames => continue,
            // A checkpoint counts the frames there were when it began.
            Ok(Some(mut previous)) => {
                for _ in 1..FREE_PASSES {
                    let Ok(Some(pass)) = checkpoint(&pool, None).await else {
                        break;
                    };
                    // The frames appended while the pass before copied.
                    let copied = pass.copied - previous.copied;
                    previous = pass;
                    if copied <= FEW_FRAMES {
                        break;
                    }
                }
                let gate = tokio::time::timeout(pool.acquire_timeout, pool.writer.clone().acquire_owned()).await;
                match gate {
                    Ok(Ok(gate)) => checkpoint(&pool, Some(gate)).await,
                    _ => continue,
                }
            }
            outcome => outcome,
        };
        match outcome {
            Ok(wal) => last = wal,
            Err(error) => tracing::warn!(%error, "SQLite WAL checkpoint failed"),
        }
    }
}

/// A checkpoint's count of frames: in the WAL when it began, and copied into
/// the database file by the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WalFrames {
    frames: i64,
    copied: i64,
}

/// One PASSIVE checkpoint on the blocking pool, holding `gate` (if any) until
/// it is done; `None` when every connection was in use.
async fn checkpoint(pool: &Arc<Pool>, gate: Option<OwnedSemaphorePermit>) -> StoreResult<Option<WalFrames>> {
    let Ok(permit) = pool.permits.clone().try_acquire_owned() else {
        return Ok(None);
    };
    let pool = Arc::clone(pool);
    tokio::task::spawn_blocking(move || {
        let _held = (permit, gate);
        let conn = pool.take()?;
        // Columns: busy, frames, copied.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok(WalFrames {
                frames: row.get(1)?,
                copied: row.get(2)?,
            })
        });
        pool.give_back(conn);
        Ok(Some(result?))
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("checkpoint task failed: {e}")))?
}

/// `sqlite::memory:` or `mode=memory`: a database private to each connection.
fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Claims `key` (a record in flight) if it has no record; false if it has one.
fn claim_free_key(conn: &Connection, app_id: &str, key: &str, request_hash: &[u8], now: Millis) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app_id, key) DO NOTHING",
        )?
        .execute(params![app_id, key, request_hash, now])?;
    Ok(inserted == 1)
}

/// Stores the finished response of the request that holds `key`.
fn store_response(conn: &Connection, app_id: &str, key: &str, response: &StoredResponse) -> StoreResult<()> {
    conn.prepare_cached("UPDATE idempotency_keys SET status = ?1, body = ?2 WHERE app_id = ?3 AND key = ?4")?
        .execute(params![i64::from(response.status), response.body, app_id, key])?;
    Ok(())
}

/// Another connection (of this process or another) holds the lock.
/// Whether a batched write keeps what it wrote.
enum Keep {
    Commit,
    /// Roll back this write's changes (it found nothing to do after all).
    Discard,
}

/// A batched write, waiting for its batch.
type Job = Box<dyn BatchedWrite>;

trait BatchedWrite: Send {
    /// Runs the write on the connection of its batch's transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    /// Hands `error` over instead: the batch could not run it.
    fn fail(self: Box<Self>, error: StoreError);
}

/// A write of `write_batched` and where its result goes.
struct Pending<T, F> {
    operation: F,
    sender: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<T, F> BatchedWrite for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<(T, Keep)> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Pending { operation, sender } = *self;
        match operation(conn) {
            Ok((value, keep)) => Ran {
                keep: matches!(keep, Keep::Commit),
                deliver: Box::new(move |committed| {
                    // The caller may have gone away (a dropped request).
                    let _ = sender.send(committed.map(|()| value));
                }),
            },
            Err(error) => Ran {
                keep: false,
                deliver: Box::new(move |_| {
                    let _ = sender.send(Err(error));
                }),
            },
        }
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.sender.send(Err(error));
    }
}

/// Hands each of `jobs` the error that kept their batch from running.
fn fail_jobs(jobs: Vec<Job>, error: impl Fn() -> StoreError) {
    let first = error();
    tracing::warn!(error = %first, "a batch of writes could not run");
    let mut errors = std::iter::once(first).chain(std::iter::repeat_with(error));
    for job in jobs {
        job.fail(errors.next().unwrap_or(StoreError::PoolTimedOut));
    }
}

/// `SqliteStore::commit_batch` when SQLite's lock is taken by another
/// process or every connection is in use: waits for a connection, then for
/// the lock on the blocking pool, up to the busy timeout.
async fn commit_batch_waiting(pool: Arc<Pool>, gate: OwnedSemaphorePermit, jobs: Vec<Job>) {
    let permit = tokio::time::timeout(pool.acquire_timeout, pool.permits.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = permit else {
        return fail_jobs(jobs, || StoreError::PoolTimedOut);
    };
    let blocking = Arc::clone(&pool);
    let done = tokio::task::spawn_blocking(move || {
        let _held = (permit, gate);
        let conn = match blocking.take() {
            Ok(conn) => conn,
            Err(error) => return Err((jobs, error)),
        };
        let begun = conn
            .busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| control(&conn, "BEGIN IMMEDIATE"));
        if let Err(error) = begun {
            blocking.give_back(conn);
            return Err((jobs, error));
        }
        run_jobs(&conn, jobs);
        blocking.give_back(conn);
        Ok(())
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err((jobs, error))) => fail_jobs(jobs, || copy_error(&error)),
        Err(error) => tracing::error!(%error, "a batch of writes failed"),
    }
}

/// A batched write that ran: whether to keep its changes, and how to hand
/// its result over once the transaction's fate is known.
struct Ran {
    keep: bool,
    deliver: Box<dyn FnOnce(StoreResult<()>) + Send>,
}

/// Runs `jobs` in the write transaction open on `conn`, each in its own
/// savepoint (none for a lone job), ends the transaction, and hands each
/// job's result over once the transaction's fate is known.
fn run_jobs(conn: &Connection, jobs: Vec<Job>) {
    let alone = jobs.len() == 1;
    let mut ran = Vec::with_capacity(jobs.len());
    let mut broken = None;
    for job in jobs {
        if let Some(error) = &broken {
            job.fail(copy_error(error));
            continue;
        }
        if !alone && let Err(error) = control(conn, "SAVEPOINT batched_write") {
            job.fail(copy_error(&error));
            broken = Some(error);
            continue;
        }
        let outcome = job.run(conn);
        if !alone {
            let ended = if outcome.keep {
                control(conn, "RELEASE batched_write")
            } else {
                control(conn, "ROLLBACK TO batched_write").and_then(|()| control(conn, "RELEASE batched_write"))
            };
            if let Err(error) = ended {
                broken = Some(error);
            }
        }
        ran.push(outcome);
    }
    let keep_any = broken.is_none() && ran.iter().any(|r| r.keep);
    let ended = if keep_any {
        control(conn, "COMMIT")
    } else {
        control(conn, "ROLLBACK")
    };
    let failure = match (broken, ended) {
        (Some(error), _) | (None, Err(error)) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Some(error)
        }
        (None, Ok(())) => None,
    };
    for outcome in ran {
        // On a failure every write gets the error, kept or not: one may have
        // decided on what an earlier one wrote, which is gone now.
        let committed = failure.as_ref().map_or(Ok(()), |error| Err(copy_error(error)));
        (outcome.deliver)(committed);
    }
}

/// Runs a transaction control statement (`BEGIN`, `COMMIT`, savepoints)
/// from the connection's statement cache: parsed once per connection
/// instead of at every write.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The same SQLite error again, for each write of a batch it ended.
fn copy_error(error: &rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Corrupt(format!("batch commit failed: {other}")),
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Counts a bucket's hits inside the window and the time its oldest one leaves.
fn window_state(
    tx: &Transaction<'_>,
    bucket: &str,
    now: Millis,
    window_ms: i64,
    limit: u32,
) -> StoreResult<(u32, WindowState)> {
    let (count, oldest): (i64, Option<i64>) = tx
        .prepare_cached("SELECT COUNT(*), MIN(at) FROM rate_hits WHERE bucket = ?1 AND at > ?2")?
        .query_row(params![bucket, now - window_ms], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let reset_ms = oldest.map_or(window_ms, |t| (t + window_ms - now).max(0));
    Ok((
        count,
        WindowState {
            limit,
            remaining: limit.saturating_sub(count),
            reset_ms,
        },
    ))
}

/// What a refused consumption found, from a token's row.
fn refusal(conn: &Connection, hash: &[u8], app_id: &str, now: Millis) -> StoreResult<Option<ConsumeOutcome>> {
    let row: Option<(String, Option<i64>, i64)> = conn
        .prepare_cached("SELECT app_id, used_at, expires_at FROM magic_links WHERE token_hash = ?1")?
        .query_row([hash], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    Ok(match row {
        None => Some(ConsumeOutcome::Invalid),
        Some((owner, _, _)) if owner != app_id => Some(ConsumeOutcome::Invalid),
        Some((_, Some(_), _)) => Some(ConsumeOutcome::Used),
        Some((_, None, expires_at)) if expires_at <= now => Some(ConsumeOutcome::Expired),
        Some(_) => None,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        let options = SqliteConnectOptions::from_str(&self.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.pool.acquire_timeout)
            .connect_with(options)
            .await?;
        let migrated = MIGRATOR.run(&pool).await;
        pool.close().await;
        migrated?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn create_app(&self, app: &NewApp) -> StoreResult<()> {
        let r = app.record.clone();
        let key_hash = app.key_hash.as_bytes().to_vec();
        let urls = serde_json::to_string(&r.redirect_urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.run_write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO apps (id, name, key_hash, plan, burst, monthly_limit, token_ttl_s, session_ttl_s,
                                   redirect_urls, disabled, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            )?
            .execute(params![
                r.id,
                r.name,
                key_hash,
                r.plan.as_str(),
                i64::from(r.burst),
                r.monthly_limit.map(i64::from),
                r.token_ttl_s,
                r.session_ttl_s,
                urls,
                i64::from(r.disabled),
                r.created_at,
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.run(|conn| {
            let mut statement =
                conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"))?;
            let mut rows = statement.query([])?;
            let mut apps = Vec::new();
            while let Some(row) = rows.next()? {
                apps.push(app_from_row(row)?);
            }
            Ok(apps)
        })
        .await
    }

    async fn app_by_key_hash(&self, key_hash: &SecretHash) -> StoreResult<Option<AppRecord>> {
        let ticket = match self.apps.get(key_hash) {
            Ok(app) => return Ok(Some(app)),
            Err(ticket) => ticket,
        };
        let (key_hash, read_at) = (*key_hash, Instant::now());
        let app = self
            .run(move |conn| {
                let mut statement =
                    conn.prepare_cached(&format!("SELECT {APP_COLUMNS}, key_hash FROM apps WHERE key_hash = ?1"))?;
                let mut rows = statement.query([&key_hash.as_bytes()[..]])?;
                let Some(row) = rows.next()? else { return Ok(None) };
                // The index lookup found it; confirm in constant time all the same.
                let stored: Vec<u8> = row.get("key_hash")?;
                match SecretHash::from_bytes(&stored) {
                    Some(h) if h.ct_eq(&key_hash) => Ok(Some(app_from_row(row)?)),
                    _ => Ok(None),
                }
            })
            .await?;
        if let Some(app) = &app {
            self.apps.put(ticket, &key_hash, app, read_at);
        }
        Ok(app)
    }

    async fn set_app_disabled(&self, app_id: &str, disabled: bool, now: Millis) -> StoreResult<bool> {
        let app_id = app_id.to_owned();
        let changed = self
            .run_write(move |conn| {
                let changed = conn
                    .prepare_cached("UPDATE apps SET disabled = ?1, updated_at = ?2 WHERE id = ?3")?
                    .execute(params![i64::from(disabled), now, app_id])?;
                Ok(changed == 1)
            })
            .await;
        self.apps.clear();
        changed
    }

    async fn rotate_app_key(&self, app_id: &str, key_hash: &SecretHash, now: Millis) -> StoreResult<bool> {
        let app_id = app_id.to_owned();
        let key_hash = key_hash.as_bytes().to_vec();
        let changed = self
            .run_write(move |conn| {
                let changed = conn
                    .prepare_cached("UPDATE apps SET key_hash = ?1, updated_at = ?2 WHERE id = ?3")?
                    .execute(params![key_hash, now, app_id])?;
                Ok(changed == 1)
            })
            .await;
        self.apps.clear();
        changed
    }

    async fn check_send_rate(&self, q: &RateQuery<'_>) -> StoreResult<RateDecision> {
        let app_bucket = format!("app:{}", q.app_id);
        let email_bucket = format!("email:{}:{}", q.app_id, q.email_bucket);
        let (app_id, month) = (q.app_id.to_owned(), q.month.to_owned());
        let (now, app_limit, app_window_ms, email_limit, email_window_ms, monthly_limit) = (
            q.now,
            q.app_limit,
            q.app_window_ms,
            q.email_limit,
            q.email_window_ms,
            q.monthly_limit,
        );
        self.write(move |tx| {
            let (app_count, app) = window_state(tx, &app_bucket, now, app_window_ms, app_limit)?;
            let (email_count, email) = window_state(tx, &email_bucket, now, email_window_ms, email_limit)?;
            if app_count >= app_limit {
                return Ok(RateDecision::AppLimited(app));
            }
            if email_count >= email_limit {
                return Ok(RateDecision::EmailLimited(email));
            }
            if let Some(limit) = monthly_limit {
                let used: Option<i64> = tx
                    .prepare_cached("SELECT links FROM monthly_usage WHERE app_id = ?1 AND month = ?2")?
                    .query_row(params![app_id, month], |row| row.get(0))
                    .optional()?;
                if used.unwrap_or(0) >= i64::from(limit) {
                    return Ok(RateDecision::QuotaExceeded);
                }
            }
            let mut insert = tx.prepare_cached("INSERT INTO rate_hits (bucket, at) VALUES (?1, ?2)")?;
            for bucket in [&app_bucket, &email_bucket] {
                insert.execute(params![bucket, now])?;
            }
            let counted = |mut w: WindowState, count: u32, window_ms: i64| {
                w.remaining = w.limit.saturating_sub(count + 1);
                if count == 0 {
                    w.reset_ms = window_ms;
                }
                w
            };
            Ok(RateDecision::Allowed {
                app: counted(app, app_count, app_window_ms),
                email: counted(email, email_count, email_window_ms),
            })
        })
        .await
    }

    async fn create_link(
        &self,
        link: &NewLink,
        mail: &NewMail,
        month: &str,
        monthly_limit: Option<u32>,
    ) -> StoreResult<CreateLinkOutcome> {
        let (link, mail, month) = (link.clone(), mail.clone(), month.to_owned());
        self.run_write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let counted = tx
                .prepare_cached(
                    "INSERT INTO monthly_usage (app_id, month, links) VALUES (?1, ?2, 1)
                     ON CONFLICT (app_id, month) DO UPDATE SET links = links + 1
                     WHERE ?3 IS NULL OR monthly_usage.links < ?3",
                )?
                .execute(params![link.app_id, month, monthly_limit.map(i64::from)])?;
            // A first link of the month with a limit of 0 must be refused too
            // (dropping `tx` rolls the count back).
            if counted == 0 || monthly_limit == Some(0) {
                return Ok(CreateLinkOutcome::QuotaExceeded);
            }
            tx.prepare_cached(
                "INSERT INTO magic_links (token_hash, app_id, email, redirect_url, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &link.token_hash.as_bytes()[..],
                link.app_id,
                link.email,
                link.redirect_url,
                link.created_at,
                link.expires_at,
            ])?;
            let outbox_id: i64 = tx
                .prepare_cached(
                    "INSERT INTO outbox (app_id, recipient, message_id, subject, text_body, html_body, created_at,
                                         next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
                )?
                .query_row(
                    params![
                        mail.app_id,
                        mail.recipient,
                        mail.message_id,
                        mail.subject,
                        mail.text_body,
                        mail.html_body,
                        mail.created_at,
                    ],
                    |row| row.get(0),
                )?;
            tx.commit()?;
            Ok(CreateLinkOutcome::Created { outbox_id })
        })
        .await
    }

    async fn consume_link(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
        claim: Option<&ConsumeClaim<'_>>,
    ) -> StoreResult<ConsumeOutcome> {
        let hash = token_hash.as_bytes().to_vec();
        let app_id = app_id.to_owned();
        let claim = claim.map(|c| {
            (
                c.query.key.to_owned(),
                c.query.request_hash.to_vec(),
                c.respond.clone(),
                c.refuse.clone(),
            )
        });
        self.write_batched(move |tx| {
            // The one statement that decides who wins: no read-then-write.
            let consumed: Option<(String, String)> = tx
                .prepare_cached(
                    "UPDATE magic_links SET used_at = ?1
                     WHERE token_hash = ?2 AND app_id = ?3 AND used_at IS NULL AND expires_at > ?1
                     RETURNING email, redirect_url",
                )?
                .query_row(params![now, hash, app_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let outcome = match consumed {
                None => refusal(tx, &hash, &app_id, now)?.unwrap_or(ConsumeOutcome::Expired),
                Some((email, redirect_url)) => {
                    let user = tx
                        .prepare_cached(
                            "INSERT INTO users (app_id, email, email_verified_at, last_login_at, created_at)
                             VALUES (?1, ?2, ?3, ?3, ?3)
                             ON CONFLICT (app_id, email) DO UPDATE SET last_login_at = excluded.last_login_at
                             RETURNING id, email, name, email_verified_at, last_login_at",
                        )?
                        .query_row(params![app_id, email, now], |row| {
                            Ok(UserRecord {
                                id: row.get(0)?,
                                email: row.get(1)?,
                                name: row.get(2)?,
                                email_verified_at: row.get(3)?,
                                last_login_at: row.get(4)?,
                            })
                        })?;
                    ConsumeOutcome::Consumed {
                        user,
                        redirect_url,
                        response: None,
                    }
                }
            };
            let Some((key, request_hash, respond, refuse)) = &claim else {
                // A refusal wrote nothing.
                let keep = if matches!(outcome, ConsumeOutcome::Consumed { .. }) {
                    Keep::Commit
                } else {
                    Keep::Discard
                };
                return Ok((outcome, keep));
            };
            let (outcome, response) = match outcome {
                ConsumeOutcome::Consumed { user, redirect_url, .. } => {
                    let response = respond(&user, &redirect_url);
                    let outcome = ConsumeOutcome::Consumed {
                        user,
                        redirect_url,
                        response: Some(response.clone()),
                    };
                    (outcome, response)
                }
                refused => {
                    let response = refuse(&refused);
                    (refused, response)
                }
            };
            // The key is claimed with its response in one statement, under
            // the write lock held since the start: a key with a record
            // already undoes this write's changes.
            if !insert_response(tx, &app_id, key, request_hash, now, &response)? {
                return Ok((ConsumeOutcome::KeyTaken, Keep::Discard));
            }
            Ok((outcome, Keep::Commit))
        })
        .await
    }

    async fn link_refusal(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
    ) -> StoreResult<Option<ConsumeOutcome>> {
        let (hash, app_id) = (token_hash.as_bytes().to_vec(), app_id.to_owned());
        self.run(move |conn| refusal(conn, &hash, &app_id, now)).await
    }

    async fn record_idempotent_response(
        &self,
        q: &IdempotencyQuery<'_>,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        let (app_id, key, request_hash) = (q.app_id.to_owned(), q.key.to_owned(), q.request_hash.to_vec());
        let (now, response) = (q.now, response.clone());
        self.write_batched(move |conn| {
            let inserted = insert_response(conn, &app_id, &key, &request_hash, now, &response)?;
            Ok((inserted, Keep::Commit))
        })
        .await
    }

    async fn claim_idempotency_key(&self, q: &IdempotencyQuery<'_>) -> StoreResult<IdempotencyClaim> {
        let (app_id, key, request_hash) = (q.app_id.to_owned(), q.key.to_owned(), q.request_hash.to_vec());
        let (now, retention_ms, abandon_after_ms) = (q.now, q.retention_ms, q.abandon_after_ms);
        self.run_write(move |conn| {
            // A new key (the common case) is one statement.
            if claim_free_key(conn, &app_id, &key, &request_hash, now)? {
                return Ok(IdempotencyClaim::Claimed);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<(Vec<u8>, Option<i64>, Option<String>, i64)> = tx
                .prepare_cached(
                    "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE app_id = ?1 AND key = ?2",
                )?
                .query_row(params![app_id, key], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            if let Some((stored_hash, status, body, created_at)) = existing {
                let expired = created_at <= now - retention_ms;
                let abandoned = status.is_none() && created_at <= now - abandon_after_ms;
                if !expired && !abandoned {
                    if stored_hash != request_hash {
                        return Ok(IdempotencyClaim::Mismatch);
                    }
                    return Ok(match status {
                        None => IdempotencyClaim::InProgress,
                        Some(status) => IdempotencyClaim::Replay(StoredResponse {
                            status: u16::try_from(status).map_err(|_| StoreError::Corrupt("status".into()))?,
                            body: body.unwrap_or_default(),
                        }),
                    });
                }
                tx.prepare_cached("DELETE FROM idempotency_keys WHERE app_id = ?1 AND key = ?2")?
                    .execute(params![app_id, key])?;
            }
            // Free now, under the write lock this transaction holds.
            claim_free_key(&tx, &app_id, &key, &request_hash, now)?;
            tx.commit()?;
            Ok(IdempotencyClaim::Claimed)
        })
        .await
    }

    async fn complete_idempotency_key(&self, app_id: &str, key: &str, response: &StoredResponse) -> StoreResult<()> {
        let (app_id, key, response) = (app_id.to_owned(), key.to_owned(), response.clone());
        self.run_write(move |conn| store_response(conn, &app_id, &key, &response))
            .await
    }

    async fn release_idempotency_key(&self, app_id: &str, key: &str) -> StoreResult<()> {
        let (app_id, key) = (app_id.to_owned(), key.to_owned());
        self.run_write(move |conn| {
            conn.prepare_cached("DELETE FROM idempotency_keys WHERE app_id = ?1 AND key = ?2 AND status IS NULL")?
                .execute(params![app_id, key])?;
            Ok(())
        })
        .await
    }

    async fn signing_key(&self, candidate: &SigningKeyRecord) -> StoreResult<SigningKeyRecord> {
        let candidate = candidate.clone();
        self.run_write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO signing_keys (slot, kid, private_key, public_key, created_at)
                 VALUES ('current', ?1, ?2, ?3, ?4) ON CONFLICT (slot) DO NOTHING",
            )?
            .execute(params![
                candidate.kid,
                candidate.private_pkcs8,
                candidate.public_key,
                candidate.created_at
            ])?;
            let key = conn
                .prepare_cached(
                    "SELECT kid, private_key, public_key, created_at FROM signing_keys WHERE slot = 'current'",
                )?
                .query_row([], |row| {
                    Ok(SigningKeyRecord {
                        kid: row.get(0)?,
                        private_pkcs8: row.get(1)?,
                        public_key: row.get(2)?,
                        created_at: row.get(3)?,
                    })
                })?;
            Ok(key)
        })
        .await
    }

    async fn claim_outbox(&self, now: Millis, lease_until: Millis, limit: u32) -> StoreResult<Vec<OutboxMail>> {
        self.run_write(move |conn| {
            let mut statement = conn.prepare_cached(
                "UPDATE outbox SET locked_until = ?1, attempts = attempts + 1
                 WHERE id IN (
                     SELECT id FROM outbox
                     WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?2
                       AND (locked_until IS NULL OR locked_until <= ?2)
                     ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING id, recipient, message_id, subject, text_body, html_body, created_at, attempts",
            )?;
            let rows = statement.query_map(params![lease_until, now, i64::from(limit)], |row| {
                Ok(OutboxMail {
                    id: row.get(0)?,
                    recipient: row.get(1)?,
                    message_id: row.get(2)?,
                    subject: row.get(3)?,
                    text_body: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    html_body: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    created_at: row.get(6)?,
                    attempts: row.get(7)?,
                    lease_until,
                })
            })?;
            let mut mails = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            mails.sort_by_key(|m| m.id);
            Ok(mails)
        })
        .await
    }

    async fn outbox_sent(&self, id: i64, now: Millis) -> StoreResult<()> {
        self.run_write(move |conn| {
            conn.prepare_cached(
                "UPDATE outbox SET sent_at = ?1, locked_until = NULL, last_error = NULL, text_body = NULL,
                                   html_body = NULL
                 WHERE id = ?2",
            )?
            .execute(params![now, id])?;
            Ok(())
        })
        .await
    }

    async fn outbox_retry(
        &self,
        id: i64,
        lease_until: Millis,
        next_attempt_at: Millis,
        error: &str,
    ) -> StoreResult<bool> {
        let error = error.to_owned();
        self.run_write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET next_attempt_at = ?1, locked_until = NULL, last_error = ?2
                     WHERE id = ?3 AND locked_until = ?4",
                )?
                .execute(params![next_attempt_at, error, id, lease_until])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn outbox_given_up(&self, id: i64, lease_until: Millis, now: Millis, error: &str) -> StoreResult<bool> {
        let error = error.to_owned();
        self.run_write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET failed_at = ?1, locked_until = NULL, last_error = ?2, text_body = NULL,
                                       html_body = NULL
                     WHERE id = ?3 AND locked_until = ?4",
                )?
                .execute(params![now, error, id, lease_until])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn outbox_release(&self, id: i64, lease_until: Millis) -> StoreResult<bool> {
        self.run_write(move |conn| {
            // Not attempted: the claim's count of the attempt is taken back.
            let changed = conn
                .prepare_cached(
                    "UPDATE outbox SET locked_until = NULL, attempts = attempts - 1
                     WHERE id = ?1 AND locked_until = ?2 AND sent_at IS NULL AND failed_at IS NULL",
                )?
                .execute(params![id, lease_until])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        self.run(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    async fn purge(&self, r: &Retention) -> StoreResult<()> {
        let mut statements = purge_statements(r);
        for (sql, _) in &mut statements {
            if sql.starts_with("DELETE FROM idempotency_keys ") {
                *sql = PURGE_IDEMPOTENCY_KEYS;
            }
        }
        // One statement per operation, so writers of the API wait for the
        // write lock no longer than one DELETE.
        for (sql, cutoff) in statements {
            self.run_write(move |conn| {
                conn.prepare_cached(sql)?.execute([cutoff])?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::domain::AppKey;

    fn app(id: &str) -> NewApp {
        NewApp {
            record: AppRecord::sample(id),
            key_hash: AppKey::generate().hash(),
        }
    }

    /// An idempotency query for `key` at `now`, kept for a second.
    fn query(app_id: &'static str, key: &'static str, now: Millis) -> IdempotencyQuery<'static> {
        IdempotencyQuery {
            app_id,
            key,
            request_hash: &[1; 32],
            now,
            retention_ms: 1_000,
            abandon_after_ms: 100,
        }
    }

    fn refused(body: String) -> StoredResponse {
        StoredResponse { status: 400, body }
    }

    /// A store on a new database file at `path`, with the schema applied.
    async fn migrated_store(path: &std::path::Path) -> SqliteStore {
        let store = SqliteStore::connect(&DatabaseOptions::new(format!("sqlite://{}", path.display())))
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    /// A write that meets another process's write lock must wait for it off
    /// the async worker: on a single-threaded runtime, this test could not
    /// go on to release the lock if the write blocked the thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_locked_database_is_waited_for_off_the_async_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busy.db");
        let store = migrated_store(&path).await;
        store.create_app(&app("app_first")).await.expect("first app");

        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut other = Connection::open(&path).expect("open");
            let tx = other
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("lock");
            locked_tx.send(()).expect("signal");
            release_rx.recv().expect("release");
            tx.commit().expect("commit");
        });
        locked_rx.recv().expect("locked");

        let store = Arc::new(store);
        // A batched write first: it takes the gate, meets the lock and waits
        // on the blocking pool; then a plain one, which waits at the gate.
        let batched = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                let response = refused("{}".into());
                store
                    .record_idempotent_response(&query("app_first", "k", 1), &response)
                    .await
            }
        });
        let write = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.create_app(&app("app_second")).await }
        });
        // Reads do not wait for writers in WAL mode.
        assert_eq!(store.list_apps().await.expect("read").len(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!write.is_finished(), "the write went through a held lock");
        assert!(!batched.is_finished(), "the batched write went through a held lock");
        release_tx.send(()).expect("release");
        assert!(
            batched
                .await
                .expect("join")
                .expect("the batched write waited and succeeded")
        );
        write.await.expect("join").expect("the write waited and succeeded");
        holder.join().expect("holder");
        assert_eq!(store.list_apps().await.expect("read").len(), 2);
        assert_eq!(
            store.pool.waited.load(Ordering::Relaxed),
            1,
            "the write did not meet the lock"
        );
    }

    /// Pool connections do not checkpoint on commit; the background task
    /// moves committed pages into the database file on its own.
    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal.db");
        let store = migrated_store(&path).await;
        let before = std::fs::metadata(&path).expect("database file").len();
        for i in 0..200 {
            store.create_app(&app(&format!("app_{i}"))).await.expect("app");
        }
        let mut grown = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if std::fs::metadata(&path).expect("database file").len() > before {
                grown = true;
                break;
            }
        }
        assert!(grown, "no checkpoint copied the WAL into the database file within 5 s");
        assert_eq!(store.list_apps().await.expect("read").len(), 200);
    }

    /// A burst of writes is checkpointed without waiting for the tick, so the
    /// WAL stays small under heavy writes.
    #[tokio::test]
    async fn many_writes_bring_the_checkpoint_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("volume.db").display());
        // The first tick comes at once, the next one not during this test.
        let store = SqliteStore::connect_checkpointing_every(&DatabaseOptions::new(url), Duration::from_secs(3600))
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let checkpoints = || store.pool.checkpoints.load(Ordering::Relaxed);
        for _ in 0..100 {
            if checkpoints() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let begun = checkpoints();
        assert_eq!(begun, 1, "the first tick's checkpoint");
        for i in 0..CHECKPOINT_AFTER_WRITES {
            store.create_app(&app(&format!("app_{i}"))).await.expect("app");
        }
        for _ in 0..200 {
            if checkpoints() > begun {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            checkpoints() > begun,
            "no checkpoint within 10 s of {CHECKPOINT_AFTER_WRITES} writes"
        );
    }

    /// A database made by the first migration keeps its users and their ids
    /// through the second, which rebuilds the table without AUTOINCREMENT.
    #[tokio::test]
    async fn upgrading_keeps_users_and_their_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upgrade.db");
        let url = format!("sqlite://{}", path.display());
        let first = MIGRATOR.iter().next().expect("a first migration").clone();
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(options).await.expect("pool");
        sqlx::migrate::Migrator::with_migrations(vec![first])
            .run(&pool)
            .await
            .expect("first migration");
        pool.close().await;
        let store = SqliteStore::connect(&DatabaseOptions::new(url)).await.expect("store");
        store.create_app(&app("app_a")).await.expect("app");
        let users = |sql: &'static str| {
            store.run_write(move |conn| {
                conn.execute_batch(sql)?;
                let mut statement = conn.prepare("SELECT id, email FROM users ORDER BY id")?;
                let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        };
        users(
            "INSERT INTO users (id, app_id, email, email_verified_at, last_login_at, created_at)
             VALUES (3, 'app_a', 'a@example.com', 1, 1, 1), (7, 'app_a', 'b@example.com', 2, 2, 2);",
        )
        .await
        .expect("users");

        store.migrate().await.expect("the other migrations");
        let after = users(
            "INSERT INTO users (app_id, email, email_verified_at, last_login_at, created_at)
             VALUES ('app_a', 'c@example.com', 3, 3, 3);",
        )
        .await
        .expect("a new user");
        assert_eq!(
            after,
            [
                (3, "a@example.com".to_owned()),
                (7, "b@example.com".to_owned()),
                (8, "c@example.com".to_owned())
            ]
        );
        let duplicate = users(
            "INSERT INTO users (app_id, email, email_verified_at, last_login_at, created_at)
             VALUES ('app_a', 'c@example.com', 4, 4, 4);",
        )
        .await;
        assert!(duplicate.is_err(), "(app_id, email) is no longer unique");
    }

    /// Without an index on `created_at`, the purge walks idempotency records
    /// in insertion order and stops at the first one still kept: it never
    /// deletes a kept record, even one inserted before an older one.
    #[tokio::test]
    async fn purge_deletes_idempotency_records_in_insertion_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = migrated_store(&dir.path().join("purge.db")).await;
        // created_at in insertion order; c and e come after a clock step back.
        for (key, at) in [("a", 100), ("b", 200), ("c", 150), ("d", 300), ("e", 120)] {
            let response = refused("{}".into());
            assert!(
                store
                    .record_idempotent_response(&query("app_a", key, at), &response)
                    .await
                    .expect("record")
            );
        }
        let kept_after = async |cutoff: i64| {
            let retention = Retention {
                now: cutoff + 1_000,
                rate_hits_ms: 0,
                idempotency_ms: 1_000,
                links_after_expiry_ms: 0,
                outbox_done_ms: 0,
            };
            store.purge(&retention).await.expect("purge");
            store
                .run(|conn| {
                    let mut statement = conn.prepare("SELECT key FROM idempotency_keys ORDER BY rowid")?;
                    let keys = statement.query_map([], |row| row.get::<_, String>(0))?;
                    Ok(keys.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .expect("keys")
        };
        // b (200) is kept: the walk stops there; c and e wait for a later purge.
        assert_eq!(kept_after(160).await, ["b", "c", "d", "e"]);
        assert_eq!(kept_after(250).await, ["d", "e"]);
        assert_eq!(kept_after(300).await, Vec::<String>::new());
    }

    /// Counts the wake-ups of a task.
    struct CountingWaker(AtomicU64);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A batched write with the gate free finishes in the poll that starts
    /// it, and never wakes its own task: a task woken while it runs is
    /// scheduled again, which on a multi-thread runtime wakes a second
    /// worker for nothing on every request.
    #[tokio::test]
    async fn an_uncontended_batched_write_never_wakes_its_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = migrated_store(&dir.path().join("wake.db")).await;
        // The background checkpoint may hold a connection, or the gate for
        // its last pass, until this task yields: spare connections, and the
        // gate taken once, leave the polls below to this test alone.
        for _ in 0..2 {
            store.pool.give_back(store.pool.open().expect("connection"));
        }
        drop(Arc::clone(&store.pool.writer).acquire_owned().await.expect("gate"));
        let counter = Arc::new(CountingWaker(AtomicU64::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&counter));
        let mut context = std::task::Context::from_waker(&waker);
        for i in 0..3 {
            let query = query("app_a", ["k0", "k1", "k0"][i], 1);
            let response = refused(format!("{i}"));
            let mut write = std::pin::pin!(store.record_idempotent_response(&query, &response));
            match write.as_mut().poll(&mut context) {
                std::task::Poll::Ready(recorded) => assert_eq!(recorded.expect("record"), i < 2),
                std::task::Poll::Pending => panic!("write {i} waited with the gate free"),
            }
        }
        assert_eq!(counter.0.load(Ordering::Relaxed), 0, "a write woke its own task");
    }

    /// In a batch, each write keeps or rolls back its own changes; the
    /// results are handed over after the one commit.
    #[tokio::test]
    async fn a_batch_keeps_each_writes_own_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = migrated_store(&dir.path().join("batch.db")).await;
        // keep: Some(true) commit, Some(false) discard, None fail.
        let job = |bucket: &'static str, keep: Option<bool>| {
            let (sender, result) = tokio::sync::oneshot::channel();
            let operation = move |conn: &Connection| {
                conn.execute("INSERT INTO rate_hits (bucket, at) VALUES (?1, 1)", [bucket])?;
                match keep {
                    Some(true) => Ok((bucket, Keep::Commit)),
                    Some(false) => Ok((bucket, Keep::Discard)),
                    None => Err(StoreError::Corrupt(format!("{bucket} failed"))),
                }
            };
            (Box::new(Pending { operation, sender }) as Job, result)
        };
        let (jobs, results): (Vec<_>, Vec<_>) = [("a", Some(true)), ("b", Some(false)), ("c", None), ("d", Some(true))]
            .into_iter()
            .map(|(bucket, keep)| job(bucket, keep))
            .unzip();
        let conn = store.pool.take().expect("connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        run_jobs(&conn, jobs);
        assert!(conn.is_autocommit(), "the batch left its transaction open");
        store.pool.give_back(conn);
        let mut delivered = Vec::new();
        for result in results {
            delivered.push(result.await.expect("a result").map_err(|e| e.to_string()));
        }
        assert_eq!(
            delivered,
            [Ok("a"), Ok("b"), Err("corrupt row: c failed".to_owned()), Ok("d")]
        );
        let kept = store
            .run(|conn| {
                let mut statement = conn.prepare("SELECT bucket FROM rate_hits ORDER BY bucket")?;
                let buckets = statement.query_map([], |row| row.get::<_, String>(0))?;
                Ok(buckets.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .expect("buckets");
        assert_eq!(kept, ["a", "d"]);
    }

    /// A batch that cannot get a connection gives each of its writes the
    /// pool's timeout, as a write outside a batch gets it.
    #[tokio::test]
    async fn a_batch_without_a_connection_times_out_like_any_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = DatabaseOptions::new(format!("sqlite://{}", dir.path().join("busy.db").display()));
        options.max_connections = 1;
        options.acquire_timeout = Duration::from_millis(100);
        let store = SqliteStore::connect(&options).await.expect("store");
        store.migrate().await.expect("migrate");
        let held = Arc::clone(&store.pool.permits)
            .acquire_owned()
            .await
            .expect("the one connection");
        let response = refused("{}".into());
        let outcome = store
            .record_idempotent_response(&query("app_a", "k", 1), &response)
            .await;
        assert!(matches!(outcome, Err(StoreError::PoolTimedOut)), "{outcome:?}");
        drop(held);
        assert!(
            store
                .record_idempotent_response(&query("app_a", "k", 1), &response)
                .await
                .expect("a connection is free again"),
            "the timed-out write was stored"
        );
    }

    /// Writes that queue while another holds the gate commit together when
    /// it lets go: one transaction for up to `MAX_BATCH` of them, each with
    /// its own result; the rest in the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_at_the_gate_commit_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(migrated_store(&dir.path().join("group.db")).await);
        let held = Arc::clone(&store.pool.writer).acquire_owned().await.expect("gate");
        let writes: Vec<_> = (0..MAX_BATCH + 8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    // Writes share each key: one records, the others find it taken.
                    let query = query("app_a", ["k0", "k1", "k2", "k3"][i % 4], 1);
                    let response = refused(format!("{i}"));
                    store
                        .record_idempotent_response(&query, &response)
                        .await
                        .expect("record")
                })
            })
            .collect();
        for _ in 0..500 {
            if store.pool.queue.lock().expect("queue").len() == MAX_BATCH + 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.pool.queue.lock().expect("queue").len(),
            MAX_BATCH + 8,
            "the writes did not queue"
        );
        drop(held);
        let mut recorded = 0;
        for write in writes {
            recorded += usize::from(write.await.expect("write"));
        }
        assert_eq!(recorded, 4, "each key was recorded once");
        // A full batch, then the rest.
        assert_eq!(store.pool.largest_batch.load(Ordering::Relaxed), MAX_BATCH as u64);
        assert!(store.pool.queue.lock().expect("queue").is_empty());
    }

    /// The checkpoint sequence number in a WAL file's header, which SQLite
    /// increments each time it starts writing the WAL from its beginning.
    fn wal_restarts(path: &std::path::Path) -> Option<u32> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut header = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open(wal).ok()?, &mut header).ok()?;
        Some(u32::from_be_bytes([header[12], header[13], header[14], header[15]]))
    }

    /// Writes that never pause still let the WAL start over: without that it
    /// grows for as long as the server runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("restart.db");
        let store = Arc::new(migrated_store(&path).await);
        store.create_app(&app("app_first")).await.expect("app");
        let first = wal_restarts(&path).expect("a WAL header");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        store.create_app(&app(&format!("app_{w}_{i}"))).await.expect("app");
                        i += 1;
                        // A write that meets no wait never yields; let the
                        // runtime's timers run.
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut restarted = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if wal_restarts(&path).is_some_and(|now| now != first) {
                restarted = true;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.expect("writer");
        }
        assert!(restarted, "the WAL did not start over within 5 s of steady writes");
    }

    /// Concurrent writes of one process take turns at the gate: none meets
    /// SQLite's lock held by another of them, so none sleeps in the busy
    /// handler or moves to the blocking pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_of_one_process_never_wait_on_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(migrated_store(&dir.path().join("gate.db")).await);
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..25 {
                        store.create_app(&app(&format!("app_{w}_{i}"))).await.expect("app");
                        // Reads run beside the writes, without the gate.
                        store.list_apps().await.expect("read");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        assert_eq!(store.list_apps().await.expect("read").len(), 400);
        assert_eq!(
            store.pool.waited.load(Ordering::Relaxed),
            0,
            "a write met another's lock"
        );
    }

    #[tokio::test]
    async fn an_in_memory_url_is_refused() {
        let error = SqliteStore::connect(&DatabaseOptions::new("sqlite::memory:"))
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("in-memory"), "{error}");
    }
}
