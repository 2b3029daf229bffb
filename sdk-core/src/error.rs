//! One error type for every way a call can fail.

use std::fmt;
use std::time::Duration;

/// What an error says: the API's `code`, a human message, the HTTP status
/// when there was a response, and the raw body when it was not the
/// contract's JSON (a proxy's HTML error page, say).
#[derive(Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable machine code: the API's (`"token_used"`), or `server_error`,
    /// `connection`, `timeout`, `invalid_session`, `configuration`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The response body, kept when it was not the contract's error JSON.
    pub raw_body: Option<String>,
}

impl ErrorDetail {
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>, status: Option<u16>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status,
            raw_body: None,
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} ({}, HTTP {status})", self.message, self.code),
            None => write!(f, "{} ({})", self.message, self.code),
        }
    }
}

impl fmt::Debug for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ErrorDetail");
        s.field("code", &self.code)
            .field("message", &self.message)
            .field("status", &self.status);
        if let Some(body) = &self.raw_body {
            s.field("raw_body", &truncate(body, 200));
        }
        s.finish()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure of a MagicAuth call. The variants follow the API's error
/// codes; [`Error::code`], [`Error::status`] and [`Error::message`] work on all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `invalid_token`: the token is unknown, malformed, or for another app.
    #[error("{0}")]
    InvalidToken(ErrorDetail),
    /// `token_used`: the link was used before.
    #[error("{0}")]
    TokenAlreadyUsed(ErrorDetail),
    /// `token_expired`: the link is older than its app's lifetime.
    #[error("{0}")]
    TokenExpired(ErrorDetail),
    /// `invalid_app_key`: the key is unknown or was rotated away.
    #[error("{0}")]
    InvalidAppKey(ErrorDetail),
    /// `app_disabled` or `redirect_not_allowed`.
    #[error("{0}")]
    Forbidden(ErrorDetail),
    /// `rate_limited` or `quota_exceeded`; `retry_after` is the server's `Retry-After`.
    #[error("{detail}")]
    RateLimited {
        detail: ErrorDetail,
        retry_after: Option<Duration>,
    },
    /// `invalid_request` or `payload_too_large` (and `not_found` /
    /// `method_not_allowed`, which mean a wrong base URL).
    #[error("{0}")]
    InvalidRequest(ErrorDetail),
    /// `internal_error`, any other 5xx (`server_error`), or a response that is not the contract's.
    #[error("{0}")]
    Server(ErrorDetail),
    /// The server could not be reached, or the connection broke.
    #[error("{detail}")]
    Connection {
        detail: ErrorDetail,
        #[source]
        source: Option<Source>,
    },
    /// No answer within the timeout.
    #[error("{detail}")]
    Timeout {
        detail: ErrorDetail,
        #[source]
        source: Option<Source>,
    },
    /// A session JWT failed [`Client::verify_session`](crate::Client::verify_session):
    /// bad signature, unknown key, expired, or for another app or issuer.
    #[error("{0}")]
    InvalidSession(ErrorDetail),
    /// The client is not configured correctly (no app key, bad base URL).
    #[error("{0}")]
    Configuration(ErrorDetail),
}

/// The detail of any variant, by reference or mutable reference (match
/// ergonomics pick which from `$error`'s type).
macro_rules! detail_of {
    ($error:expr) => {
        match $error {
            Error::InvalidToken(d)
            | Error::TokenAlreadyUsed(d)
            | Error::TokenExpired(d)
            | Error::InvalidAppKey(d)
            | Error::Forbidden(d)
            | Error::InvalidRequest(d)
            | Error::Server(d)
            | Error::InvalidSession(d)
            | Error::Configuration(d) => d,
            Error::RateLimited { detail, .. } | Error::Connection { detail, .. } | Error::Timeout { detail, .. } => {
                detail
            }
        }
    };
}

impl Error {
    /// The error's detail, whatever the variant.
    pub fn detail(&self) -> &ErrorDetail {
        detail_of!(self)
    }

