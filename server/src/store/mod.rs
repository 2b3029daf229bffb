//! Persistence behind one trait, with one implementation per database.
//!
//! Everything that several server replicas must agree on (token consumption,
//! rate-limit counters, idempotency records, apps, the signing key and the
//! mail outbox) lives here, and every operation that must be atomic is one
//! method, so each backend can make it atomic in its own way.

mod app_cache;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::SecretHash;

pub use app_cache::APP_CACHE_TTL;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Errors of the storage layer. Details are for logs, never for API clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The inner errors are in the message and deliberately not a `source`
    // too, so that `{:#}` chains do not print them twice.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("database error: timed out waiting for a pooled connection")]
    PoolTimedOut,
    #[error("migration error: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("unsupported database URL (expected sqlite://…, postgres://… or postgresql://…): {0}")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Billing plan of an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Free plan: sponsored emails.
    Free,
    /// Custom plan: no sponsor footer.
    Custom,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Plan::Free),
            "custom" => Some(Plan::Custom),
            _ => None,
        }
    }
}

/// An app as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub burst: u32,
    pub monthly_limit: Option<u32>,
    pub token_ttl_s: i64,
    pub session_ttl_s: i64,
    pub redirect_urls: Vec<String>,
    pub disabled: bool,
    pub created_at: Millis,
}

impl AppRecord {
    /// A free-plan app with one redirect URL, as tests and benchmarks make it.
    #[doc(hidden)]
    pub fn sample(id: &str) -> Self {
        Self {
            id: id.into(),
            name: id.into(),
            plan: Plan::Free,
            burst: 100,
            monthly_limit: None,
            token_ttl_s: 900,
            session_ttl_s: 3600,
            redirect_urls: vec!["https://app.example.com/cb".into()],
            disabled: false,
            created_at: 0,
        }
    }
}

/// A new app and the hash of its key.
#[derive(Clone, Debug)]
pub struct NewApp {
    pub record: AppRecord,
    pub key_hash: SecretHash,
}

/// What the send-link rate check asks for.
#[derive(Clone, Debug)]
pub struct RateQuery<'a> {
    pub app_id: &'a str,
    /// Hash of the normalised email address, so the table holds no addresses.
    pub email_bucket: &'a str,
    pub now: Millis,
    pub app_limit: u32,
    pub app_window_ms: i64,
    pub email_limit: u32,
    pub email_window_ms: i64,
    pub month: &'a str,
    pub monthly_limit: Option<u32>,
}

/// State of one sliding-window limit after a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    pub limit: u32,
    /// Requests left in the window, after counting this one if it was allowed.
    pub remaining: u32,
    /// Milliseconds until the oldest counted request leaves the window.
    pub reset_ms: i64,
}

/// Outcome of the send-link rate check. Only an `Allowed` request is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allowed { app: WindowState, email: WindowState },
    AppLimited(WindowState),
    EmailLimited(WindowState),
    QuotaExceeded,
}

/// A magic link to store.
#[derive(Clone, Debug)]
pub struct NewLink {
    pub token_hash: SecretHash,
    pub app_id: String,
    pub email: String,
    pub redirect_url: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// An email to queue in the outbox.
#[derive(Clone)]
pub struct NewMail {
    pub app_id: String,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub created_at: Millis,
}

impl std::fmt::Debug for NewMail {
    // The bodies carry the magic link: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMail")
            .field("app_id", &self.app_id)
            .field("recipient", &self.recipient)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// Result of storing a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateLinkOutcome {
    Created {
        outbox_id: i64,
    },
    /// The monthly quota was used up by a concurrent request.
    QuotaExceeded,
}

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub email_verified_at: Millis,
    pub last_login_at: Millis,
}

/// Result of consuming a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    Consumed {
        user: UserRecord,
        redirect_url: String,
        /// With a claim: the response stored under its key, in the same
        /// transaction as the consumption.
        response: Option<StoredResponse>,
    },
    /// Unknown token, or issued for another app (which then stays unused).
    Invalid,
    Used,
    Expired,
    /// The Idempotency-Key to claim with the consumption already has a
    /// record: nothing was done.
    KeyTaken,
}

/// Builds the response of a verification from the consumed link's user and
/// redirect URL.
pub type Respond = std::sync::Arc<dyn Fn(&UserRecord, &str) -> StoredResponse + Send + Sync>;

/// Builds the response of a final refusal (`Invalid`, `Used` or `Expired`).
pub type Refuse = std::sync::Arc<dyn Fn(&ConsumeOutcome) -> StoredResponse + Send + Sync>;

