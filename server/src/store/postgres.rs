//! PostgreSQL store: for several replicas behind a load balancer.
//!
//! Every replica runs the same statements against one database, so nothing
//! here may rely on process memory. What must be atomic is:
//! - a single statement that decides (token consumption: `UPDATE … WHERE
//!   used_at IS NULL … RETURNING`; the monthly quota: `INSERT … ON CONFLICT DO
//!   UPDATE … WHERE links < limit`; idempotency claims and the signing key:
//!   `INSERT … ON CONFLICT`; outbox claims: `FOR UPDATE SKIP LOCKED` plus a lease),
//! - or a transaction holding a transaction-scoped advisory lock (the
//!   rate-limit windows, whose count-then-insert would otherwise lose updates
//!   under READ COMMITTED).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::app_cache::AppCache;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How often an idempotency claim is retried when another request replaces
/// or releases the same key between our statements.
const CLAIM_ATTEMPTS: usize = 4;

/// A pooled connection idle for this long is pinged before it is handed out
/// (a dropped one is replaced); one used more recently is handed out as is.
/// sqlx pings on every acquire by default, a round trip that doubled the
/// cost of a one-statement operation.
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

fn ping_if_idle(
    conn: &mut PgConnection,
    meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for >= PING_IF_IDLE_FOR {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// Claims the query's key (a record in flight) if it has no record; false if it has one.
async fn claim_free_key<'e>(executor: impl sqlx::PgExecutor<'e>, q: &IdempotencyQuery<'_>) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (app_id, key) DO NOTHING",
    )
    .bind(q.app_id)
    .bind(q.key)
    .bind(&q.request_hash[..])
    .bind(q.now)
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Stores the finished response of the request that holds `key`.
async fn store_response<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    app_id: &str,
    key: &str,
    response: &StoredResponse,
) -> StoreResult<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE app_id = $3 AND key = $4")
        .bind(i32::from(response.status))
        .bind(&response.body)
        .bind(app_id)
        .bind(key)
        .execute(executor)
        .await?;
    Ok(())
}

pub struct PostgresStore {
    pool: PgPool,
    apps: AppCache,
}

impl PostgresStore {
    /// Connects to the database at a `postgres://` URL (which must exist).
    pub async fn connect(options: &DatabaseOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(&options.url)?.application_name("magicauth-server");
        // The pool keeps retrying a refused connection (a database still
        // starting) until the acquire timeout; other errors end it at once.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(ping_if_idle)
            .connect_with(connect.clone())
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            // "Timed out" alone does not say why: one more attempt does.
            Err(sqlx::Error::PoolTimedOut) => {
                let attempt = tokio::time::timeout(options.acquire_timeout, PgConnection::connect_with(&connect)).await;
                return Err(StoreError::Database(match attempt {
                    Ok(Err(reason)) => reason,
                    _ => sqlx::Error::PoolTimedOut,
                }));
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Self {
            pool,
            apps: AppCache::new(),
        })
    }
}

const APP_COLUMNS: &str =
    "id, name, plan, burst, monthly_limit, token_ttl_s, session_ttl_s, redirect_urls, disabled, created_at";

fn app_from_row(row: &PgRow) -> StoreResult<AppRecord> {
    let plan: String = row.try_get("plan")?;
    let urls: String = row.try_get("redirect_urls")?;
    Ok(AppRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        plan: Plan::parse(&plan).ok_or_else(|| StoreError::Corrupt(format!("plan {plan:?}")))?,
        burst: u32::try_from(row.try_get::<i64, _>("burst")?).map_err(|_| StoreError::Corrupt("burst".into()))?,
        monthly_limit: row
            .try_get::<Option<i64>, _>("monthly_limit")?
            .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt("monthly_limit".into())))
            .transpose()?,
        token_ttl_s: row.try_get("token_ttl_s")?,
        session_ttl_s: row.try_get("session_ttl_s")?,
        redirect_urls: serde_json::from_str(&urls).map_err(|e| StoreError::Corrupt(format!("redirect_urls: {e}")))?,
        disabled: row.try_get("disabled")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Counts a bucket's hits inside the window and the time its oldest one leaves.
async fn window_state(
    tx: &mut Transaction<'static, Postgres>,
    bucket: &str,
    now: Millis,
    window_ms: i64,
    limit: u32,
) -> StoreResult<(u32, WindowState)> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_hits WHERE bucket = $1 AND at > $2")
        .bind(bucket)
        .bind(now - window_ms)
        .fetch_one(&mut **tx)
        .await?;
    let count = u32::try_from(row.try_get::<i64, _>("n")?).unwrap_or(u32::MAX);
    let oldest: Option<i64> = row.try_get("oldest")?;
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

