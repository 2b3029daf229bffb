//! Offline checks of session JWTs against the server's JWKS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OnceCell};

use crate::wire::{AppInfoResponse, JwkSet, SessionClaims};
use crate::{Client, Error};

/// How long fetched keys are trusted before they are fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub(crate) struct SessionConfig {
    pub app_id: Option<String>,
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub min_refresh: Duration,
    pub max_age: Duration,
    pub leeway: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            app_id: None,
            issuer: None,
            jwks_url: None,
            min_refresh: Duration::from_secs(60),
            max_age: JWKS_MAX_AGE,
            leeway: Duration::from_secs(60),
        }
    }
}

/// What a valid session must name: this app, and this server.
#[derive(Clone, Debug)]
struct Expected {
    app_id: String,
    issuer: String,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Vec<u8>>,
    /// The last fetch that succeeded.
    fetched_at: Option<Instant>,
    /// The last fetch, whatever its outcome.
    attempted_at: Option<Instant>,
    /// Fetches made so far, so that a call that waited for another's fetch
    /// uses its outcome instead of fetching again.
    attempts: u64,
    /// How the last fetch failed, if it did.
    failure: Option<Error>,
}

pub(crate) struct SessionVerifier {
    config: SessionConfig,
    jwks_url: String,
    expected: OnceCell<Expected>,
    /// Only ever locked for a moment, never across a fetch.
    cache: std::sync::Mutex<KeyCache>,
    /// Held by the one call that is fetching the keys.
    fetching: Mutex<()>,
}

impl SessionVerifier {
    pub fn new(config: SessionConfig, base_url: &str) -> Self {
        let jwks_url = config.jwks_url.clone().unwrap_or_else(|| {
            // The JWKS sits at the server's root, beside the `/api` prefix.
            let root = base_url.strip_suffix("/api").unwrap_or(base_url);
            format!("{root}/.well-known/jwks.json")
        });
        Self {
            config,
            jwks_url,
            expected: OnceCell::new(),
            cache: std::sync::Mutex::new(KeyCache::default()),
            fetching: Mutex::new(()),
        }
    }

    pub async fn verify(&self, client: &Client, jwt: &str, now: DateTime<Utc>) -> Result<SessionClaims, Error> {
        let mut parts = jwt.trim().split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::session("malformed session token"));
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            kid: Option<String>,
        }
        let head: Header = decode_json(header)?;
        if head.alg != "EdDSA" {
            return Err(Error::session(format!("unsupported algorithm {:?}", head.alg)));
        }
        let kid = head.kid.ok_or_else(|| Error::session("session token has no key id"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| Error::session("malformed session token"))?;
        let key = self.key(client, &kid).await?;
        UnparsedPublicKey::new(&ED25519, &key)
            .verify(format!("{header}.{payload}").as_bytes(), &signature)
            .map_err(|_| Error::session("invalid session signature"))?;
        let claims: SessionClaims = decode_json(payload)?;

        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(0);
        let now = now.timestamp();
        // Saturating: `exp`/`iat` come from the token and may be extreme.
        if claims.exp.saturating_add(leeway) <= now {
            return Err(Error::session("session expired"));
        }
        if claims.iat.saturating_sub(leeway) > now {
            return Err(Error::session("session issued in the future"));
        }
        let expected = self.expected(client).await?;
        if claims.aud != expected.app_id {
            return Err(Error::session("session issued for another app"));
        }
        if claims.iss.trim_end_matches('/') != expected.issuer.trim_end_matches('/') {
            return Err(Error::session("session issued by another server"));
        }
        Ok(claims)
    }

    async fn expected(&self, client: &Client) -> Result<&Expected, Error> {
        self.expected
            .get_or_try_init(|| async {
                if let (Some(app_id), Some(issuer)) = (&self.config.app_id, &self.config.issuer) {
                    return Ok(Expected {
                        app_id: app_id.clone(),
                        issuer: issuer.clone(),
                    });
                }
                let info: AppInfoResponse = client.get(&client.api_url("app"), true).await?;
                Ok(Expected {
                    app_id: self.config.app_id.clone().unwrap_or(info.app.id),
                    issuer: self.config.issuer.clone().unwrap_or(info.issuer),
                })
            })
            .await
    }

    /// The public key of `kid`: from the cache, or fetched when the cache is
    /// old or the key unknown.
    ///
    /// Once keys have been fetched, fetches are at least `min_refresh` apart,
    /// whether they succeed or not, so tokens with made-up key ids cannot make
    /// every call wait for the server. One call fetches at a time; a call that
    /// has the key (only older than `max_age`) never waits for it, and one
    /// that has not uses the outcome of the fetch it waited for.
    async fn key(&self, client: &Client, kid: &str) -> Result<Vec<u8>, Error> {
        let (cached, attempts) = {
            let cache = self.cache();
            let cached = cache.keys.get(kid).cloned();
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < self.config.max_age);
            if fresh && let Some(key) = cached {
                return Ok(key);
            }
            let tried_lately = cache
                .attempted_at
                .is_some_and(|t| t.elapsed() < self.config.min_refresh);
            // Before the first good fetch there is nothing to fall back on,
            // so every call tries.
            if cache.fetched_at.is_some() && tried_lately {
                return cached.ok_or_else(unknown_key);
            }
            (cached, cache.attempts)
        };
        let _fetching = match (self.fetching.try_lock(), &cached) {
            (Ok(guard), _) => guard,
            // Another call is fetching: the key known so far will do.
            (Err(_), Some(key)) => return Ok(key.clone()),
            (Err(_), None) => self.fetching.lock().await,
        };
        {
            let cache = self.cache();
            if cache.attempts != attempts {
                // Fetched while this call waited.
                return match (cache.keys.get(kid), &cache.failure) {
                    (Some(key), _) => Ok(key.clone()),
                    (None, Some(failure)) => Err(failure.duplicate()),
                    (None, None) => Err(unknown_key()),
                };
            }
        }
        let fetched: Result<JwkSet, Error> = client.get(&self.jwks_url, false).await;
        let mut cache = self.cache();
        let now = Instant::now();
        cache.attempts += 1;
        cache.attempted_at = Some(now);
        match fetched {
            Ok(set) => {
                cache.keys = set
                    .keys
                    .into_iter()
                    .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
                    .filter_map(|k| Some((k.kid, B64.decode(k.x).ok()?)))
                    .collect();
                cache.fetched_at = Some(now);
                cache.failure = None;
                cache.keys.get(kid).cloned().ok_or_else(unknown_key)
            }
            Err(error) => {
                cache.failure = Some(error.duplicate());
                // The server is unreachable but the key is one it published:
                // keep accepting it rather than failing every session.
                cached.ok_or(error)
            }
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn unknown_key() -> Error {
    Error::session("session signed with an unknown key")
}

fn decode_json<T: DeserializeOwned>(segment: &str) -> Result<T, Error> {
    let bytes = B64
        .decode(segment)
        .map_err(|_| Error::session("malformed session token"))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::session("malformed session token"))
}
