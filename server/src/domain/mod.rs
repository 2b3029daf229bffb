//! Domain types shared by the HTTP layer, storage and mailer: validated
//! email addresses and redirect URLs, secrets (magic tokens, app keys) and
//! their hashes, and duration parsing for configuration.
//!
//! Everything here is pure (apart from reading the OS CSPRNG) so it can be
//! tested without a database or network.

mod duration;
mod email;
mod redirect;
mod secret;

pub use duration::{format_duration, parse_duration};
pub use email::EmailAddress;
pub use redirect::{RedirectAllowList, RedirectUrl};
pub use secret::{AppKey, MagicToken, SecretHash, new_app_id, random_base62, random_urlsafe};

/// A user-supplied value failed validation. `message` always starts with the
/// field name (e.g. `email: not a valid email address`) so it can be returned
/// to API clients as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    /// Builds an error whose message is `"{field}: {detail}"`.
    pub(crate) fn new(field: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            field,
            message: format!("{field}: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_error_message_names_the_field() {
        let err = ValidationError::new("email", "not a valid email address");
        assert_eq!(err.field, "email");
        assert_eq!(err.to_string(), "email: not a valid email address");
        assert_eq!(err.message, err.to_string());
    }
}
