//! The handlers. Each maps MagicAuth's outcomes to a page a person can act
//! on; error details go to the log, never to the browser.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, REFERRER_POLICY, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use magicauth::Error;

use crate::form::FormFields;
use crate::pages::{self, Notice};
use crate::session::{SESSION_COOKIE, Session, read_cookie};
use crate::{AppState, html_response, random_bytes};

const FLASH_COOKIE: &str = "flash";
/// Long enough to survive the redirect, short enough not to linger.
const FLASH_MAX_AGE_SECS: i64 = 60;

/// One-time messages carried across a redirect in a cookie. The cookie holds a
/// fixed code, never text, so nobody can make the page say something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flash {
    SignedOut,
    SignInRequired,
    SessionEnded,
}

impl Flash {
    fn code(self) -> &'static str {
        match self {
            Flash::SignedOut => "signed_out",
            Flash::SignInRequired => "sign_in_required",
            Flash::SessionEnded => "session_ended",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        [Flash::SignedOut, Flash::SignInRequired, Flash::SessionEnded]
            .into_iter()
            .find(|flash| flash.code() == code)
    }

    fn notice(self) -> Notice {
        match self {
            Flash::SignedOut => Notice::Info("You have signed out.".into()),
            Flash::SignInRequired => Notice::Info("Please sign in to see that page.".into()),
            Flash::SessionEnded => Notice::Problem("Your session has ended. Please sign in again.".into()),
        }
    }
}

impl AppState {
    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The signed-in user, if the request carries a valid, unexpired session cookie.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let value = read_cookie(headers, SESSION_COOKIE)?;
        self.inner.signer.open(value, Self::now())
    }

    /// A 303 to `location` that sets the flash cookie.
    fn redirect_with_flash(&self, location: &str, flash: Flash) -> Response {
        let mut response = Redirect::to(location).into_response();
        let cookie = self.inner.cookies.set(FLASH_COOKIE, flash.code(), FLASH_MAX_AGE_SECS);
        response.headers_mut().append(SET_COOKIE, cookie);
        response
    }
}

/// `GET /`
pub async fn sign_in_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let flash_cookie = read_cookie(&headers, FLASH_COOKIE);
    let notice = flash_cookie.and_then(Flash::from_code).map(Flash::notice);
    let session = state.session(&headers);
    let html = pages::sign_in(notice.as_ref(), "", session.as_ref().map(|s| s.email.as_str()));
    let mut response = html_response(StatusCode::OK, html);
    if flash_cookie.is_some() {
        // Shown once.
        let cleared = state.inner.cookies.clear(FLASH_COOKIE);
        response.headers_mut().append(SET_COOKIE, cleared);
    }
    response
}

/// `POST /send-link` with field `email`.
pub async fn send_link(State(state): State<AppState>, form: FormFields) -> Response {
    let email = form.get("email").unwrap_or_default().trim();
    if email.is_empty() {
        return form_problem(StatusCode::BAD_REQUEST, email, "Please enter your email address.");
    }
    // MagicAuth answers alike for known and unknown addresses (the user is
    // created on first sign-in), so this page cannot reveal who has an account.
    match state
        .inner
        .magicauth
        .send_link(email, Some(&state.inner.callback_url))
        .await
    {
        Ok(sent) => html_response(
            StatusCode::OK,
            pages::check_email(email, Duration::from_secs(sent.expires_in)),
        ),
        // `invalid_request` is about the address: the callback URL was checked at startup.
        Err(Error::InvalidRequest(detail)) if detail.code == "invalid_request" => form_problem(
            StatusCode::BAD_REQUEST,
            email,
            "That does not look like an email address. Please check it and try again.",
        ),
        Err(Error::RateLimited { retry_after, .. }) => {
            let wait = retry_after.map_or_else(|| "a few minutes".to_owned(), pages::describe_duration);
            let mut response = form_problem(
                StatusCode::TOO_MANY_REQUESTS,
                email,
                &format!("Too many sign-in links were requested. Please try again in {wait}."),
            );
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(after.as_secs()));
            }
            response
        }
        Err(error) => {
            // The key, a wrong base URL or MagicAuth being down: the operator's
            // problem, logged for them; the person gets a plain message.
            tracing::error!(code = error.code(), error = %error, "send_link failed");
            form_problem(
                StatusCode::SERVICE_UNAVAILABLE,
                email,
                "We could not send a sign-in link just now. Please try again in a moment.",
            )
        }
    }
}

fn form_problem(status: StatusCode, email: &str, message: &str) -> Response {
    html_response(
        status,
        pages::sign_in(Some(&Notice::Problem(message.into())), email, None),
    )
}

