//! The app's own session: a cookie holding who signed in and until when,
//! signed with HMAC-SHA256 so the browser can carry it but not change it.
//!
//! MagicAuth proves the user owns the address once; from then on the app keeps
//! its own session and no longer needs the magic token or the MagicAuth JWT.

use aws_lc_rs::hmac;
use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::SessionSecret;

pub const SESSION_COOKIE: &str = "session";

/// A signed-in user, as stored in the session cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// MagicAuth's user id.
    pub user_id: i64,
    pub email: String,
    /// Unix seconds; the session JWT's `exp`.
    pub expires_at: i64,
    /// Fresh on every sign-in, so no cookie from before sign-in is ever reused
    /// (session fixation), and a key for server-side revocation if one is added.
    pub id: String,
}

/// Seals sessions into cookie values and opens them again.
pub struct SessionSigner {
    key: hmac::Key,
}

impl SessionSigner {
    pub fn new(secret: &SessionSecret) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// `base64url(json) "." base64url(hmac)`: only URL-safe characters, so the
    /// value needs no quoting in a cookie.
    pub fn seal(&self, session: &Session) -> String {
        let json = serde_json::to_vec(session).expect("a Session always serialises");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The session in `value` if its signature is ours and it has not expired at `now`.
    pub fn open(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, tag) = value.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time comparison: timing says nothing about how much of a forged tag was right.
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let session: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.expires_at > now).then_some(session)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Attributes every cookie of this app gets.
#[derive(Clone, Copy, Debug)]
pub struct CookiePolicy {
    /// `Secure`, for apps served over https.
    pub secure: bool,
}

impl CookiePolicy {
    /// A `Set-Cookie` value. `value` must be cookie-safe (base64url or a fixed code).
    /// `SameSite=Lax` keeps the cookie off cross-site POSTs; `HttpOnly` keeps it
    /// away from scripts.
    pub fn set(&self, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{name}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            max_age_secs.max(0)
        );
        HeaderValue::from_str(&cookie).expect("cookie names and values are URL-safe ASCII")
    }

    /// A `Set-Cookie` value that deletes cookie `name`.
    pub fn clear(&self, name: &str) -> HeaderValue {
        self.set(name, "", 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SessionSigner {
        SessionSigner::new(&SessionSecret::new(vec![7; 32]).unwrap())
    }

    fn session() -> Session {
        Session {
            user_id: 42,
            email: "ada@example.com".into(),
            expires_at: 2_000,
            id: "sid".into(),
        }
    }

    #[test]
    fn sealed_sessions_open_until_they_expire() {
        let sealed = signer().seal(&session());
        assert_eq!(signer().open(&sealed, 1_999), Some(session()));
        assert_eq!(signer().open(&sealed, 2_000), None);
    }

    #[test]
    fn tampered_or_foreign_cookies_are_rejected() {
        let sealed = signer().seal(&session());
        let (_, tag) = sealed.split_once('.').unwrap();
        let mut forged = session();
        forged.email = "mallory@example.com".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(signer().open(&format!("{forged_payload}.{tag}"), 0), None);

        let other = SessionSigner::new(&SessionSecret::new(vec![8; 32]).unwrap());
        assert_eq!(other.open(&sealed, 0), None);
        for junk in ["", ".", "abc", "abc.def", "!!.!!"] {
            assert_eq!(signer().open(junk, 0), None, "{junk}");
        }
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; flash=signed_out"));
        headers.append(COOKIE, HeaderValue::from_static("session=abc.def"));
        assert_eq!(read_cookie(&headers, "session"), Some("abc.def"));
        assert_eq!(read_cookie(&headers, "flash"), Some("signed_out"));
        assert_eq!(read_cookie(&headers, "sess"), None);
    }

    #[test]
    fn cookie_attributes() {
        let plain = CookiePolicy { secure: false }.set("session", "v", 60);
        assert_eq!(plain, "session=v; Max-Age=60; Path=/; HttpOnly; SameSite=Lax");
        let secure = CookiePolicy { secure: true }.clear("session");
        assert_eq!(secure, "session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure");
    }
}
