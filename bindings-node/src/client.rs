//! `NativeClient`: the Rust client behind the JavaScript `Client` class.

use std::future::Future;
use std::time::Duration;

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue};
use napi::{Env, Result};
use napi_derive::napi;

use crate::error::{rejection, to_js_error};
use crate::runtime;
use crate::types::{ClientOptions, SendLinkResponse, SessionClaims, Verification};

/// A MagicAuth client: one connection pool, shared by every call.
#[napi]
pub struct NativeClient {
    inner: magicauth::Client,
}

#[napi]
impl NativeClient {
    /// Options left out come from `MAGICAUTH_APP_KEY` / `MAGICAUTH_BASE_URL`.
    #[napi(constructor)]
    pub fn new(env: Env, options: Option<ClientOptions>) -> Result<Self> {
        client(options)
            .map(|inner| Self { inner })
            .map_err(|error| to_js_error(&env, &error))
    }

    /// The API base URL in use.
    #[napi(getter)]
    pub fn base_url(&self) -> String {
        self.inner.base_url().to_owned()
    }

    /// Emails a sign-in link to `email`, leading to `redirectUrl` (one of the
    /// app's allowed URLs; its first one when left out).
    #[napi(ts_return_type = "Promise<SendLinkResponse>")]
    pub fn send_link<'env>(
        &self,
        env: &'env Env,
        email: String,
        redirect_url: Option<String>,
    ) -> Result<PromiseRaw<'env, SendLinkResponse>> {
        let client = self.inner.clone();
        settle(env, async move {
            client.send_link(&email, redirect_url.as_deref()).await.map(Into::into)
        })
    }

    /// Exchanges a link's token for the user and a session JWT (single-use).
    #[napi(ts_return_type = "Promise<Verification>")]
    pub fn verify_token<'env>(&self, env: &'env Env, token: String) -> Result<PromiseRaw<'env, Verification>> {
        let client = self.inner.clone();
        settle(env, async move { client.verify_token(&token).await.map(Into::into) })
    }

    /// Checks a session JWT offline against the server's cached public keys.
    #[napi(ts_return_type = "Promise<SessionClaims>")]
    pub fn verify_session<'env>(&self, env: &'env Env, jwt: String) -> Result<PromiseRaw<'env, SessionClaims>> {
        let client = self.inner.clone();
        settle(env, async move { client.verify_session(&jwt).await.map(Into::into) })
    }
}

fn client(options: Option<ClientOptions>) -> std::result::Result<magicauth::Client, magicauth::Error> {
    let mut builder =
        magicauth::Client::builder().user_agent(format!("magicauth-node/{} (rust core)", env!("CARGO_PKG_VERSION")));
    if let Some(options) = options {
        if let Some(key) = options.app_key {
            builder = builder.app_key(key);
        }
        if let Some(url) = options.base_url {
            builder = builder.base_url(url);
        }
        if let Some(ms) = options.timeout_ms {
            // Negative or not a number: not a duration at all. Zero is the core's to refuse.
            let timeout = Duration::try_from_secs_f64(ms / 1000.0)
                .map_err(|_| magicauth::Error::configuration("timeoutMs must be a positive number of milliseconds"))?;
            builder = builder.timeout(timeout);
        }
        if let Some(n) = options.max_retries {
            if !(n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n)) {
                return Err(magicauth::Error::configuration(
                    "maxRetries must be a non-negative integer",
                ));
            }
            // In range and integral, checked above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let retries = n as u32;
            builder = builder.max_retries(retries);
        }
    }
    builder.from_env().build()
}

/// Runs `call` on the I/O thread and returns a Promise of its outcome; a core
/// error rejects it with a JavaScript error carrying the error's fields as
/// properties (built on the JavaScript thread).
fn settle<'env, T, F>(env: &'env Env, call: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = std::result::Result<T, magicauth::Error>> + Send + 'static,
{
    runtime::spawn(env, call, rejection)
}
