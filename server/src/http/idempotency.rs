//! `Idempotency-Key`: a repeated request gets the first response again.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::api::Reply;
use super::error::ApiError;
use crate::store::{IdempotencyClaim, IdempotencyQuery, StoredResponse};

const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// An in-flight claim older than this belongs to a crashed process.
const ABANDON_AFTER: Duration = Duration::from_secs(60);
/// How long a duplicate waits for the first request to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// A validated `Idempotency-Key` header.
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(ApiError::invalid_request(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ));
        }
        Ok(Some(Self(String::from_utf8_lossy(bytes).into_owned())))
    }
}

/// What identifies a request under its key: the endpoint and the body.
pub fn request_hash<R: Serialize>(endpoint: &str, request: &R) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(endpoint.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    hasher.finalize().into()
}

/// The claim of `key` for a request, now.
pub fn query<'a>(state: &AppState, app_id: &'a str, key: &'a str, request_hash: &'a [u8; 32]) -> IdempotencyQuery<'a> {
    IdempotencyQuery {
        app_id,
        key,
        request_hash,
        now: state.auth.clock.now_ms(),
        retention_ms: RETENTION.as_millis() as i64,
        abandon_after_ms: ABANDON_AFTER.as_millis() as i64,
    }
}

/// Runs `handler` once per key: replays a finished response, refuses a key
/// reused for another request, and waits for a duplicate that is in flight.
pub async fn run<R: Serialize>(
    state: &AppState,
    app_id: &str,
    key: Option<IdempotencyKey>,
    endpoint: &str,
    request: &R,
    handler: impl Future<Output = Reply>,
) -> Result<Response, ApiError> {
    let Some(IdempotencyKey(key)) = key else {
        return Ok(handler.await.into_response());
    };
    let request_hash = request_hash(endpoint, request);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let claim = state
            .store
            .claim_idempotency_key(&query(state, app_id, &key, &request_hash))
            .await
            .map_err(crate::auth::AuthError::from)?;
        match claim {
            IdempotencyClaim::Claimed => break,
            IdempotencyClaim::Replay(stored) => {
                let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
                let mut response = Reply {
                    status,
                    body: stored.body,
                    rate: None,
                }
                .into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            IdempotencyClaim::Mismatch => {
                return Err(ApiError::invalid_request(
                    "Idempotency-Key was already used with a different request",
                ));
            }
            IdempotencyClaim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            IdempotencyClaim::InProgress => {
                return Err(ApiError::invalid_request(
                    "A request with this Idempotency-Key is still in progress",
                ));
            }
        }
    }
    let reply = handler.await;
    Ok(finish(state, app_id, &key, reply).await)
}

/// Records the reply of a request that claimed `key`, and sends it.
pub async fn finish(state: &AppState, app_id: &str, key: &str, reply: Reply) -> Response {
    // Rate-limit refusals and server errors are not final: a retry with the
    // same key must be able to succeed later.
    let final_answer = !(reply.status == StatusCode::TOO_MANY_REQUESTS || reply.status.is_server_error());
    let recorded = if final_answer {
        state
            .store
            .complete_idempotency_key(
                app_id,
                key,
                &StoredResponse {
                    status: reply.status.as_u16(),
                    body: reply.body.clone(),
                },
            )
            .await
    } else {
        state.store.release_idempotency_key(app_id, key).await
    };
    if let Err(error) = recorded {
        tracing::error!(%error, "could not record an idempotent response");
    }
    reply.into_response()
}