/// `GET /auth/callback?magic_token=…`: shows a Continue button and does not
/// verify. Mail security scanners (Outlook Safe Links, Mimecast, …) fetch
/// links to inspect them; verifying here would let them use up the token
/// before the person clicks.
pub async fn confirm_sign_in(RawQuery(query): RawQuery) -> Response {
    let response = match query.as_deref().and_then(magicauth::token_from_url) {
        Some(token) => html_response(StatusCode::OK, pages::continue_sign_in(&token)),
        None => incomplete_link(),
    };
    keep_token_private(response)
}

/// `POST /auth/callback` with field `magic_token`: the person pressed Continue.
pub async fn complete_sign_in(State(state): State<AppState>, form: FormFields) -> Response {
    let Some(token) = form.get("magic_token").map(str::trim).filter(|t| !t.is_empty()) else {
        return keep_token_private(incomplete_link());
    };
    let verification = match state.inner.magicauth.verify_token(token).await {
        Ok(verification) => verification,
        Err(error) => return keep_token_private(verify_failed(&error)),
    };
    // The API call above is the proof; this checks the session JWT offline
    // (signature, issuer, audience, lifetime), and the app's session lasts as long as it.
    let claims = match state.inner.magicauth.verify_session(&verification.token).await {
        Ok(claims) if claims.sub == verification.user.id.to_string() => claims,
        Ok(_) => {
            tracing::error!(user_id = verification.user.id, "session JWT names another user");
            return keep_token_private(sign_in_unavailable());
        }
        Err(error) => {
            tracing::error!(code = error.code(), error = %error, "verify_session failed");
            return keep_token_private(sign_in_unavailable());
        }
    };
    let session = Session {
        user_id: verification.user.id,
        email: verification.user.email,
        expires_at: claims.exp,
        id: URL_SAFE_NO_PAD.encode(random_bytes::<16>()),
    };
    tracing::info!(user_id = session.user_id, "signed in");
    let cookie = state.inner.cookies.set(
        SESSION_COOKIE,
        &state.inner.signer.seal(&session),
        session.expires_at - AppState::now(),
    );
    let mut response = Redirect::to("/dashboard").into_response();
    response.headers_mut().append(SET_COOKIE, cookie);
    keep_token_private(response)
}

/// The page for a token MagicAuth refused. Expired and used links are gone
/// for good (410); anything else about the token is a bad request (400).
fn verify_failed(error: &Error) -> Response {
    let (status, title, explanation) = match error {
        Error::TokenExpired(_) => (
            StatusCode::GONE,
            "This link has expired",
            "Sign-in links work for a short time only, and this one is too old.",
        ),
        Error::TokenAlreadyUsed(_) => (
            StatusCode::GONE,
            "This link has already been used",
            "Each sign-in link works once. If you already signed in with it, you may still be signed in.",
        ),
        Error::InvalidToken(_) => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The link may have been cut short when it was copied. Links also only work for the site that sent them.",
        ),
        _ => {
            tracing::error!(code = error.code(), error = %error, "verify_token failed");
            return sign_in_unavailable();
        }
    };
    html_response(status, pages::link_problem(title, explanation))
}

fn incomplete_link() -> Response {
    html_response(
        StatusCode::BAD_REQUEST,
        pages::link_problem(
            "This link is incomplete",
            "The sign-in link has no token. It may have been cut short when it was copied.",
        ),
    )
}

fn sign_in_unavailable() -> Response {
    html_response(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::link_problem(
            "We could not sign you in",
            "Something went wrong on our side. If your link no longer works, ask for a new one below.",
        ),
    )
}

/// Pages whose URL or form carries a token: no `Referer` to other sites
/// (images, links the person follows), and no copy in any cache.
fn keep_token_private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard`: for signed-in users only.
pub async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.session(&headers) {
        Some(session) => {
            let mut response = html_response(StatusCode::OK, pages::dashboard(&session));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None if read_cookie(&headers, SESSION_COOKIE).is_some() => {
            // Expired, or not signed by us: drop it.
            let mut response = state.redirect_with_flash("/", Flash::SessionEnded);
            let cleared = state.inner.cookies.clear(SESSION_COOKIE);
            response.headers_mut().append(SET_COOKIE, cleared);
            response
        }
        None => state.redirect_with_flash("/", Flash::SignInRequired),
    }
}

/// `POST /logout`
pub async fn logout(State(state): State<AppState>) -> Response {
    let mut response = state.redirect_with_flash("/", Flash::SignedOut);
    let cleared = state.inner.cookies.clear(SESSION_COOKIE);
    response.headers_mut().append(SET_COOKIE, cleared);
    response
}

pub async fn not_found() -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        pages::problem("Page not found", "There is nothing at this address."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_codes_round_trip_and_unknown_codes_are_ignored() {
        for flash in [Flash::SignedOut, Flash::SignInRequired, Flash::SessionEnded] {
            assert_eq!(Flash::from_code(flash.code()), Some(flash));
        }
        assert_eq!(Flash::from_code("<script>"), None);
    }
}
