//! `ApiError`: every failure becomes the contract's error body.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use magicauth::wire::{ErrorBody, ErrorCode};

use crate::auth::{AuthError, RateInfo};

/// An error response: status and code from the contract, a message for humans.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub rate: Option<RateInfo>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            rate: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        if let AuthError::Internal(source) = &e {
            // The detail goes to the log only; the client gets the fixed text.
            tracing::error!(error = format!("{source:#}"), "internal error");
        }
        let message = e.code().fixed_message().map_or_else(|| e.to_string(), str::to_owned);
        Self::new(e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(rate) = self.rate {
            rate_headers(response.headers_mut(), &rate);
        }
        response
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and, when
/// limited, `Retry-After`.
pub fn rate_headers(headers: &mut HeaderMap, rate: &RateInfo) {
    let mut set = |name: &'static str, value: u64| {
        headers.insert(name, HeaderValue::from(value));
    };
    set("ratelimit-limit", u64::from(rate.limit));
    set("ratelimit-remaining", u64::from(rate.remaining));
    set("ratelimit-reset", rate.reset_s);
    if let Some(retry_after) = rate.retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "Not found")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed")
}
