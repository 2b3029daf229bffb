//! The client against a mock server (wiremock on 127.0.0.1), through the public API only.
//!
//! One binary, several modules: error mapping, the requests sent, retries,
//! timeouts, session JWTs (JWKS), configuration and `token_from_url`.
#![cfg(feature = "client")]

mod config;
mod errors;
mod requests;
mod retries;
mod sessions;
mod support;
mod timeouts;
mod token_from_url;
