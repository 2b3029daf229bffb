//! HTTP: routes, request parsing into the contract's error shape, headers.

mod api;
mod error;
mod idempotency;
mod openapi;
mod operator;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{AuthError, AuthService};
use crate::metrics::Metrics;
use crate::store::DynStore;

pub use error::ApiError;

/// Request bodies over this size get `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<AuthService>,
    pub store: DynStore,
    pub metrics: Arc<Metrics>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(operator::router())
        .route("/api/openapi.json", get(openapi::openapi_json))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Runs a request's handler as a task of its own, not inside the
/// connection's task.
///
/// hyper hands the request body to the handler from the connection's task
/// while that task is running the handler, so the task wakes itself; tokio
/// then reschedules it as a yield, which wakes a second worker thread for
/// nothing, on every request with a body. In a task of its own, the handler
/// is woken by the connection and the connection by the handler, each taking
/// the worker's next-task slot: no other thread wakes. That halves the
/// server's context switches per verification.
///
/// Also: a client that hangs up no longer cancels its request half-way (a
/// write is finished and stored, as a retry will expect), and a handler that
/// panics gets the contract's `500 internal_error` instead of a dropped
/// connection.
async fn in_own_task<F>(handler: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    match tokio::spawn(handler).await {
        Ok(response) => response,
        Err(failure) => ApiError::from(AuthError::Internal(anyhow::anyhow!(
            "a request handler failed: {failure}"
        )))
        .into_response(),
    }
}

/// Counts and logs every request by route template (never by raw path or
/// query, which could carry a token).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = in_own_task(next.run(request)).await;
    let status = response.status().as_u16();
    state.metrics.record_request(&route, status);
    tracing::info!(
        target: "magicauth_server::http",
        %method,
        route,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[tokio::test]
    async fn a_handler_runs_in_a_task_of_its_own() {
        let checked = tokio::spawn(async {
            let connection = tokio::task::id();
            let (sender, handler) = tokio::sync::oneshot::channel();
            let response = in_own_task(async move {
                let _ = sender.send(tokio::task::id());
                (StatusCode::CREATED, "made").into_response()
            })
            .await;
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_ne!(handler.await.expect("the handler ran"), connection);
        });
        checked.await.expect("the checks passed");
    }

    #[tokio::test]
    async fn a_request_whose_client_hangs_up_still_finishes() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let request = tokio::spawn(in_own_task(async move {
            let _ = wait.await;
            let _ = done.send(());
            StatusCode::OK.into_response()
        }));
        tokio::task::yield_now().await;
        // hyper drops the handler's future when the connection goes away.
        request.abort();
        let _ = request.await;
        go.send(()).expect("the handler is still there");
        tokio::time::timeout(std::time::Duration::from_secs(10), finished)
            .await
            .expect("the handler finished in time")
            .expect("the handler finished");
    }

    #[tokio::test]
    async fn a_handler_that_panics_gets_a_contract_500() {
        let failed = in_own_task(async { panic!("a bug in a handler") }).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(failed.into_body(), 4096).await.expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "internal_error");
        assert!(
            !body["error"].as_str().unwrap_or_default().contains("a bug"),
            "the detail stays in the log: {body}"
        );
    }
}
