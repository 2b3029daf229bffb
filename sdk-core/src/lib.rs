//! Client for the MagicAuth passwordless sign-in API.
//!
//! The [`wire`] module holds the contract's JSON shapes; it is always built,
//! and the reference server uses it too.
#![forbid(unsafe_code)]

pub mod wire;
