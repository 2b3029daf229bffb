//! The native part of the `magicauth` npm package: a thin layer that converts
//! between JavaScript and the Rust client in `sdk-core`. The public API (the
//! `Client` class, the error classes, docs) is the hand-written JavaScript in
//! `lib/`; this module is loaded through the generated `native/index.js`.

mod client;
mod error;
mod runtime;
mod types;

use napi_derive::napi;

/// mimalloc for the module's own (Rust) allocations, as napi-rs projects do:
/// each call allocates its request, headers and response on the I/O thread
/// and frees some of them on the JavaScript thread, which glibc's malloc does
/// at a cost. Node's own memory is not affected.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `magic_token` of a callback URL or query string, or `null`.
#[napi]
pub fn token_from_url(url_or_query: String) -> Option<String> {
    magicauth::token_from_url(&url_or_query)
}

/// The version of the native module (the workspace version).
#[napi]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