fn outbox_mail_from_row(row: &PgRow, lease_until: Millis) -> StoreResult<OutboxMail> {
    Ok(OutboxMail {
        id: row.try_get("id")?,
        recipient: row.try_get("recipient")?,
        message_id: row.try_get("message_id")?,
        subject: row.try_get("subject")?,
        text_body: row.try_get::<Option<String>, _>("text_body")?.unwrap_or_default(),
        html_body: row.try_get::<Option<String>, _>("html_body")?.unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        lease_until,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// sqlx's migrator holds a session advisory lock (keyed by the database
    /// name) while it applies migrations, so replicas starting together run
    /// them one after the other; the later ones find nothing left to do.
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_app(&self, app: &NewApp) -> StoreResult<()> {
        let r = &app.record;
        let urls = serde_json::to_string(&r.redirect_urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO apps (id, name, key_hash, plan, burst, monthly_limit, token_ttl_s, session_ttl_s,
                               redirect_urls, disabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(&r.id)
        .bind(&r.name)
        .bind(&app.key_hash.as_bytes()[..])
        .bind(r.plan.as_str())
        .bind(i64::from(r.burst))
        .bind(r.monthly_limit.map(i64::from))
        .bind(r.token_ttl_s)
        .bind(r.session_ttl_s)
        .bind(urls)
        .bind(r.disabled)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_from_row).collect()
    }

    async fn app_by_key_hash(&self, key_hash: &SecretHash) -> StoreResult<Option<AppRecord>> {
        let ticket = match self.apps.get(key_hash) {
            Ok(app) => return Ok(Some(app)),
            Err(ticket) => ticket,
        };
        let read_at = Instant::now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS}, key_hash FROM apps WHERE key_hash = $1"
        )))
        .bind(&key_hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        // The index lookup found it; confirm in constant time all the same.
        let stored: Vec<u8> = row.try_get("key_hash")?;
        match SecretHash::from_bytes(&stored) {
            Some(h) if h.ct_eq(key_hash) => {
                let app = app_from_row(&row)?;
                self.apps.put(ticket, key_hash, &app, read_at);
                Ok(Some(app))
            }
            _ => Ok(None),
        }
    }

    async fn set_app_disabled(&self, app_id: &str, disabled: bool, now: Millis) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE apps SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(now)
            .bind(app_id)
            .execute(&self.pool)
            .await;
        self.apps.clear();
        let done = done?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_app_key(&self, app_id: &str, key_hash: &SecretHash, now: Millis) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE apps SET key_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(&key_hash.as_bytes()[..])
            .bind(now)
            .bind(app_id)
            .execute(&self.pool)
            .await;
        self.apps.clear();
        let done = done?;
        Ok(done.rows_affected() == 1)
    }

    async fn check_send_rate(&self, q: &RateQuery<'_>) -> StoreResult<RateDecision> {
        let app_bucket = format!("app:{}", q.app_id);
        let email_bucket = format!("email:{}:{}", q.app_id, q.email_bucket);
        let mut tx = self.pool.begin().await?;
        // Under READ COMMITTED two replicas could both count N-1 hits and both
        // insert the Nth. One lock per app serialises its checks until commit;
        // the email buckets belong to the app, so they are covered too, and
        // there is only ever one lock per transaction: no deadlocks. Each
        // statement after the lock sees every hit committed before it.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("magicauth.rate:{}", q.app_id))
            .execute(&mut *tx)
            .await?;
        let (app_count, app) = window_state(&mut tx, &app_bucket, q.now, q.app_window_ms, q.app_limit).await?;
        let (email_count, email) =
            window_state(&mut tx, &email_bucket, q.now, q.email_window_ms, q.email_limit).await?;
        let refused = if app_count >= q.app_limit {
            Some(RateDecision::AppLimited(app))
        } else if email_count >= q.email_limit {
            Some(RateDecision::EmailLimited(email))
        } else if let Some(limit) = q.monthly_limit {
            let used: Option<i64> =
                sqlx::query_scalar("SELECT links FROM monthly_usage WHERE app_id = $1 AND month = $2")
                    .bind(q.app_id)
                    .bind(q.month)
                    .fetch_optional(&mut *tx)
                    .await?;
            (used.unwrap_or(0) >= i64::from(limit)).then_some(RateDecision::QuotaExceeded)
        } else {
            None
        };
        if let Some(decision) = refused {
            // Release the lock now rather than when the pool gets round to it.
            tx.rollback().await?;
            return Ok(decision);
        }
        sqlx::query("INSERT INTO rate_hits (bucket, at) VALUES ($1, $3), ($2, $3)")
            .bind(&app_bucket)
            .bind(&email_bucket)
            .bind(q.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let counted = |mut w: WindowState, count: u32, window_ms: i64| {
            w.remaining = w.limit.saturating_sub(count + 1);
            if count == 0 {
                w.reset_ms = window_ms;
            }
            w
        };
        Ok(RateDecision::Allowed {
            app: counted(app, app_count, q.app_window_ms),
            email: counted(email, email_count, q.email_window_ms),
        })
    }

    async fn create_link(
        &self,
        link: &NewLink,
        mail: &NewMail,
        month: &str,
        monthly_limit: Option<u32>,
    ) -> StoreResult<CreateLinkOutcome> {
        // A first link of the month with a limit of 0 must be refused too.
        if monthly_limit == Some(0) {
            return Ok(CreateLinkOutcome::QuotaExceeded);
        }
        let mut tx = self.pool.begin().await?;
        // The conflicting row is locked and the WHERE re-checked on its newest
        // version, so concurrent links can never count past the limit.
        let counted = sqlx::query(
            "INSERT INTO monthly_usage (app_id, month, links) VALUES ($1, $2, 1)
             ON CONFLICT (app_id, month) DO UPDATE SET links = monthly_usage.links + 1
             WHERE $3::BIGINT IS NULL OR monthly_usage.links < $3::BIGINT",
        )
        .bind(&link.app_id)
        .bind(month)
        .bind(monthly_limit.map(i64::from))
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(CreateLinkOutcome::QuotaExceeded);
        }
        sqlx::query(
            "INSERT INTO magic_links (token_hash, app_id, email, redirect_url, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.token_hash.as_bytes()[..])
        .bind(&link.app_id)
        .bind(&link.email)
        .bind(&link.redirect_url)
        .bind(link.created_at)
        .bind(link.expires_at)
        .execute(&mut *tx)
        .await?;
        let outbox_id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (app_id, recipient, message_id, subject, text_body, html_body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(&mail.app_id)
        .bind(&mail.recipient)
        .bind(&mail.message_id)
        .bind(&mail.subject)
        .bind(&mail.text_body)
        .bind(&mail.html_body)
        .bind(mail.created_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CreateLinkOutcome::Created { outbox_id })
    }

    async fn consume_link(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
        claim: Option<&ConsumeClaim<'_>>,
    ) -> StoreResult<ConsumeOutcome> {
        let hash = &token_hash.as_bytes()[..];
        // Most refusals are decided by one read, and stored with one write
        // (which finds the key taken, or not), instead of a transaction of
        // four round trips.
        if let Some(claim) = claim
            && let Some(refused) = self.link_refusal(token_hash, app_id, now).await?
        {
            let recorded = self
                .record_idempotent_response(claim.query, &(claim.refuse)(&refused))
                .await?;
            return Ok(if recorded { refused } else { ConsumeOutcome::KeyTaken });
        }
        let mut tx = self.pool.begin().await?;
        if let Some(ConsumeClaim { query: q, .. }) = claim {
            // A concurrent claim of the same key waits for our commit, then
            // finds the row and does nothing.
            if !claim_free_key(&mut *tx, q).await? {
                tx.rollback().await?;
                return Ok(ConsumeOutcome::KeyTaken);
            }
        }
        // The one statement that decides who wins: a concurrent verify waits on
        // the row lock, then re-checks `used_at IS NULL` on the committed row
        // and matches nothing.
        let consumed = sqlx::query(
            "UPDATE magic_links SET used_at = $1
             WHERE token_hash = $2 AND app_id = $3 AND used_at IS NULL AND expires_at > $1
             RETURNING email, redirect_url",
        )
        .bind(now)
        .bind(hash)
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(consumed) = consumed else {
            let row = sqlx::query("SELECT app_id, used_at FROM magic_links WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?;
            let refused = match row {
                None => ConsumeOutcome::Invalid,
                Some(row) if row.try_get::<String, _>("app_id")? != app_id => ConsumeOutcome::Invalid,
                Some(row) if row.try_get::<Option<i64>, _>("used_at")?.is_some() => ConsumeOutcome::Used,
                Some(_) => ConsumeOutcome::Expired,
            };
            // Used or expired since the read above: the claim keeps the refusal.
            match claim {
                Some(ConsumeClaim { query: q, refuse, .. }) => {
                    store_response(&mut *tx, q.app_id, q.key, &refuse(&refused)).await?;
                    tx.commit().await?;
                }
                None => tx.rollback().await?,
            }
            return Ok(refused);
        };
        let email: String = consumed.try_get("email")?;
        let redirect_url: String = consumed.try_get("redirect_url")?;
        let user = sqlx::query(
            "INSERT INTO users (app_id, email, email_verified_at, last_login_at, created_at)
             VALUES ($1, $2, $3, $3, $3)
             ON CONFLICT (app_id, email) DO UPDATE SET last_login_at = excluded.last_login_at
             RETURNING id, email, name, email_verified_at, last_login_at",
        )
        .bind(app_id)
        .bind(&email)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let user = UserRecord {
            id: user.try_get("id")?,
            email: user.try_get("email")?,
            name: user.try_get("name")?,
            email_verified_at: user.try_get("email_verified_at")?,
            last_login_at: user.try_get("last_login_at")?,
        };
        let response = match claim {
            Some(ConsumeClaim { query: q, respond, .. }) => {
                let response = respond(&user, &redirect_url);
                store_response(&mut *tx, q.app_id, q.key, &response).await?;
                Some(response)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(ConsumeOutcome::Consumed {
            user,
            redirect_url,
            response,
        })
    }

    async fn link_refusal(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
    ) -> StoreResult<Option<ConsumeOutcome>> {
        let row = sqlx::query("SELECT app_id, used_at, expires_at FROM magic_links WHERE token_hash = $1")
            .bind(&token_hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => Some(ConsumeOutcome::Invalid),
            Some(row) if row.try_get::<String, _>("app_id")? != app_id => Some(ConsumeOutcome::Invalid),
            Some(row) if row.try_get::<Option<i64>, _>("used_at")?.is_some() => Some(ConsumeOutcome::Used),
            Some(row) if row.try_get::<i64, _>("expires_at")? <= now => Some(ConsumeOutcome::Expired),
            Some(_) => None,
        })
    }

    async fn record_idempotent_response(
        &self,
        q: &IdempotencyQuery<'_>,
        response: &StoredResponse,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (app_id, key, request_hash, created_at, status, body)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (app_id, key) DO NOTHING",
        )
        .bind(q.app_id)
        .bind(q.key)
        .bind(&q.request_hash[..])
        .bind(q.now)
        .bind(i32::from(response.status))
        .bind(&response.body)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn claim_idempotency_key(&self, q: &IdempotencyQuery<'_>) -> StoreResult<IdempotencyClaim> {
        // Each step is one atomic statement: the insert claims a free key, and
        // a stale record is taken over by a compare-and-swap on what we read,
        // so of two requests racing for one key exactly one gets `Claimed`.
        for _ in 0..CLAIM_ATTEMPTS {
            if claim_free_key(&self.pool, q).await? {
                return Ok(IdempotencyClaim::Claimed);
            }
            let existing = sqlx::query(
                "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE app_id = $1 AND key = $2",
            )
            .bind(q.app_id)
            .bind(q.key)
            .fetch_optional(&self.pool)
            .await?;
            // Released or purged in between: try the insert again.
            let Some(row) = existing else { continue };
            let created_at: i64 = row.try_get("created_at")?;
            let status: Option<i32> = row.try_get("status")?;
            let expired = created_at <= q.now - q.retention_ms;
            let abandoned = status.is_none() && created_at <= q.now - q.abandon_after_ms;
            if !expired && !abandoned {
                let stored_hash: Vec<u8> = row.try_get("request_hash")?;
                if stored_hash.as_slice() != q.request_hash.as_slice() {
                    return Ok(IdempotencyClaim::Mismatch);
                }
                return Ok(match status {
                    None => IdempotencyClaim::InProgress,
                    Some(status) => IdempotencyClaim::Replay(StoredResponse {
                        status: u16::try_from(status).map_err(|_| StoreError::Corrupt("status".into()))?,
                        body: row.try_get::<Option<String>, _>("body")?.unwrap_or_default(),
                    }),
                });
            }
            let taken_over = sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $3, status = NULL, body = NULL, created_at = $4
                 WHERE app_id = $1 AND key = $2 AND created_at = $5 AND status IS NOT DISTINCT FROM $6",
            )
            .bind(q.app_id)
            .bind(q.key)
            .bind(&q.request_hash[..])
            .bind(q.now)
            .bind(created_at)
            .bind(status)
            .execute(&self.pool)
            .await?;
            if taken_over.rows_affected() == 1 {
                return Ok(IdempotencyClaim::Claimed);
            }
        }
        // Others keep changing this key: let the caller wait and ask again.
        Ok(IdempotencyClaim::InProgress)
    }

    async fn complete_idempotency_key(&self, app_id: &str, key: &str, response: &StoredResponse) -> StoreResult<()> {
        store_response(&self.pool, app_id, key, response).await
    }

    async fn release_idempotency_key(&self, app_id: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE app_id = $1 AND key = $2 AND status IS NULL")
            .bind(app_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_key(&self, candidate: &SigningKeyRecord) -> StoreResult<SigningKeyRecord> {
        // A concurrent insert of the same slot waits for the first to commit,
        // then does nothing: every replica reads back the one stored key.
        sqlx::query(
            "INSERT INTO signing_keys (slot, kid, private_key, public_key, created_at)
             VALUES ('current', $1, $2, $3, $4) ON CONFLICT (slot) DO NOTHING",
        )
        .bind(&candidate.kid)
        .bind(&candidate.private_pkcs8)
        .bind(&candidate.public_key)
        .bind(candidate.created_at)
        .execute(&self.pool)
        .await?;
        let row =
            sqlx::query("SELECT kid, private_key, public_key, created_at FROM signing_keys WHERE slot = 'current'")
                .fetch_one(&self.pool)
                .await?;
        Ok(SigningKeyRecord {
            kid: row.try_get("kid")?,
            private_pkcs8: row.try_get("private_key")?,
            public_key: row.try_get("public_key")?,
            created_at: row.try_get("created_at")?,
        })
    }

    async fn claim_outbox(&self, now: Millis, lease_until: Millis, limit: u32) -> StoreResult<Vec<OutboxMail>> {
        // SKIP LOCKED: replicas claiming at the same moment take disjoint rows
        // instead of queueing behind each other. The outer WHERE repeats the
        // lease condition so that a row leased by a transaction that committed
        // after our snapshot is re-checked on its new version and skipped.
        // A replica that dies mid-delivery leaves its lease behind: the rows
        // are claimable again once `locked_until` has passed. The CTE is
        // MATERIALIZED so its LIMIT applies once: as an `IN (subquery)` the
        // planner may run it again per row (a semi-join) and claim more.
        let rows = sqlx::query(
            "WITH due AS MATERIALIZED (
                 SELECT id FROM outbox
                 WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2
                   AND (locked_until IS NULL OR locked_until <= $2)
                 ORDER BY next_attempt_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             UPDATE outbox SET locked_until = $1, attempts = attempts + 1
             FROM due
             WHERE outbox.id = due.id
               AND sent_at IS NULL AND failed_at IS NULL AND (locked_until IS NULL OR locked_until <= $2)
             RETURNING outbox.id, recipient, message_id, subject, text_body, html_body, created_at, attempts",
        )
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut mails = rows
            .iter()
            .map(|row| outbox_mail_from_row(row, lease_until))
            .collect::<StoreResult<Vec<_>>>()?;
        mails.sort_by_key(|m| m.id);
        Ok(mails)
    }

    async fn outbox_sent(&self, id: i64, now: Millis) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET sent_at = $1, locked_until = NULL, last_error = NULL, text_body = NULL, html_body = NULL
             WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_retry(
        &self,
        id: i64,
        lease_until: Millis,
        next_attempt_at: Millis,
        error: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, locked_until = NULL, last_error = $2
             WHERE id = $3 AND locked_until = $4",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn outbox_given_up(&self, id: i64, lease_until: Millis, now: Millis, error: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET failed_at = $1, locked_until = NULL, last_error = $2, text_body = NULL, html_body = NULL
             WHERE id = $3 AND locked_until = $4",
        )
        .bind(now)
        .bind(error)
        .bind(id)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn outbox_release(&self, id: i64, lease_until: Millis) -> StoreResult<bool> {
        // Not attempted: the claim's count of the attempt is taken back.
        let done = sqlx::query(
            "UPDATE outbox SET locked_until = NULL, attempts = attempts - 1
             WHERE id = $1 AND locked_until = $2 AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(id)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn purge(&self, r: &Retention) -> StoreResult<()> {
        // Every replica runs this; the deletes are idempotent.
        let statements = purge_statements(r);
        for (sql, cutoff) in statements {
            sqlx::query(sql).bind(cutoff).execute(&self.pool).await?;
        }
        Ok(())
    }
}
