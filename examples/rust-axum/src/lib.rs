//! An axum app that signs users in with MagicAuth magic links.
//!
//! 1. `GET /` asks for an email address; `POST /send-link` has MagicAuth email
//!    a link to `{APP_URL}/auth/callback`.
//! 2. `GET /auth/callback?magic_token=…` only shows a "Continue" button: link
//!    scanners that open the link do not use up the single-use token.
//! 3. `POST /auth/callback` verifies the token, starts the app's own session
//!    (a signed cookie) and redirects to `/dashboard`.
//!
//! `main.rs` reads the environment; tests build the same [`router`] with their
//! own [`AppState`].
#![forbid(unsafe_code)]

pub mod config;
mod form;
mod pages;
mod routes;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use config::{AppUrl, SessionSecret};
use session::{CookiePolicy, SessionSigner};

/// Forms here are a few hundred bytes; anything much larger is not ours.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Pages are self-contained: no scripts, no external resources, forms post only to this app.
const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    magicauth: magicauth::Client,
    callback_url: String,
    signer: SessionSigner,
    cookies: CookiePolicy,
}

impl AppState {
    /// `magicauth` is the API client; `app_url` is this app's public origin
    /// (links lead to its `/auth/callback`); `secret` signs session cookies.
    pub fn new(magicauth: magicauth::Client, app_url: &AppUrl, secret: &SessionSecret) -> Self {
        Self {
            inner: Arc::new(Inner {
                magicauth,
                callback_url: app_url.callback_url(),
                signer: SessionSigner::new(secret),
                cookies: CookiePolicy {
                    secure: app_url.is_https(),
                },
            }),
        }
    }
}

/// Every route of the app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(routes::sign_in_form))
        .route("/send-link", post(routes::send_link))
        .route(
            "/auth/callback",
            get(routes::confirm_sign_in).post(routes::complete_sign_in),
        )
        .route("/dashboard", get(routes::dashboard))
        .route("/logout", post(routes::logout))
        .fallback(routes::not_found)
        .layer(middleware::from_fn(reject_cross_site_posts))
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http()
                // The path only: the callback's query string is a live sign-in token.
                .make_span_with(|request: &Request| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Headers every page gets unless its handler chose otherwise.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE));
    headers
        .entry(X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    headers
        .entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    response
}

/// Refuses form posts that another site's page made. `SameSite=Lax` already
/// keeps the session cookie off them; this also stops "login CSRF", where a
/// hostile page posts the attacker's own magic token so the victim ends up
/// signed in to the attacker's account. Browsers send `Sec-Fetch-Site` on every
/// request; clients that do not (curl, older browsers) are let through.
async fn reject_cross_site_posts(request: Request, next: Next) -> Response {
    let cross_site = request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if request.method() == Method::POST && cross_site {
        return html_response(
            StatusCode::FORBIDDEN,
            pages::problem(
                "Request refused",
                "This form was sent from another website. Please use the form on this site.",
            ),
        );
    }
    next.run(request).await
}

fn html_response(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

/// `N` bytes from the OS's random source.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without randomness there are no safe secrets or session ids: stop rather than go on.
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    bytes
}
