//! The API client: one connection pool, retries, typed results.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::retry::RetryPolicy;
use crate::session::{SessionConfig, SessionVerifier};
use crate::wire::{self, SendLinkRequest, SessionClaims, User, VerifyTokenRequest};
use crate::{Error, ErrorDetail};

/// Base URL used when none is configured.
pub const DEFAULT_BASE_URL: &str = "https://magicauth.app/api";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies kept in errors are cut to this size.
const MAX_RAW_BODY: usize = 4096;

/// Result of [`Client::send_link`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendLinkResponse {
    /// Seconds until the emailed link expires.
    pub expires_in: u64,
}

/// Result of [`Client::verify_token`]: the signed-in user and a session JWT.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    pub user: User,
    /// Session JWT (EdDSA), checkable offline with [`Client::verify_session`].
    pub token: String,
    /// The redirect URL the link was sent to.
    pub redirect_url: String,
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verification")
            .field("user", &self.user)
            .field("token", &"**redacted**")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// The app key, kept out of `Debug` and `Display`.
#[derive(Clone)]
struct AppKey(String);

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"mk_**redacted**\"")
    }
}

/// A MagicAuth API client. Cheap to clone: clones share one connection pool
/// and one session-key cache, and can be used from any thread.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    /// The two POST endpoints, parsed once: parsing a URL (host name checks
    /// included) on every call cost more than the rest of building a request.
    send_link_url: url::Url,
    verify_token_url: url::Url,
    app_key: AppKey,
    timeout: Duration,
    retry: RetryPolicy,
    sessions: SessionVerifier,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("app_key", &self.inner.app_key)
            .field("timeout", &self.inner.timeout)
            .field("max_retries", &self.inner.retry.max_retries)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`]. Unset options fall back to the environment only
/// through [`ClientBuilder::from_env`].
#[derive(Clone, Default)]
pub struct ClientBuilder {
    app_key: Option<String>,
    base_url: Option<String>,
    timeout: Option<Duration>,
    max_retries: Option<u32>,
    user_agent: Option<String>,
    retry_base_delay: Option<Duration>,
    session: SessionConfig,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("app_key", &self.app_key.as_ref().map(|_| AppKey(String::new())))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The app's secret key (`mk_…`).
    pub fn app_key(mut self, key: impl Into<String>) -> Self {
        self.app_key = Some(key.into());
        self
    }

    /// Base URL of the API, e.g. `https://magicauth.example.com/api`
    /// (default [`DEFAULT_BASE_URL`]).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Timeout of each attempt (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries after the first attempt (default 2).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The `User-Agent` header (default `magicauth-rust/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// First backoff delay (default 250 ms); mostly for tests.
    pub fn retry_base_delay(mut self, delay: Duration) -> Self {
        self.retry_base_delay = Some(delay);
        self
    }

    /// The app id that session JWTs must name as `aud`. By default it is
    /// asked from the server once (`GET /api/app`).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.session.app_id = Some(app_id.into());
        self
    }

    /// The `iss` that session JWTs must carry. By default it is asked from the
    /// server once, with the app id.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.session.issuer = Some(issuer.into());
        self
    }

    /// Where the public keys are (default: `/.well-known/jwks.json` beside the API).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.session.jwks_url = Some(url.into());
        self
    }

    /// Least time between two JWKS fetches caused by unknown key ids, or
    /// after a fetch failed (default 60 s).
    pub fn jwks_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.session.min_refresh = interval;
        self
    }

    /// How long fetched keys are used before they are fetched again (default
    /// 1 h). A key that the server published stays usable while a new fetch
    /// fails.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.session.max_age = max_age;
        self
    }

    /// Clock skew tolerated on `exp` and `iat` (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.session.leeway = leeway;
        self
    }

    /// Fills unset options from `MAGICAUTH_APP_KEY` and `MAGICAUTH_BASE_URL`.
    pub fn from_env(mut self) -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        if self.app_key.is_none() {
            self.app_key = var("MAGICAUTH_APP_KEY");
        }
        if self.base_url.is_none() {
            self.base_url = var("MAGICAUTH_BASE_URL");
        }
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let app_key = self
            .app_key
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::configuration("no app key: pass one or set MAGICAUTH_APP_KEY"))?;
        let base_url = self
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let parsed = url::Url::parse(&base_url).map_err(|e| Error::configuration(format!("invalid base URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::configuration("the base URL must be an http(s) URL"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(Error::configuration(
                "the base URL must not have a query or a fragment: the endpoint paths go after it",
            ));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::configuration("the timeout must be greater than zero"));
        }
        let user_agent = self
            .user_agent
            .unwrap_or_else(|| format!("magicauth-rust/{}", env!("CARGO_PKG_VERSION")));
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirect is never followed: a 307 or 308 would send the body,
            // and with it the app key, to wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::configuration(format!("could not build the HTTP client: {e}")))?;
        let mut retry = RetryPolicy::default();
        if let Some(n) = self.max_retries {
            retry.max_retries = n;
        }
        if let Some(delay) = self.retry_base_delay {
            retry.base_delay = delay;
        }
        let sessions = SessionVerifier::new(self.session, &base_url);
        let endpoint = |path: &str| {
            let mut url = parsed.clone();
            // An http(s) URL with a host always has path segments.
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push(path);
            }
            url
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                send_link_url: endpoint("send-link"),
                verify_token_url: endpoint("verify-token"),
                base_url,
                app_key: AppKey(app_key),
                timeout,
                retry,
                sessions,
            }),
        })
    }
}

