//! The rules of the API, apart from HTTP and storage: authenticating apps,
//! issuing links, consuming tokens and issuing session JWTs.

use std::sync::Arc;
use std::time::Duration;

use magicauth::wire::{ErrorCode, SendLinkResponse, SessionClaims, User, VerifyTokenResponse};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::clock::{Clock, month_of, ms_until_next_month, to_datetime};
use crate::domain::{
    AppKey, EmailAddress, MagicToken, RedirectAllowList, RedirectUrl, ValidationError, random_base62, random_urlsafe,
};
use crate::mail::render_sign_in_email;
use crate::metrics::Metrics;
use crate::session::SessionSigner;
use crate::store::{
    AppRecord, ConsumeClaim, ConsumeOutcome, CreateLinkOutcome, DynStore, IdempotencyQuery, Millis, NewLink, NewMail,
    Plan, RateDecision, RateQuery, StoreError, StoredResponse, UserRecord, WindowState,
};

/// Links one address may request per app in `EMAIL_WINDOW`.
pub const EMAIL_LIMIT: u32 = 5;
pub const EMAIL_WINDOW: Duration = Duration::from_secs(15 * 60);
pub const APP_WINDOW: Duration = Duration::from_secs(60);
/// Burst limit of free-plan apps (and the default for custom ones).
pub const DEFAULT_BURST: u32 = 100;
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// A failed API call, one variant per error code of the contract.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("Invalid token")]
    InvalidToken,
    #[error("Token already used")]
    TokenUsed,
    #[error("Token expired")]
    TokenExpired,
    #[error("Invalid app_key")]
    InvalidAppKey,
    #[error("App disabled")]
    AppDisabled,
    #[error("Redirect URL not whitelisted")]
    RedirectNotAllowed,
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Monthly limit exceeded")]
    QuotaExceeded,
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            AuthError::InvalidToken => ErrorCode::InvalidToken,
            AuthError::TokenUsed => ErrorCode::TokenUsed,
            AuthError::TokenExpired => ErrorCode::TokenExpired,
            AuthError::InvalidAppKey => ErrorCode::InvalidAppKey,
            AuthError::AppDisabled => ErrorCode::AppDisabled,
            AuthError::RedirectNotAllowed => ErrorCode::RedirectNotAllowed,
            AuthError::RateLimited => ErrorCode::RateLimited,
            AuthError::QuotaExceeded => ErrorCode::QuotaExceeded,
            AuthError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Internal(e.into())
    }
}

impl From<ValidationError> for AuthError {
    fn from(e: ValidationError) -> Self {
        AuthError::InvalidRequest(e.message)
    }
}

/// An authenticated, enabled app with its parsed allow-list.
#[derive(Clone, Debug)]
pub struct App {
    pub record: AppRecord,
    pub allow_list: RedirectAllowList,
}

/// What the rate limiter reports for the `RateLimit-*` and `Retry-After` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_s: u64,
    pub retry_after_s: Option<u64>,
}

impl RateInfo {
    fn from_window(w: WindowState, limited: bool) -> Self {
        let reset_s = ceil_secs(w.reset_ms);
        Self {
            limit: w.limit,
            remaining: w.remaining,
            reset_s,
            retry_after_s: limited.then_some(reset_s.max(1)),
        }
    }
}

fn ceil_secs(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// What an operation that claims an Idempotency-Key did.
#[derive(Debug)]
pub enum Claimed<T> {
    Done(T),
    /// The key has a record already: nothing was done.
    KeyTaken,
}

/// Result of `send_link`, with the rate-limit state once the request got that far.
#[derive(Debug)]
pub struct SendLinkOutcome {
    pub result: Result<SendLinkResponse, AuthError>,
    pub rate: Option<RateInfo>,
}

/// Operator settings the rules depend on.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// JWT `iss`: the server's public URL.
    pub issuer: String,
    pub sponsor_footer: Option<String>,
    /// Domain for generated Message-IDs.
    pub message_id_domain: String,
}

pub struct AuthService {
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub signer: Arc<SessionSigner>,
    pub metrics: Arc<Metrics>,
    /// Woken after a link is queued so the email goes out at once.
    pub mail_wake: Arc<Notify>,
    pub settings: AuthSettings,
}

