//! The native part of the `magicauth` Python package: a thin layer that
//! converts between Python and the Rust client in `sdk-core`. The public API
//! (classes, exceptions, docs) is written in Python, in `python/magicauth`.

mod client;
mod error;
mod runtime;

use pyo3::prelude::*;

/// The `magic_token` of a callback URL or query string, or `None`.
#[pyfunction]
fn token_from_url(url_or_query: &str) -> Option<String> {
    magicauth::token_from_url(url_or_query)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::NativeClient>()?;
    m.add_function(wrap_pyfunction!(token_from_url, m)?)?;
    m.add("NativeError", m.py().get_type::<error::NativeError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
