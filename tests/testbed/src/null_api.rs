//! A stand-in for the API that does no work: every request is answered at
//! once with the contract's `invalid_token` error. The benchmarks call it
//! beside the real server to tell a client's own cost per call from the
//! server's.

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

const BODY: &str = r#"{"success":false,"error":"Invalid token","code":"invalid_token"}"#;

/// Reads the body first: a connection whose request body is left unread is
/// not kept alive.
async fn refuse(_body: Bytes) -> impl IntoResponse {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        BODY,
    )
}

/// Serves the stand-in on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, Router::new().fallback(refuse)).await
}