impl AuthService {
    /// Finds the app of a key. The store keeps an app it read for at most
    /// `APP_CACHE_TTL`, so a disabled app or rotated key takes effect on every
    /// replica within that time (the contract allows one second).
    pub async fn authenticate(&self, app_key: &str) -> Result<App, AuthError> {
        let key = AppKey::parse(app_key).ok_or(AuthError::InvalidAppKey)?;
        let record = self
            .store
            .app_by_key_hash(&key.hash())
            .await?
            .ok_or(AuthError::InvalidAppKey)?;
        if record.disabled {
            return Err(AuthError::AppDisabled);
        }
        let allow_list = RedirectAllowList::parse_all(&record.redirect_urls)
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("app {} has a bad redirect URL: {e}", record.id)))?;
        Ok(App { record, allow_list })
    }

    /// `POST /api/send-link` after authentication: rate limits, validation,
    /// allow-list, then the link and its email are stored in one transaction.
    pub async fn send_link(&self, app: &App, email: &str, redirect_url: Option<&str>) -> SendLinkOutcome {
        let now = self.clock.now_ms();
        let email_bucket = hex(&Sha256::digest(email.trim().to_lowercase().as_bytes()));
        let month = month_of(now);
        let decision = self
            .store
            .check_send_rate(&RateQuery {
                app_id: &app.record.id,
                email_bucket: &email_bucket,
                now,
                app_limit: app.record.burst,
                app_window_ms: APP_WINDOW.as_millis() as i64,
                email_limit: EMAIL_LIMIT,
                email_window_ms: EMAIL_WINDOW.as_millis() as i64,
                month: &month,
                monthly_limit: app.record.monthly_limit,
            })
            .await;
        let rate = match decision {
            Err(e) => {
                return SendLinkOutcome {
                    result: Err(e.into()),
                    rate: None,
                };
            }
            Ok(RateDecision::AppLimited(w)) | Ok(RateDecision::EmailLimited(w)) => {
                return SendLinkOutcome {
                    result: Err(AuthError::RateLimited),
                    rate: Some(RateInfo::from_window(w, true)),
                };
            }
            Ok(RateDecision::QuotaExceeded) => {
                return SendLinkOutcome {
                    result: Err(AuthError::QuotaExceeded),
                    rate: Some(quota_info(app, now)),
                };
            }
            // Report whichever limit is closer to running out.
            Ok(RateDecision::Allowed { app: a, email: e }) => {
                RateInfo::from_window(if e.remaining < a.remaining { e } else { a }, false)
            }
        };
        let result = self.issue_link(app, email, redirect_url, now, &month).await;
        let rate = match &result {
            Err(AuthError::QuotaExceeded) => quota_info(app, now),
            _ => rate,
        };
        SendLinkOutcome {
            result,
            rate: Some(rate),
        }
    }

    async fn issue_link(
        &self,
        app: &App,
        email: &str,
        redirect_url: Option<&str>,
        now: i64,
        month: &str,
    ) -> Result<SendLinkResponse, AuthError> {
        let email = EmailAddress::parse(email)?;
        let redirect = match redirect_url {
            Some(raw) => RedirectUrl::parse(raw)?,
            None => app.allow_list.first().clone(),
        };
        if !app.allow_list.allows(&redirect) {
            return Err(AuthError::RedirectNotAllowed);
        }
        let token = MagicToken::generate();
        let ttl = Duration::from_secs(u64::try_from(app.record.token_ttl_s).unwrap_or(0));
        let footer = match app.record.plan {
            Plan::Free => self.settings.sponsor_footer.as_deref(),
            Plan::Custom => None,
        };
        let rendered = render_sign_in_email(&app.record.name, &redirect.with_token(&token), ttl, footer);
        let link = NewLink {
            token_hash: token.hash(),
            app_id: app.record.id.clone(),
            email: email.as_str().to_owned(),
            redirect_url: redirect.as_str().to_owned(),
            created_at: now,
            expires_at: now + app.record.token_ttl_s * 1000,
        };
        let mail = NewMail {
            app_id: app.record.id.clone(),
            recipient: email.as_str().to_owned(),
            message_id: format!("{}@{}", random_base62(24), self.settings.message_id_domain),
            subject: rendered.subject,
            text_body: rendered.text_body,
            html_body: rendered.html_body,
            created_at: now,
        };
        match self
            .store
            .create_link(&link, &mail, month, app.record.monthly_limit)
            .await?
        {
            CreateLinkOutcome::QuotaExceeded => Err(AuthError::QuotaExceeded),
            CreateLinkOutcome::Created { outbox_id } => {
                self.metrics.link_sent();
                self.mail_wake.notify_one();
                tracing::info!(app_id = %app.record.id, outbox_id, "magic link queued");
                Ok(SendLinkResponse {
                    success: true,
                    expires_in: u64::try_from(app.record.token_ttl_s).unwrap_or(0),
                })
            }
        }
    }

    /// `POST /api/verify-token` after authentication.
    pub async fn verify_token(&self, app: &App, token: &str) -> Result<VerifyTokenResponse, AuthError> {
        let now = self.clock.now_ms();
        match self.consume(app, token, now, None).await? {
            Claimed::Done((user, redirect_url, _)) => Ok(self.responder(app, now).response(&user, &redirect_url)),
            Claimed::KeyTaken => Err(AuthError::Internal(anyhow::anyhow!("a key was taken without a claim"))),
        }
    }

    /// `verify_token` under an Idempotency-Key: claims the key, consumes the
    /// token and stores the response under the key in one transaction, and
    /// returns that response. A final refusal (a malformed, unknown, used or
    /// expired token) is stored under the key too, as `refuse` renders it.
    /// `KeyTaken` (nothing done) when the key has a record already.
    pub async fn verify_token_claiming(
        &self,
        app: &App,
        token: &str,
        query: &IdempotencyQuery<'_>,
        refuse: Arc<dyn Fn(AuthError) -> StoredResponse + Send + Sync>,
    ) -> Result<Claimed<StoredResponse>, AuthError> {
        let now = self.clock.now_ms();
        if MagicToken::parse(token.trim()).is_none() {
            self.metrics
                .record_verification(verification_outcome(&AuthError::InvalidToken));
            let response = refuse(AuthError::InvalidToken);
            let recorded = self.store.record_idempotent_response(query, &response).await?;
            return Ok(if recorded {
                Claimed::Done(response)
            } else {
                Claimed::KeyTaken
            });
        }
        let responder = self.responder(app, now);
        let claim = ConsumeClaim {
            query,
            respond: Arc::new(move |user, redirect_url| StoredResponse {
                status: 200,
                body: serde_json::to_string(&responder.response(user, redirect_url)).unwrap_or_default(),
            }),
            refuse: {
                let refuse = Arc::clone(&refuse);
                Arc::new(move |outcome| refuse(refusal_error(outcome)))
            },
        };
        match self.consume(app, token, now, Some(&claim)).await {
            Ok(Claimed::Done((_, _, Some(response)))) => Ok(Claimed::Done(response)),
            Ok(Claimed::Done((_, _, None))) => Err(AuthError::Internal(anyhow::anyhow!(
                "the store consumed a token under a claim without storing the response"
            ))),
            Ok(Claimed::KeyTaken) => Ok(Claimed::KeyTaken),
            // Stored under the key with the claim.
            Err(refusal @ (AuthError::InvalidToken | AuthError::TokenUsed | AuthError::TokenExpired)) => {
                Ok(Claimed::Done(refuse(refusal)))
            }
            Err(error) => Err(error),
        }
    }

    fn responder(&self, app: &App, now: Millis) -> Responder {
        Responder {
            signer: Arc::clone(&self.signer),
            issuer: self.settings.issuer.clone(),
            app_id: app.record.id.clone(),
            session_ttl_s: app.record.session_ttl_s,
            now,
        }
    }

    /// Decides, by reading only, a verification that cannot succeed: a
    /// malformed, unknown, used or expired token. `None` when the token may
    /// be consumed (then `verify_token` decides). Refusals are final (a token
    /// never becomes consumable again), so a refusal can be stored as the
    /// request's idempotent response without claiming its key first.
    pub async fn verify_refusal(&self, app: &App, token: &str) -> Result<Option<AuthError>, AuthError> {
        let refusal = match MagicToken::parse(token.trim()) {
            None => Some(AuthError::InvalidToken),
            Some(token) => self
                .store
                .link_refusal(&token.hash(), &app.record.id, self.clock.now_ms())
                .await?
                .map(|outcome| refusal_error(&outcome)),
        };
        if let Some(error) = &refusal {
            self.metrics.record_verification(verification_outcome(error));
        }
        Ok(refusal)
    }

    /// Consumes the token (and, with a claim, stores the response under its
    /// key); the user and redirect URL of the link on success.
    async fn consume(
        &self,
        app: &App,
        token: &str,
        now: Millis,
        claim: Option<&ConsumeClaim<'_>>,
    ) -> Result<Claimed<(UserRecord, String, Option<StoredResponse>)>, AuthError> {
        let result = match MagicToken::parse(token.trim()) {
            None => Err(AuthError::InvalidToken),
            Some(token) => match self.store.consume_link(&token.hash(), &app.record.id, now, claim).await {
                Ok(ConsumeOutcome::Consumed {
                    user,
                    redirect_url,
                    response,
                }) => Ok(Claimed::Done((user, redirect_url, response))),
                Ok(ConsumeOutcome::KeyTaken) => Ok(Claimed::KeyTaken),
                Ok(ConsumeOutcome::Invalid) => Err(AuthError::InvalidToken),
                Ok(ConsumeOutcome::Used) => Err(AuthError::TokenUsed),
                Ok(ConsumeOutcome::Expired) => Err(AuthError::TokenExpired),
                Err(error) => Err(error.into()),
            },
        };
        match &result {
            Ok(Claimed::KeyTaken) => {}
            Ok(Claimed::Done((user, _, _))) => {
                self.metrics.record_verification("success");
                tracing::info!(app_id = %app.record.id, user_id = user.id, "token verified");
            }
            Err(error) => self.metrics.record_verification(verification_outcome(error)),
        }
        result
    }
}

