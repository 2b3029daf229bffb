//! Client for the [MagicAuth] passwordless sign-in API.
//!
//! Send a single-use sign-in link by email, verify the token the link carries,
//! and check session JWTs offline against the server's published keys.
//!
//! ```no_run
//! # async fn run() -> Result<(), magicauth::Error> {
//! let client = magicauth::Client::from_env()?; // MAGICAUTH_APP_KEY, MAGICAUTH_BASE_URL
//!
//! // The sign-in form: email a link that leads back to your callback.
//! client.send_link("user@example.com", Some("https://yourapp.com/auth/callback")).await?;
//!
//! // The callback: exchange the link's token for the user and a session JWT.
//! let token = magicauth::token_from_url("https://yourapp.com/auth/callback?magic_token=…").unwrap();
//! let verification = client.verify_token(&token).await?;
//! println!("signed in: {} ({})", verification.user.email, verification.user.id);
//!
//! // Later requests: check the session JWT without calling the API.
//! let claims = client.verify_session(&verification.token).await?;
//! assert_eq!(claims.sub, verification.user.id.to_string());
//! # Ok(()) }
//! ```
//!
//! Errors are one enum, [`Error`], with a variant per kind of failure, so a
//! callback can tell an expired link from a used one:
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
//!
//! The [`wire`] module holds the HTTP contract's JSON shapes; it is always
//! built, and the reference server uses the same types.
//!
//! [MagicAuth]: https://magicauth.app
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