impl Client {
    /// A client for `app_key` on the default base URL (or `MAGICAUTH_BASE_URL`).
    pub fn new(app_key: impl Into<String>) -> Result<Self, Error> {
        Self::builder().app_key(app_key).from_env().build()
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured by `MAGICAUTH_APP_KEY` and `MAGICAUTH_BASE_URL`.
    pub fn from_env() -> Result<Self, Error> {
        Self::builder().from_env().build()
    }

    /// The API base URL in use.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Emails a sign-in link to `email`, leading to `redirect_url` (one of the
    /// app's allowed URLs; the app's first one when `None`).
    pub async fn send_link(&self, email: &str, redirect_url: Option<&str>) -> Result<SendLinkResponse, Error> {
        let request = SendLinkRequest {
            email: email.to_owned(),
            app_key: self.inner.app_key.0.clone(),
            redirect_url: redirect_url.map(str::to_owned),
        };
        let response: wire::SendLinkResponse = self.post(&self.inner.send_link_url, &request).await?;
        Ok(SendLinkResponse {
            expires_in: response.expires_in,
        })
    }

    /// Exchanges a link's token for the user and a session JWT. The token is
    /// single-use: a second call answers [`Error::TokenAlreadyUsed`].
    pub async fn verify_token(&self, token: &str) -> Result<Verification, Error> {
        let request = VerifyTokenRequest {
            token: token.to_owned(),
            app_key: self.inner.app_key.0.clone(),
        };
        let response: wire::VerifyTokenResponse = self.post(&self.inner.verify_token_url, &request).await?;
        Ok(Verification {
            user: response.user,
            token: response.token,
            redirect_url: response.redirect_url,
        })
    }

    /// The `magic_token` of a callback URL or query string; see [`crate::token_from_url`].
    pub fn token_from_url(&self, url_or_query: &str) -> Option<String> {
        crate::token_from_url(url_or_query)
    }

    /// Checks a session JWT: its EdDSA signature against the server's JWKS
    /// (fetched once and cached; fetched again for an unknown key id, at most
    /// once per refresh interval), its issuer, its audience (this app) and its
    /// lifetime. Returns the claims.
    pub async fn verify_session(&self, jwt: &str) -> Result<SessionClaims, Error> {
        self.inner.sessions.verify(self, jwt, Utc::now()).await
    }

    /// Like [`Client::verify_session`] at a given time; for tests.
    #[doc(hidden)]
    pub async fn verify_session_at(&self, jwt: &str, now: DateTime<Utc>) -> Result<SessionClaims, Error> {
        self.inner.sessions.verify(self, jwt, now).await
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(&self, url: &url::Url, body: &Req) -> Result<Resp, Error> {
        let body =
            serde_json::to_vec(body).map_err(|e| Error::configuration(format!("unserialisable request: {e}")))?;
        // One key for every attempt of this call, so a retry is never a second send.
        let idempotency_key = crate::retry::request_key();
        self.with_retries(|| {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            if let Ok(value) = HeaderValue::from_str(&idempotency_key) {
                headers.insert("idempotency-key", value);
            }
            self.inner.http.post(url.clone()).headers(headers).body(body.clone())
        })
        .await
    }

    /// `GET` of a JSON document, with the app key as bearer token when asked.
    pub(crate) async fn get<Resp: DeserializeOwned>(&self, url: &str, authenticated: bool) -> Result<Resp, Error> {
        self.with_retries(|| {
            let request = self.inner.http.get(url);
            if authenticated {
                request.bearer_auth(&self.inner.app_key.0)
            } else {
                request
            }
        })
        .await
    }

    pub(crate) fn api_url(&self, path: &str) -> String {
        format!("{}/{path}", self.inner.base_url)
    }

    async fn with_retries<Resp: DeserializeOwned>(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Resp, Error> {
        let mut attempt = 0;
        loop {
            let error = match self.attempt(request()).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            match self.inner.retry.delay(&error, attempt) {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(error),
            }
        }
    }

    async fn attempt<Resp: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<Resp, Error> {
        let timeout = self.inner.timeout;
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        if response.status().is_redirection() {
            return Err(redirect_error(status, response.url(), response.headers()));
        }
        let bytes = response.bytes().await.map_err(|e| transport_error(e, timeout))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| {
                let mut detail = ErrorDetail::new(
                    "server_error",
                    format!("unexpected response from the server: {e}"),
                    Some(status),
                );
                detail.raw_body = Some(raw_body(&bytes));
                Error::Server(detail)
            });
        }
        #[derive(serde::Deserialize)]
        struct ApiErrorBody {
            error: String,
            code: String,
        }
        Err(match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => Error::from_api(&body.code, body.error, status, retry_after),
            // 5xx bodies (proxies, load balancers) are not assumed to be JSON.
            Err(_) => Error::from_status(status, raw_body(&bytes), retry_after),
        })
    }
}

