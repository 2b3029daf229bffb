#![doc = include_str!("../README.md")]
//!
//! ## Handling errors
//!
//! Match on [`Error`] to tell an expired link from a used one:
//!
//! ```no_run
//! # async fn run(client: magicauth::Client, token: &str) {
//! match client.verify_token(token).await {
//!     Ok(v) => println!("welcome {}", v.user.email),
//!     Err(magicauth::Error::TokenExpired(_) | magicauth::Error::TokenAlreadyUsed(_)) => {
//!         println!("this link no longer works: request a new one")
//!     }
//!     Err(other) => eprintln!("sign-in failed: {other}"),
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod wire;

#[cfg(feature = "client")]
mod client;
mod error;
#[cfg(feature = "client")]
mod retry;
#[cfg(feature = "client")]
mod session;
#[cfg(feature = "client")]
mod token;

pub use error::{Error, ErrorDetail};
pub use wire::{SessionClaims, User};

#[cfg(feature = "client")]
pub use client::{Client, ClientBuilder, DEFAULT_BASE_URL, SendLinkResponse, Verification};
#[cfg(feature = "client")]
pub use token::token_from_url;
