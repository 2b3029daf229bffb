//! HTML form bodies (`application/x-www-form-urlencoded`), read into name/value
//! pairs. Malformed requests get a readable page, not axum's plain-text rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;

use crate::{html_response, pages};

/// The fields of a submitted form.
#[derive(Debug)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(unreadable(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        // Bytes honours the router's body limit.
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| unreadable(rejection.status()))?;
        Ok(Self(url::form_urlencoded::parse(&body).into_owned().collect()))
    }
}

fn unreadable(status: StatusCode) -> Response {
    html_response(
        status,
        pages::problem(
            "That did not work",
            "The form could not be read. Please go back and try again.",
        ),
    )
}
