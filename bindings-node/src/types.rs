//! The results of the client, as plain JavaScript objects with camelCase
//! fields. Timestamps of the API become `Date`s; the JWT's `iat`/`exp` stay
//! numbers (Unix seconds), as in every JWT library.

use chrono::{DateTime, Utc};
use napi_derive::napi;

/// Options of `new NativeClient(options)`; left-out ones come from the environment.
#[napi(object)]
pub struct ClientOptions {
    /// The app's secret key (`mk_…`); default `MAGICAUTH_APP_KEY`.
    pub app_key: Option<String>,
    /// The API's base URL; default `MAGICAUTH_BASE_URL`, else `https://magicauth.app/api`.
    pub base_url: Option<String>,
    /// Timeout of each attempt in milliseconds (default 10000).
    pub timeout_ms: Option<f64>,
    /// Retries after the first attempt (default 2).
    pub max_retries: Option<f64>,
}

/// Result of `sendLink`.
#[napi(object)]
pub struct SendLinkResponse {
    /// Seconds until the emailed link expires.
    pub expires_in: u32,
}

impl From<magicauth::SendLinkResponse> for SendLinkResponse {
    fn from(sent: magicauth::SendLinkResponse) -> Self {
        Self {
            expires_in: u32::try_from(sent.expires_in).unwrap_or(u32::MAX),
        }
    }
}

/// A user of your app.
#[napi(object, use_nullable = true)]
pub struct User {
    /// Positive integer, unique within the server.
    pub id: i64,
    /// The address, lower-cased.
    pub email: String,
    /// Display name; `null` unless set by the operator.
    pub name: Option<String>,
    /// First successful sign-in; never changes afterwards.
    pub email_verified_at: DateTime<Utc>,
    /// This sign-in.
    pub last_login_at: DateTime<Utc>,
}

/// Result of `verifyToken`: the signed-in user and a session JWT.
#[napi(object)]
pub struct Verification {
    pub user: User,
    /// Session JWT (EdDSA); check it later with `verifySession`.
    pub token: String,
    /// The URL the link was sent to.
    pub redirect_url: String,
}

impl From<magicauth::Verification> for Verification {
    fn from(v: magicauth::Verification) -> Self {
        Self {
            user: User {
                id: v.user.id,
                email: v.user.email,
                name: v.user.name,
                email_verified_at: v.user.email_verified_at,
                last_login_at: v.user.last_login_at,
            },
            token: v.token,
            redirect_url: v.redirect_url,
        }
    }
}

/// The checked claims of a session JWT.
#[napi(object)]
pub struct SessionClaims {
    /// The user id, as a string.
    pub sub: String,
    pub email: String,
    /// Your app's id.
    pub aud: String,
    /// The server's public URL.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl From<magicauth::SessionClaims> for SessionClaims {
    fn from(c: magicauth::SessionClaims) -> Self {
        Self {
            sub: c.sub,
            email: c.email,
            aud: c.aud,
            iss: c.iss,
            iat: c.iat,
            exp: c.exp,
            jti: c.jti,
        }
    }
}