/// An Idempotency-Key to claim with a token's consumption, and how to build
/// the response stored under it: the claim, the consumption and the finished
/// response are written in one transaction, so a retry after a crash replays
/// the success instead of finding the token used. A refusal is final (a token
/// never becomes consumable again), so it is stored under the key too.
pub struct ConsumeClaim<'a> {
    pub query: &'a IdempotencyQuery<'a>,
    pub respond: Respond,
    pub refuse: Refuse,
}

/// A stored idempotent response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// Result of claiming an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is ours: run the request, then `complete` or `release` it.
    Claimed,
    /// A finished request with the same key and body: replay its response.
    Replay(StoredResponse),
    /// Same key, different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

#[derive(Clone, Debug)]
pub struct IdempotencyQuery<'a> {
    pub app_id: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8; 32],
    pub now: Millis,
    /// Records older than this are forgotten.
    pub retention_ms: i64,
    /// An in-flight claim older than this is considered abandoned (crashed replica).
    pub abandon_after_ms: i64,
}

/// The Ed25519 signing key shared by every replica.
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Millis,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An outbox row claimed for delivery.
#[derive(Clone)]
pub struct OutboxMail {
    pub id: i64,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub created_at: Millis,
    /// Attempts including this one.
    pub attempts: i64,
    /// The lease this claim holds: the row is this worker's until then, and
    /// `locked_until = lease_until` tells that no other worker has claimed it since.
    pub lease_until: Millis,
}

