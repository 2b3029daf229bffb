//! The control API of the test bed binary: JSON over HTTP on loopback.
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `GET /info` | | `{"base_url", "server_url", "smtp_port"}` |
//! | `POST /apps` | `{"args": [...]}` (`apps create` flags) | `{"app_id", "app_key"}` |
//! | `POST /cli` | `{"args": [...]}` (`apps` subcommand) | `{"stdout"}` |
//! | `GET /mail` | `?to=ADDR&min_count=N&timeout_ms=T` | `{"count", "mail": {to, subject, text, html, link, token}}`, 404 on timeout |
//! | `POST /clock` | `{"advance_seconds": N}` | `{}` |
//! | `POST /smtp` | `{"up": bool}` | `{}` |
//!
//! Failures answer 400 with `{"error": "…"}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Testbed;

pub fn router(testbed: Arc<Testbed>) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/apps", post(create_app))
        .route("/cli", post(cli))
        .route("/mail", get(mail))
        .route("/clock", post(clock))
        .route("/smtp", post(smtp))
        .with_state(testbed)
}

fn failure(error: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error.to_string()}))).into_response()
}

async fn info(State(tb): State<Arc<Testbed>>) -> Json<Value> {
    Json(json!({"base_url": tb.base_url, "server_url": tb.server_url, "smtp_port": tb.smtp_port()}))
}

#[derive(Deserialize)]
struct Args {
    #[serde(default)]
    args: Vec<String>,
}

async fn create_app(State(tb): State<Arc<Testbed>>, Json(body): Json<Args>) -> Response {
    match tb.create_app(&body.args).await {
        Ok((app_id, app_key)) => Json(json!({"app_id": app_id, "app_key": app_key})).into_response(),
        Err(e) => failure(format!("{e:#}")),
    }
}

async fn cli(State(tb): State<Arc<Testbed>>, Json(body): Json<Args>) -> Response {
    match tb.cli(&body.args).await {
        Ok(stdout) => Json(json!({"stdout": stdout})).into_response(),
        Err(e) => failure(format!("{e:#}")),
    }
}

#[derive(Deserialize)]
struct MailQuery {
    to: String,
    min_count: Option<usize>,
    timeout_ms: Option<u64>,
}

async fn mail(State(tb): State<Arc<Testbed>>, Query(q): Query<MailQuery>) -> Response {
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(10_000).min(60_000));
    match tb.wait_for_mail(&q.to, q.min_count.unwrap_or(1), timeout).await {
        Some((count, mail)) => Json(json!({"count": count, "mail": mail})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no email for {} in time", q.to)})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ClockBody {
    advance_seconds: i64,
}

async fn clock(State(tb): State<Arc<Testbed>>, Json(body): Json<ClockBody>) -> Json<Value> {
    tb.advance_clock(body.advance_seconds);
    Json(json!({}))
}

#[derive(Deserialize)]
struct SmtpBody {
    up: bool,
}

async fn smtp(State(tb): State<Arc<Testbed>>, Json(body): Json<SmtpBody>) -> Json<Value> {
    tb.set_smtp_up(body.up).await;
    Json(json!({}))
}
