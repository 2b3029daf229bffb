//! `POST /api/send-link`, `POST /api/verify-token` and `GET /api/app`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use magicauth::wire::{
    AppInfo, AppInfoResponse, ErrorBody, ErrorCode, SendLinkRequest, SendLinkResponse, VerifyTokenRequest,
    VerifyTokenResponse,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ApiError, rate_headers};
use super::idempotency::{self, IdempotencyKey};
use super::{AppState, MAX_BODY_BYTES};
use crate::auth::{AuthError, Claimed, RateInfo};
use crate::store::StoredResponse;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/send-link", post(send_link))
        .route("/api/verify-token", post(verify_token))
        .route("/api/app", get(app_info))
}

/// A finished API response: what is sent, and what an idempotent replay repeats.
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
    pub rate: Option<RateInfo>,
}

impl Reply {
    fn ok(body: &impl Serialize) -> Self {
        Self {
            status: StatusCode::OK,
            body: serde_json::to_string(body).unwrap_or_default(),
            rate: None,
        }
    }

    fn error(error: ApiError) -> Self {
        Self {
            status: error.status(),
            body: serde_json::to_string(&error.body()).unwrap_or_default(),
            rate: error.rate,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body).into_response();
        if let Some(rate) = self.rate {
            rate_headers(response.headers_mut(), &rate);
        }
        response
    }
}

/// Send a magic link.
///
/// Validates the request, applies the rate limits and the redirect allow-list,
/// then stores the link and queues its email in one transaction. Answers once
/// the email is durably queued, not after delivery.
#[utoipa::path(
    post,
    path = "/api/send-link",
    tag = "links",
    request_body = SendLinkRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; a repeat within 24 h replays the first response")),
    responses(
        (status = 200, description = "Link queued", body = SendLinkResponse,
         headers(("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64))),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_app_key", body = ErrorBody),
        (status = 403, description = "app_disabled or redirect_not_allowed", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 429, description = "rate_limited or quota_exceeded", body = ErrorBody, headers(("Retry-After" = u64))),
        (status = 500, description = "internal_error", body = ErrorBody),
    )
)]
pub async fn send_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fields = json_object(&headers, body)?;
    let request = SendLinkRequest {
        email: required_string(&fields, "email")?,
        app_key: required_string(&fields, "app_key")?,
        redirect_url: optional_string(&fields, "redirect_url")?,
    };
    let key = IdempotencyKey::from_headers(&headers)?;
    let app = state.auth.authenticate(&request.app_key).await?;
    let replyable = idempotency::run(&state, &app.record.id, key, "send-link", &request, async {
        let outcome = state
            .auth
            .send_link(&app, &request.email, request.redirect_url.as_deref())
            .await;
        let mut reply = match outcome.result {
            Ok(response) => Reply::ok(&response),
            Err(error) => Reply::error(error.into()),
        };
        reply.rate = outcome.rate;
        reply
    })
    .await?;
    Ok(replyable)
}

/// Verify a token from a magic link.
///
/// Consumes the token (exactly once, whatever the concurrency), records the
/// login and returns the user with a session JWT.
#[utoipa::path(
    post,
    path = "/api/verify-token",
    tag = "links",
    request_body = VerifyTokenRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; a repeat within 24 h replays the first response")),
    responses(
        (status = 200, description = "Token verified", body = VerifyTokenResponse),
        (status = 400, description = "invalid_request, invalid_token, token_used or token_expired", body = ErrorBody),
        (status = 401, description = "invalid_app_key", body = ErrorBody),
        (status = 403, description = "app_disabled", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 500, description = "internal_error", body = ErrorBody),
    )
)]
pub async fn verify_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let fields = json_object(&headers, body)?;
    let request = VerifyTokenRequest {
        token: required_string(&fields, "token")?,
        app_key: required_string(&fields, "app_key")?,
    };
    let key = IdempotencyKey::from_headers(&headers)?;
    let app = state.auth.authenticate(&request.app_key).await?;
    let Some(idem) = key.as_ref() else {
        // Most failed verifications are decided by one read.
        if let Some(refusal) = state.auth.verify_refusal(&app, &request.token).await? {
            return Ok(Reply::error(refusal.into()).into_response());
        }
        return Ok(match state.auth.verify_token(&app, &request.token).await {
            Ok(response) => Reply::ok(&response),
            Err(error) => Reply::error(error.into()),
        }
        .into_response());
    };
    // The key, the consumption and the response (a success or a final
    // refusal) are stored together, so all are stored or none.
    let request_hash = idempotency::request_hash("verify-token", &request);
    let claim = idempotency::query(&state, &app.record.id, idem.as_str(), &request_hash);
    let refuse = Arc::new(|error: AuthError| {
        let reply = Reply::error(error.into());
        StoredResponse {
            status: reply.status.as_u16(),
            body: reply.body,
        }
    });
    match state
        .auth
        .verify_token_claiming(&app, &request.token, &claim, refuse)
        .await
    {
        Ok(Claimed::Done(stored)) => Ok(Reply {
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            body: stored.body,
            rate: None,
        }
        .into_response()),
        // A replay, another body, a first request in flight, or a stale record.
        Ok(Claimed::KeyTaken) => {
            let verify = async {
                match state.auth.verify_token(&app, &request.token).await {
                    Ok(response) => Reply::ok(&response),
                    Err(error) => Reply::error(error.into()),
                }
            };
            idempotency::run(&state, &app.record.id, key, "verify-token", &request, verify).await
        }
        // Nothing was claimed; a server error is not stored.
        Err(error) => Ok(Reply::error(error.into()).into_response()),
    }
}

/// Describe the app of a key.
///
/// Tells a client the app id and issuer its session JWTs carry (`aud`, `iss`),
/// so SDKs can check sessions offline without extra configuration.
#[utoipa::path(
    get,
    path = "/api/app",
    tag = "sessions",
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The app of the key", body = AppInfoResponse),
        (status = 401, description = "invalid_app_key", body = ErrorBody),
        (status = 403, description = "app_disabled", body = ErrorBody),
    )
)]
pub async fn app_info(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<AppInfoResponse>, ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let app = state.auth.authenticate(key.trim()).await?;
    Ok(Json(AppInfoResponse {
        success: true,
        app: AppInfo {
            id: app.record.id,
            name: app.record.name,
        },
        issuer: state.auth.settings.issuer.clone(),
    }))
}

/// The body as a JSON object, or the contract's 400/413.
fn json_object(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("Request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            )
        } else {
            ApiError::invalid_request("Could not read the request body")
        }
    })?;
    if !is_json_content_type(headers) {
        return Err(ApiError::invalid_request("Content-Type must be application/json"));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request("Request body must be a JSON object")),
        Err(e) if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) => Err(ApiError::invalid_request(
            "Request body is empty; expected a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_request(format!(
            "Request body is not valid JSON: {e}"
        ))),
    }
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn required_string(fields: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid_request(format!("{name} is required"))),
        Some(_) => Err(ApiError::invalid_request(format!("{name} must be a string"))),
    }
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(ApiError::invalid_request(format!("{name} must be a string"))),
    }
}
