//! Operator endpoints: health, readiness, metrics and the JWKS.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use magicauth::wire::JwkSet;
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operator", responses((status = 200, description = "The process runs")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operator",
    responses((status = 200, description = "The database answers"), (status = 503, description = "The database does not answer"))
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable"})))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable"}))),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operator", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let depth = match tokio::time::timeout(Duration::from_secs(2), state.store.outbox_depth()).await {
        Ok(Ok(depth)) => Some(depth),
        _ => None,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(depth),
    )
}

/// Public keys for verifying session JWTs.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "sessions", responses((status = 200, body = JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.auth.signer.jwks().clone()),
    )
}