/// Builds a successful verification's answer: the user and a new session JWT.
struct Responder {
    signer: Arc<SessionSigner>,
    issuer: String,
    app_id: String,
    session_ttl_s: i64,
    now: Millis,
}

impl Responder {
    fn response(&self, user: &UserRecord, redirect_url: &str) -> VerifyTokenResponse {
        let iat = self.now.div_euclid(1000);
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            sub: user.id.to_string(),
            aud: self.app_id.clone(),
            email: user.email.clone(),
            iat,
            exp: iat + self.session_ttl_s,
            jti: random_urlsafe(16),
        };
        VerifyTokenResponse {
            success: true,
            token: self.signer.sign(&claims),
            user: User {
                id: user.id,
                email: user.email.clone(),
                name: user.name.clone(),
                email_verified_at: to_datetime(user.email_verified_at.div_euclid(1000) * 1000),
                last_login_at: to_datetime(user.last_login_at.div_euclid(1000) * 1000),
            },
            redirect_url: redirect_url.to_owned(),
        }
    }
}

/// The error of a refused consumption.
fn refusal_error(outcome: &ConsumeOutcome) -> AuthError {
    match outcome {
        ConsumeOutcome::Used => AuthError::TokenUsed,
        ConsumeOutcome::Expired => AuthError::TokenExpired,
        ConsumeOutcome::Invalid | ConsumeOutcome::Consumed { .. } | ConsumeOutcome::KeyTaken => AuthError::InvalidToken,
    }
}

/// The `outcome` label of a failed verification in the metrics.
fn verification_outcome(error: &AuthError) -> &'static str {
    match error {
        AuthError::InvalidToken => "invalid_token",
        AuthError::TokenUsed => "token_used",
        AuthError::TokenExpired => "token_expired",
        _ => "error",
    }
}

fn quota_info(app: &App, now: i64) -> RateInfo {
    let reset_s = ceil_secs(ms_until_next_month(now)).max(1);
    RateInfo {
        limit: app.record.monthly_limit.unwrap_or(0),
        remaining: 0,
        reset_s,
        retry_after_s: Some(reset_s),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
