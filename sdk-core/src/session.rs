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
    pub leeway: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            app_id: None,
            issuer: None,
            jwks_url: None,
            min_refresh: Duration::from_secs(60),
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
    fetched_at: Option<Instant>,
}

pub(crate) struct SessionVerifier {
    config: SessionConfig,
    jwks_url: String,
    expected: OnceCell<Expected>,
    cache: Mutex<KeyCache>,
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
            cache: Mutex::new(KeyCache::default()),
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
    /// old or the key unknown (at most once per `min_refresh` for the latter).
    async fn key(&self, client: &Client, kid: &str) -> Result<Vec<u8>, Error> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched_at.map(|t| t.elapsed());
        let fresh = age.is_some_and(|a| a < JWKS_MAX_AGE);
        if fresh && let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_fetch = !fresh || age.is_some_and(|a| a >= self.config.min_refresh);
        if may_fetch {
            let set: JwkSet = match client.get(&self.jwks_url, false).await {
                Ok(set) => set,
                // The server is unreachable but the key is one it published:
                // keep accepting it rather than failing every session.
                Err(_) if cache.keys.contains_key(kid) => return Ok(cache.keys[kid].clone()),
                Err(error) => return Err(error),
            };
            cache.keys = set
                .keys
                .into_iter()
                .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
                .filter_map(|k| Some((k.kid, B64.decode(k.x).ok()?)))
                .collect();
            cache.fetched_at = Some(Instant::now());
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| Error::session("session signed with an unknown key"))
    }
}

fn decode_json<T: DeserializeOwned>(segment: &str) -> Result<T, Error> {
    let bytes = B64
        .decode(segment)
        .map_err(|_| Error::session("malformed session token"))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::session("malformed session token"))
}

/// A random id (idempotency keys): 128 bits from the OS, base64url.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness the key is still unique per call thanks to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    B64.encode(bytes)
}