impl std::fmt::Debug for OutboxMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMail")
            .field("id", &self.id)
            .field("message_id", &self.message_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Retention settings for the periodic clean-up.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub now: Millis,
    pub rate_hits_ms: i64,
    pub idempotency_ms: i64,
    pub links_after_expiry_ms: i64,
    pub outbox_done_ms: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Name of the backend, for logs.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap liveness query for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_app(&self, app: &NewApp) -> StoreResult<()>;
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>>;
    /// The app of a key. An app found is kept for up to `APP_CACHE_TTL`, so a
    /// change made by another process (an operator's `apps` command) reaches
    /// this one within that time; changes made through this store, at once.
    async fn app_by_key_hash(&self, key_hash: &SecretHash) -> StoreResult<Option<AppRecord>>;
    /// Returns false when no app has this id.
    async fn set_app_disabled(&self, app_id: &str, disabled: bool, now: Millis) -> StoreResult<bool>;
    /// Replaces the key hash: the old key stops working at once through this
    /// store, within `APP_CACHE_TTL` in other processes. False when no such app.
    async fn rotate_app_key(&self, app_id: &str, key_hash: &SecretHash, now: Millis) -> StoreResult<bool>;

    /// Checks the per-app and per-email windows and the monthly quota, and
    /// counts the request in both windows if it is allowed, atomically.
    async fn check_send_rate(&self, query: &RateQuery<'_>) -> StoreResult<RateDecision>;

    /// Stores the link and queues its email in one transaction, counting it
    /// against the month (refused if that would exceed `monthly_limit`).
    async fn create_link(
        &self,
        link: &NewLink,
        mail: &NewMail,
        month: &str,
        monthly_limit: Option<u32>,
    ) -> StoreResult<CreateLinkOutcome>;

    /// Marks the token used (once, atomically) and records the login.
    ///
    /// With `claim`, the Idempotency-Key is claimed (as
    /// `claim_idempotency_key` does for a new key) and given the outcome's
    /// response, the success's or the refusal's, in the same transaction;
    /// `KeyTaken`, with nothing done, when the key has a record already.
    /// Each backend orders this its own way: SQLite in one write transaction,
    /// PostgreSQL by reading first, so that a refusal costs it two round trips.
    ///
    /// Without a claim, SQLite takes the write lock even for a token it
    /// refuses: callers ask `link_refusal` first, which decides most refusals
    /// by reading.
    async fn consume_link(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
        claim: Option<&ConsumeClaim<'_>>,
    ) -> StoreResult<ConsumeOutcome>;

    /// Why the token cannot be consumed now (unknown to this app, used or
    /// expired), by reading only; `None` when it may be. Refusals are final:
    /// a token never becomes consumable again.
    async fn link_refusal(
        &self,
        token_hash: &SecretHash,
        app_id: &str,
        now: Millis,
    ) -> StoreResult<Option<ConsumeOutcome>>;

    async fn claim_idempotency_key(&self, query: &IdempotencyQuery<'_>) -> StoreResult<IdempotencyClaim>;
    /// Stores the finished response of a request under a key nobody holds,
    /// in one write. False, with nothing written, when the key has a record.
    async fn record_idempotent_response(
        &self,
        query: &IdempotencyQuery<'_>,
        response: &StoredResponse,
    ) -> StoreResult<bool>;
    async fn complete_idempotency_key(&self, app_id: &str, key: &str, response: &StoredResponse) -> StoreResult<()>;
    /// Forgets an in-flight claim (the request failed in a way that must not be replayed).
    async fn release_idempotency_key(&self, app_id: &str, key: &str) -> StoreResult<()>;

    /// Returns the shared signing key, storing `candidate` if there is none yet.
    /// Concurrent callers all get the same key.
    async fn signing_key(&self, candidate: &SigningKeyRecord) -> StoreResult<SigningKeyRecord>;

    /// Leases up to `limit` due emails until `lease_until`; rows whose lease
    /// has run out (a crashed worker's) are due again.
    async fn claim_outbox(&self, now: Millis, lease_until: Millis, limit: u32) -> StoreResult<Vec<OutboxMail>>;
    /// Records a delivery (whoever holds the lease now: it went out).
    async fn outbox_sent(&self, id: i64, now: Millis) -> StoreResult<()>;
    /// Reschedules a failed email. Only while the lease is still `lease_until`:
    /// false (and nothing written) when another worker has claimed it since.
    async fn outbox_retry(
        &self,
        id: i64,
        lease_until: Millis,
        next_attempt_at: Millis,
        error: &str,
    ) -> StoreResult<bool>;
    /// Gives an email up, under the same condition as `outbox_retry`.
    async fn outbox_given_up(&self, id: i64, lease_until: Millis, now: Millis, error: &str) -> StoreResult<bool>;
    /// Hands back a claimed email that was not attempted, so any worker can
    /// take it at once, under the same condition as `outbox_retry`.
    async fn outbox_release(&self, id: i64, lease_until: Millis) -> StoreResult<bool>;
    /// Emails waiting for delivery.
    async fn outbox_depth(&self) -> StoreResult<i64>;

    /// Deletes what is past its retention.
    async fn purge(&self, retention: &Retention) -> StoreResult<()>;
}

pub type DynStore = Arc<dyn Store>;

/// The deletes of `Store::purge`, one statement each, with the cutoff bound
/// as `$1` (which SQLite reads as a named parameter, numbered 1).
fn purge_statements(r: &Retention) -> [(&'static str, i64); 4] {
    [
        ("DELETE FROM rate_hits WHERE at <= $1", r.now - r.rate_hits_ms),
        (
            "DELETE FROM idempotency_keys WHERE created_at <= $1",
            r.now - r.idempotency_ms,
        ),
        (
            "DELETE FROM magic_links WHERE expires_at <= $1",
            r.now - r.links_after_expiry_ms,
        ),
        (
            "DELETE FROM outbox WHERE (sent_at IS NOT NULL AND sent_at <= $1) OR (failed_at IS NOT NULL AND failed_at <= $1)",
            r.now - r.outbox_done_ms,
        ),
    ]
}

/// Default size of the connection pool of each process.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default wait for a free pooled connection before a request fails.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the database is and how to pool connections to it.
#[derive(Clone)]
pub struct DatabaseOptions {
    /// `sqlite://…`, `postgres://…` or `postgresql://…`.
    pub url: String,
    /// Connections this process keeps open at most.
    pub max_connections: u32,
    /// How long an operation waits for a free connection (or a new one to be
    /// opened) before it fails.
    pub acquire_timeout: Duration,
}

impl DatabaseOptions {
    /// The URL with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for DatabaseOptions {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// Opens the store named by the database URL: SQLite for `sqlite:`,
/// PostgreSQL for `postgres://` and `postgresql://`.
pub async fn connect(options: &DatabaseOptions) -> StoreResult<DynStore> {
    let url = options.url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// A database URL with any password replaced (in the userinfo or a
/// `password=` query parameter), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable URL>".to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "****".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_passwords() {
        assert_eq!(
            redact_url("postgres://magic:s3cret@db.internal:5432/magicauth?sslmode=require"),
            "postgres://magic:****@db.internal:5432/magicauth?sslmode=require"
        );
        let redacted = redact_url("postgresql://db/magicauth?user=magic&password=s3cret&sslmode=verify-full");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("sslmode=verify-full"), "{redacted}");
        assert_eq!(redact_url("sqlite://magicauth.db"), "sqlite://magicauth.db");
        assert_eq!(redact_url("not a url"), "<unparseable URL>");
    }

    #[test]
    fn database_options_debug_hides_the_password() {
        let options = DatabaseOptions::new("postgres://magic:s3cret@db/magicauth");
        assert!(!format!("{options:?}").contains("s3cret"));
    }
}
