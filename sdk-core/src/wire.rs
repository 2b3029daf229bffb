//! The HTTP contract's JSON shapes, shared by the reference server and the client.
//!
//! These types are the single definition of the wire format: the server
//! serialises them and the client deserialises them, so the two cannot drift.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Body of `POST /api/send-link`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendLinkRequest {
    /// Address the magic link is emailed to.
    #[cfg_attr(feature = "openapi", schema(example = "user@example.com"))]
    pub email: String,
    /// The app's secret key (`mk_…`).
    pub app_key: String,
    /// Where the link leads; must match one of the app's allowed redirect URLs.
    /// Without it the app's first allowed redirect URL is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "https://yourapp.com/auth/callback"))]
    pub redirect_url: Option<String>,
}

impl fmt::Debug for SendLinkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendLinkRequest")
            .field("email", &self.email)
            .field("app_key", &"**redacted**")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// Success body of `POST /api/send-link`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendLinkResponse {
    /// Always `true`.
    pub success: bool,
    /// Seconds until the emailed link expires.
    #[cfg_attr(feature = "openapi", schema(example = 900))]
    pub expires_in: u64,
}

/// Body of `POST /api/verify-token`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyTokenRequest {
    /// The `magic_token` query parameter of the link.
    pub token: String,
    /// The app's secret key (`mk_…`).
    pub app_key: String,
}

impl fmt::Debug for VerifyTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyTokenRequest")
            .field("token", &"**redacted**")
            .field("app_key", &"**redacted**")
            .finish()
    }
}

/// A user of one app.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Positive integer, unique within the server.
    #[cfg_attr(feature = "openapi", schema(example = 123))]
    pub id: i64,
    /// The address, lower-cased.
    pub email: String,
    /// Display name; `null` unless set by the operator.
    pub name: Option<String>,
    /// Time of the first successful verification; never changes afterwards.
    pub email_verified_at: DateTime<Utc>,
    /// Time of this verification.
    pub last_login_at: DateTime<Utc>,
}

/// Success body of `POST /api/verify-token`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyTokenResponse {
    /// Always `true`.
    pub success: bool,
    /// The signed-in user.
    pub user: User,
    /// Session JWT (EdDSA), verifiable with `GET /.well-known/jwks.json`.
    pub token: String,
    /// The redirect URL the link was sent to.
    pub redirect_url: String,
}

impl fmt::Debug for VerifyTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyTokenResponse")
            .field("success", &self.success)
            .field("user", &self.user)
            .field("token", &"**redacted**")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// Body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// Human-readable message.
    pub error: String,
    /// Stable machine-readable code.
    pub code: ErrorCode,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: error.into(),
            code,
        }
    }
}

/// The stable error codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing or mistyped field, a bad email or URL.
    InvalidRequest,
    /// Token unknown, malformed, or issued for another app.
    InvalidToken,
    /// The token was verified before.
    TokenUsed,
    /// The token is older than its app's TTL.
    TokenExpired,
    /// app_key unknown or rotated away.
    InvalidAppKey,
    /// The app is disabled.
    AppDisabled,
    /// redirect_url matches no allowed URL of the app.
    RedirectNotAllowed,
    /// Request body over 16 KiB.
    PayloadTooLarge,
    /// Burst limit hit (per app, or per email address).
    RateLimited,
    /// The app's monthly link quota is used up.
    QuotaExceeded,
    /// Unknown route.
    NotFound,
    /// Known route, wrong method.
    MethodNotAllowed,
    /// Anything unexpected on the server.
    InternalError,
    /// A code this version does not know (newer server); kept for forward compatibility.
    #[serde(other)]
    Unknown,
}

// Written by hand so the schema lists the contract's codes and not `unknown`,
// which exists only for clients talking to a newer server.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("Stable machine-readable error code."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

impl ErrorCode {
    /// Every code the contract defines, in table order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidToken,
        ErrorCode::TokenUsed,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidAppKey,
        ErrorCode::AppDisabled,
        ErrorCode::RedirectNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InternalError,
    ];

    /// The code as it appears on the wire (`"token_used"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenUsed => "token_used",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::InvalidAppKey => "invalid_app_key",
            ErrorCode::AppDisabled => "app_disabled",
            ErrorCode::RedirectNotAllowed => "redirect_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status the contract pairs with this code.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidToken | ErrorCode::TokenUsed | ErrorCode::TokenExpired => 400,
            ErrorCode::InvalidAppKey => 401,
            ErrorCode::AppDisabled | ErrorCode::RedirectNotAllowed => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
            ErrorCode::InternalError | ErrorCode::Unknown => 500,
        }
    }

    /// The contract's fixed message for this code, where it has one.
    pub fn fixed_message(&self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::InvalidToken => "Invalid token",
            ErrorCode::TokenUsed => "Token already used",
            ErrorCode::TokenExpired => "Token expired",
            ErrorCode::InvalidAppKey => "Invalid app_key",
            ErrorCode::AppDisabled => "App disabled",
            ErrorCode::RedirectNotAllowed => "Redirect URL not whitelisted",
            ErrorCode::RateLimited => "Rate limit exceeded",
            ErrorCode::QuotaExceeded => "Monthly limit exceeded",
            ErrorCode::InternalError => "Internal server error",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An app as `GET /api/app` describes it to its own key holder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppInfo {
    /// The app's id: the `aud` of its session JWTs.
    #[cfg_attr(feature = "openapi", schema(example = "app_3hK9q2LmZx7Yb1Rt0PwA"))]
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Success body of `GET /api/app`: what a client needs to check session JWTs offline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppInfoResponse {
    /// Always `true`.
    pub success: bool,
    /// The app the key belongs to.
    pub app: AppInfo,
    /// The `iss` of session JWTs: the server's public URL.
    pub issuer: String,
}

/// Claims of the session JWT issued by `POST /api/verify-token`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionClaims {
    /// Issuer: the server's public URL.
    pub iss: String,
    /// Subject: the user id, as a string.
    pub sub: String,
    /// Audience: the app's id.
    pub aud: String,
    /// The user's email address.
    pub email: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: i64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// One public key of `GET /.well-known/jwks.json` (RFC 8037 OKP key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// Key id, matched against the JWT header's `kid`.
    pub kid: String,
    /// Algorithm: `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Use: `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// Body of `GET /.well-known/jwks.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwkSet {
    /// The signing keys currently accepted.
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_on_the_wire() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn unknown_codes_are_tolerated() {
        let body: ErrorBody = serde_json::from_str(r#"{"success":false,"error":"x","code":"brand_new"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn debug_hides_secrets() {
        let req = SendLinkRequest {
            email: "a@b.co".into(),
            app_key: "mk_secret".into(),
            redirect_url: None,
        };
        assert!(!format!("{req:?}").contains("mk_secret"));
        let req = VerifyTokenRequest {
            token: "tok_secret".into(),
            app_key: "mk_secret".into(),
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn timestamps_serialise_as_rfc3339_utc() {
        let user = User {
            id: 1,
            email: "a@b.co".into(),
            name: None,
            email_verified_at: DateTime::from_timestamp(1_763_037_000, 0).unwrap(),
            last_login_at: DateTime::from_timestamp(1_763_037_900, 0).unwrap(),
        };
        let json = serde_json::to_value(&user).unwrap();
        assert_eq!(json["email_verified_at"], "2025-11-13T12:30:00Z");
        assert_eq!(json["name"], serde_json::Value::Null);
    }
}
