//! Rust errors become the exception classes defined in `magicauth/errors.py`,
//! with `code`, `status` and `retry_after` set and the Rust error chained as
//! `__cause__`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    _native,
    NativeError,
    PyException,
    "The underlying Rust error (attached as `__cause__` of MagicAuth exceptions)."
);

/// The Python class name for an error, per SDK.md's table.
fn class_name(error: &magicauth::Error) -> &'static str {
    use magicauth::Error as E;
    match error {
        E::InvalidToken(_) => "InvalidTokenError",
        E::TokenAlreadyUsed(_) => "TokenAlreadyUsedError",
        E::TokenExpired(_) => "TokenExpiredError",
        E::InvalidAppKey(_) => "AuthenticationError",
        E::Forbidden(_) => "PermissionDeniedError",
        E::RateLimited { .. } => "RateLimitError",
        E::InvalidRequest(_) => "InvalidRequestError",
        E::Server(_) => "ServerError",
        E::Connection { .. } => "APIConnectionError",
        E::Timeout { .. } => "APITimeoutError",
        E::InvalidSession(_) => "InvalidSessionError",
        E::Configuration(_) => "ConfigurationError",
        _ => "MagicAuthError",
    }
}

/// Builds the Python exception for `error`.
pub fn to_py_err(py: Python<'_>, error: magicauth::Error) -> PyErr {
    match build(py, &error) {
        Ok(err) => err,
        // The errors module failed to import: still raise something meaningful.
        Err(import_error) => import_error,
    }
}

fn build(py: Python<'_>, error: &magicauth::Error) -> PyResult<PyErr> {
    let module = py.import("magicauth.errors")?;
    let class = module.getattr(class_name(error))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("code", error.code())?;
    kwargs.set_item("status", error.status())?;
    kwargs.set_item("retry_after", error.retry_after().map(|d| d.as_secs_f64()))?;
    kwargs.set_item("raw_body", error.raw_body())?;
    let exception = class.call((error.message(),), Some(&kwargs))?;
    let cause = NativeError::new_err(error.describe()).into_value(py);
    exception.setattr("__cause__", cause)?;
    Ok(PyErr::from_value(exception))
}