    /// Stable machine code, e.g. `"token_used"`, `"connection"`.
    pub fn code(&self) -> &str {
        &self.detail().code
    }

    /// Human-readable message (the API's `error` text when it sent one).
    pub fn message(&self) -> &str {
        &self.detail().message
    }

    /// HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.detail().status
    }

    /// How long the server asked to wait, for rate limits.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The response body when it was not the contract's error JSON.
    pub fn raw_body(&self) -> Option<&str> {
        self.detail().raw_body.as_deref()
    }

    /// The message followed by its causes, each said once (a connection
    /// error's message already names them): for logs, and for the native
    /// error the Python and Node bindings attach as `cause`.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    /// The error for an API error `code`, as the contract maps codes to kinds.
    /// Unknown codes are classified by HTTP status.
    pub fn from_api(code: &str, message: String, status: u16, retry_after: Option<Duration>) -> Self {
        let detail = ErrorDetail::new(code, message, Some(status));
        match code {
            "invalid_token" => Error::InvalidToken(detail),
            "token_used" => Error::TokenAlreadyUsed(detail),
            "token_expired" => Error::TokenExpired(detail),
            "invalid_app_key" => Error::InvalidAppKey(detail),
            "app_disabled" | "redirect_not_allowed" => Error::Forbidden(detail),
            "rate_limited" | "quota_exceeded" => Error::RateLimited { detail, retry_after },
            "invalid_request" | "payload_too_large" | "not_found" | "method_not_allowed" => {
                Error::InvalidRequest(detail)
            }
            "internal_error" => Error::Server(detail),
            _ => match status {
                401 => Error::InvalidAppKey(detail),
                403 => Error::Forbidden(detail),
                429 => Error::RateLimited { detail, retry_after },
                400..=499 => Error::InvalidRequest(detail),
                // A 5xx with a code the contract does not know is `server_error`.
                _ => Error::Server(ErrorDetail {
                    code: "server_error".to_owned(),
                    ..detail
                }),
            },
        }
    }

    /// The error for a response that is not the contract's error JSON.
    pub fn from_status(status: u16, raw_body: String, retry_after: Option<Duration>) -> Self {
        let (code, message) = match status {
            401 => ("invalid_app_key", "Invalid app_key".to_owned()),
            403 => ("forbidden", "Forbidden".to_owned()),
            413 => ("payload_too_large", "Request body too large".to_owned()),
            429 => ("rate_limited", "Rate limit exceeded".to_owned()),
            400..=499 => ("invalid_request", format!("Unexpected HTTP {status} response")),
            _ => ("server_error", format!("Server error: HTTP {status}")),
        };
        let mut error = Error::from_api(code, message, status, retry_after);
        if !raw_body.is_empty() {
            error.detail_mut().raw_body = Some(raw_body);
        }
        error
    }

    fn detail_mut(&mut self) -> &mut ErrorDetail {
        detail_of!(self)
    }

    /// The same error without its source (which cannot be cloned): for
    /// calls that share the outcome of one request.
    #[cfg(feature = "client")]
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::InvalidToken(d) => Error::InvalidToken(d.clone()),
            Error::TokenAlreadyUsed(d) => Error::TokenAlreadyUsed(d.clone()),
            Error::TokenExpired(d) => Error::TokenExpired(d.clone()),
            Error::InvalidAppKey(d) => Error::InvalidAppKey(d.clone()),
            Error::Forbidden(d) => Error::Forbidden(d.clone()),
            Error::RateLimited { detail, retry_after } => Error::RateLimited {
                detail: detail.clone(),
                retry_after: *retry_after,
            },
            Error::InvalidRequest(d) => Error::InvalidRequest(d.clone()),
            Error::Server(d) => Error::Server(d.clone()),
            Error::Connection { detail, .. } => Error::Connection {
                detail: detail.clone(),
                source: None,
            },
            Error::Timeout { detail, .. } => Error::Timeout {
                detail: detail.clone(),
                source: None,
            },
            Error::InvalidSession(d) => Error::InvalidSession(d.clone()),
            Error::Configuration(d) => Error::Configuration(d.clone()),
        }
    }

    #[cfg(feature = "client")]
    pub(crate) fn session(message: impl Into<String>) -> Self {
        Error::InvalidSession(ErrorDetail::new("invalid_session", message, None))
    }

    /// A [`Error::Configuration`]: the client's options are not usable. For
    /// the bindings, which check the options they take in their own types.
    pub fn configuration(message: impl Into<String>) -> Self {
        Error::Configuration(ErrorDetail::new("configuration", message, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_code_maps_to_its_kind() {
        type IsKind = fn(&Error) -> bool;
        let cases: [(&str, u16, IsKind); 13] = [
            ("invalid_token", 400, |e| matches!(e, Error::InvalidToken(_))),
            ("token_used", 400, |e| matches!(e, Error::TokenAlreadyUsed(_))),
            ("token_expired", 400, |e| matches!(e, Error::TokenExpired(_))),
            ("invalid_app_key", 401, |e| matches!(e, Error::InvalidAppKey(_))),
            ("app_disabled", 403, |e| matches!(e, Error::Forbidden(_))),
            ("redirect_not_allowed", 403, |e| matches!(e, Error::Forbidden(_))),
            ("rate_limited", 429, |e| matches!(e, Error::RateLimited { .. })),
            ("quota_exceeded", 429, |e| matches!(e, Error::RateLimited { .. })),
            ("invalid_request", 400, |e| matches!(e, Error::InvalidRequest(_))),
            ("payload_too_large", 413, |e| matches!(e, Error::InvalidRequest(_))),
            ("not_found", 404, |e| matches!(e, Error::InvalidRequest(_))),
            ("method_not_allowed", 405, |e| matches!(e, Error::InvalidRequest(_))),
            ("internal_error", 500, |e| matches!(e, Error::Server(_))),
        ];
        for (code, status, is_kind) in cases {
            let error = Error::from_api(code, "m".into(), status, None);
            assert!(is_kind(&error), "{code}");
            assert_eq!(error.code(), code);
            assert_eq!(error.status(), Some(status));
        }
    }

    #[test]
    fn a_5xx_with_a_code_the_contract_does_not_know_is_server_error() {
        let error = Error::from_api("maintenance", "Back soon".into(), 503, None);
        assert!(matches!(error, Error::Server(_)));
        assert_eq!(error.code(), "server_error");
        assert_eq!(error.message(), "Back soon");
        assert_eq!(error.status(), Some(503));
    }

    #[test]
    fn non_contract_bodies_are_kept() {
        let error = Error::from_status(502, "<html>bad gateway</html>".into(), None);
        assert!(matches!(error, Error::Server(_)));
        assert_eq!(error.code(), "server_error");
        assert_eq!(error.raw_body(), Some("<html>bad gateway</html>"));
        let limited = Error::from_status(429, String::new(), Some(Duration::from_secs(3)));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(limited.raw_body(), None);
    }

    #[test]
    fn describe_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::Connection {
            detail: ErrorDetail::new("connection", "could not connect: refused", None),
            source: Some(Box::new(inner)),
        };
        assert_eq!(error.describe(), "could not connect: refused (connection)");
        let error = Error::Timeout {
            detail: ErrorDetail::new("timeout", "no answer", None),
            source: Some(Box::new(std::io::Error::other("deadline"))),
        };
        assert_eq!(error.describe(), "no answer (timeout): deadline");
    }

    #[test]
    fn display_shows_message_code_and_status() {
        let error = Error::from_api("token_used", "Token already used".into(), 400, None);
        assert_eq!(error.to_string(), "Token already used (token_used, HTTP 400)");
    }
}
