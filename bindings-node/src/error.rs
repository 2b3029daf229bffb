//! Core errors become JavaScript `Error`s that carry the core error's fields
//! as properties; `lib/errors.js` turns them into the exported classes
//! (`TokenExpiredError`, …) and keeps this native error as their `cause`.
//!
//! The native error: `message` is the core error with its source chain,
//! `code` the upper-case code (`TOKEN_USED`), `kind` the core variant
//! (`TokenAlreadyUsed`), `reason` the bare message, and `status`,
//! `retryAfter` (seconds) and `rawBody` when the core error has them.

use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::{Env, JsValue, sys};

/// The core variant's name, which picks the JavaScript class.
fn kind(error: &magicauth::Error) -> &'static str {
    use magicauth::Error as E;
    match error {
        E::InvalidToken(_) => "InvalidToken",
        E::TokenAlreadyUsed(_) => "TokenAlreadyUsed",
        E::TokenExpired(_) => "TokenExpired",
        E::InvalidAppKey(_) => "InvalidAppKey",
        E::Forbidden(_) => "Forbidden",
        E::RateLimited { .. } => "RateLimited",
        E::InvalidRequest(_) => "InvalidRequest",
        E::Server(_) => "Server",
        E::Connection { .. } => "Connection",
        E::Timeout { .. } => "Timeout",
        E::InvalidSession(_) => "InvalidSession",
        E::Configuration(_) => "Configuration",
        // A variant added to the core later: the base class until mapped here.
        _ => "MagicAuth",
    }
}

/// The JavaScript error for `error`, ready to be thrown.
pub fn to_js_error(env: &Env, error: &magicauth::Error) -> napi::Error {
    match build(env, error) {
        Ok(object) => napi::Error::from(object.to_unknown()),
        Err(failure) => failure,
    }
}

/// The JavaScript error for `error` as a value, to reject a Promise with.
pub fn rejection(env: &Env, error: &magicauth::Error) -> sys::napi_value {
    match build(env, error) {
        Ok(object) => object.raw(),
        Err(failure) => crate::runtime::error_value(env, failure),
    }
}

fn build<'env>(env: &'env Env, error: &magicauth::Error) -> napi::Result<Object<'env>> {
    let chain = error.describe();
    let code = error.code().to_ascii_uppercase();
    let mut object = env.create_error(napi::Error::from_reason(chain))?;
    object.set_named_property("code", code)?;
    object.set_named_property("kind", kind(error))?;
    object.set_named_property("reason", error.message())?;
    if let Some(status) = error.status() {
        object.set_named_property("status", u32::from(status))?;
    }
    if let Some(wait) = error.retry_after() {
        object.set_named_property("retryAfter", wait.as_secs_f64())?;
    }
    if let Some(body) = error.raw_body() {
        object.set_named_property("rawBody", body)?;
    }
    Ok(object)
}