/// A redirect from the API: the base URL points somewhere else (a proxy that
/// moved, `http` for an `https` server). Not followed, and not retried. The
/// message names the target, resolved against the request's URL, without
/// credentials, query or fragment.
fn redirect_error(status: u16, from: &url::Url, headers: &HeaderMap) -> Error {
    let target = headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| from.join(l).ok())
        .map(|mut url| {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            format!(" to {}", url.as_str().chars().take(200).collect::<String>())
        })
        .unwrap_or_default();
    let message = format!(
        "the server answered with a redirect (HTTP {status}){target}; redirects are not followed, \
         so that the app key is never sent elsewhere: set the base URL to the API itself"
    );
    Error::Server(ErrorDetail::new("server_error", message, Some(status)))
}

fn raw_body(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX_RAW_BODY) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.into_owned(),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn transport_error(error: reqwest::Error, timeout: Duration) -> Error {
    // Drop the URL: errors stay short, and never show more than they must.
    let error = error.without_url();
    if error.is_timeout() {
        Error::Timeout {
            detail: ErrorDetail::new("timeout", format!("no answer within {timeout:?}"), None),
            source: Some(Box::new(error)),
        }
    } else {
        let mut message = format!("could not reach the MagicAuth server: {error}");
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Error::Connection {
            detail: ErrorDetail::new("connection", message, None),
            source: Some(Box::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let client = Client::builder()
            .app_key("mk_supersecretvalue")
            .base_url("http://127.0.0.1:1/api")
            .build()
            .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        let builder = Client::builder().app_key("mk_supersecretvalue");
        assert!(!format!("{builder:?}").contains("supersecret"));
    }

    #[test]
    fn configuration_is_checked() {
        assert!(matches!(Client::builder().build(), Err(Error::Configuration(_))));
        assert!(matches!(
            Client::builder().app_key("k").base_url("ftp://x").build(),
            Err(Error::Configuration(_))
        ));
        let client = Client::builder()
            .app_key("k")
            .base_url("http://h:1/api/")
            .build()
            .unwrap();
        assert_eq!(client.base_url(), "http://h:1/api");
        assert_eq!(client.inner.send_link_url.as_str(), "http://h:1/api/send-link");
        assert_eq!(client.inner.verify_token_url.as_str(), "http://h:1/api/verify-token");
        let bare = Client::builder().app_key("k").base_url("http://h:1").build().unwrap();
        assert_eq!(bare.inner.verify_token_url.as_str(), "http://h:1/verify-token");
        for base in ["http://h:1/api?x=1", "http://h:1/api#top"] {
            assert!(matches!(
                Client::builder().app_key("k").base_url(base).build(),
                Err(Error::Configuration(_))
            ));
        }
        assert!(matches!(
            Client::builder().app_key("k").timeout(Duration::ZERO).build(),
            Err(Error::Configuration(_))
        ));
        let default = Client::builder().app_key("k").build().unwrap();
        assert_eq!(default.base_url(), DEFAULT_BASE_URL);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
