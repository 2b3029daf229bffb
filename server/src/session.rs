//! Session JWTs: EdDSA (Ed25519) tokens signed with the key every replica shares.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use magicauth::wire::{Jwk, JwkSet, SessionClaims};
use sha2::{Digest, Sha256};

use crate::store::{Millis, SigningKeyRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("could not generate a signing key")]
    Generate,
    #[error("the stored signing key is not a valid Ed25519 PKCS#8 key")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The parsed signing key: loaded once at start, used for every token.
pub struct SessionSigner {
    key: Ed25519KeyPair,
    kid: String,
    jwks: JwkSet,
    /// The JWS header, encoded: the same for every token.
    header: String,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SessionSigner {
    /// Loads the shared key from the store, creating it on first start.
    /// Replicas starting together race on one insert; all end up with the winner's key.
    pub async fn load_or_create(store: &dyn Store, now: Millis) -> Result<Self, SigningKeyError> {
        let candidate = Self::generate(now)?;
        let record = store.signing_key(&candidate).await?;
        Self::from_record(&record)
    }

    fn generate(now: Millis) -> Result<SigningKeyRecord, SigningKeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningKeyError::Generate)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningKeyError::Generate)?;
        let public_key = pair.public_key().as_ref().to_vec();
        Ok(SigningKeyRecord {
            kid: thumbprint(&public_key),
            private_pkcs8: pkcs8.as_ref().to_vec(),
            public_key,
            created_at: now,
        })
    }

    pub fn from_record(record: &SigningKeyRecord) -> Result<Self, SigningKeyError> {
        let key = Ed25519KeyPair::from_pkcs8(&record.private_pkcs8).map_err(|_| SigningKeyError::Invalid)?;
        if key.public_key().as_ref() != record.public_key.as_slice() {
            return Err(SigningKeyError::Invalid);
        }
        let jwks = JwkSet {
            keys: vec![Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: B64.encode(&record.public_key),
                kid: record.kid.clone(),
                alg: Some("EdDSA".into()),
                use_: Some("sig".into()),
            }],
        };
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": record.kid});
        // Serialising a JSON value cannot fail.
        let header = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        Ok(Self {
            key,
            kid: record.kid.clone(),
            jwks,
            header,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs the claims as a compact JWS.
    pub fn sign(&self, claims: &SessionClaims) -> String {
        // Serialising this plain struct cannot fail.
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{}.{payload}", self.header);
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.as_ref()))
    }

    /// Checks a token's signature against this key and returns its claims
    /// (no time or audience checks: those are the client's job).
    pub fn verify_signature(&self, jwt: &str) -> Option<SessionClaims> {
        let mut parts = jwt.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let signature = B64.decode(signature).ok()?;
        UnparsedPublicKey::new(&ED25519, self.key.public_key().as_ref())
            .verify(format!("{header}.{payload}").as_bytes(), &signature)
            .ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key.
fn thumbprint(public_key: &[u8]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(public_key));
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SessionSigner {
        SessionSigner::from_record(&SessionSigner::generate(0).unwrap()).unwrap()
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            iss: "http://127.0.0.1:8080".into(),
            sub: "1".into(),
            aud: "app_x".into(),
            email: "a@b.co".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
        }
    }

    #[test]
    fn signed_tokens_verify_and_carry_kid() {
        let s = signer();
        let jwt = s.sign(&claims());
        assert_eq!(s.verify_signature(&jwt), Some(claims()));
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], s.kid());
        assert_eq!(s.jwks().keys[0].kid, s.kid());
    }

    #[test]
    fn tampered_tokens_and_other_keys_fail() {
        let (a, b) = (signer(), signer());
        let jwt = a.sign(&claims());
        assert!(b.verify_signature(&jwt).is_none());
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut forged = claims();
        forged.sub = "2".into();
        parts[1] = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert!(a.verify_signature(&parts.join(".")).is_none());
    }

    #[test]
    fn a_mismatched_public_key_is_rejected() {
        let mut record = SessionSigner::generate(0).unwrap();
        record.public_key = SessionSigner::generate(0).unwrap().public_key;
        assert!(SessionSigner::from_record(&record).is_err());
    }
}
