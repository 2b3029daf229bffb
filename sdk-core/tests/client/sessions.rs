//! `verify_session`: session JWTs checked offline against the JWKS.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use magicauth::{Client, Error, SessionClaims};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{APP_KEY, builder, count, received};

const JWKS_PATH: &str = "/.well-known/jwks.json";
const APP_PATH: &str = "/api/app";
const ISSUER: &str = "https://auth.example.com";
const APP_ID: &str = "app_1";
/// A fixed "now" for `verify_session_at`: 2025-11-13T12:30:00Z.
const T: i64 = 1_763_037_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).unwrap())
}

/// An Ed25519 signing key with its key id.
struct Signer {
    kid: &'static str,
    key: Ed25519KeyPair,
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self { kid, key }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(self.key.public_key().as_ref()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig"
        })
    }

    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid})
    }

    /// A JWT with the usual header.
    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_segments(&b64_json(header), &b64(&serde_json::to_vec(claims).unwrap()))
    }

    /// Signs `header.payload` as given (already encoded).
    fn sign_segments(&self, header: &str, payload: &str) -> String {
        let input = format!("{header}.{payload}");
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// Claims of a session issued at `iat`, valid for a day.
fn claims(iat: i64) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "123",
        "aud": APP_ID,
        "email": "user@example.com",
        "iat": iat,
        "exp": iat + 86_400,
        "jti": "jti-0001"
    })
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn jwks(signers: &[&Signer]) -> ResponseTemplate {
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
    ResponseTemplate::new(200).set_body_json(json!({ "keys": keys }))
}

fn app_info() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true,
        "app": {"id": APP_ID, "name": "A"},
        "issuer": ISSUER
    }))
}

/// Mounts the JWKS (`signers`) and `/api/app` (answering only to the app key as bearer token).
async fn mount_keys_and_app(server: &MockServer, signers: &[&Signer]) {
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(signers))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .and(header("authorization", format!("Bearer {APP_KEY}").as_str()))
        .respond_with(app_info())
        .mount(server)
        .await;
}

fn assert_invalid_session(result: Result<SessionClaims, Error>, what: &str) {
    match result {
        Err(error @ Error::InvalidSession(_)) => {
            assert_eq!(error.code(), "invalid_session", "{what}");
            assert_eq!(error.status(), None, "{what}");
            assert!(!error.message().is_empty(), "{what}");
        }
        other => panic!("{what}: expected InvalidSession, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_session_gives_its_claims() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server).build().unwrap();
    let iat = now();
    let claims = client.verify_session(&k1.sign(&claims(iat))).await.unwrap();
    assert_eq!(
        claims,
        SessionClaims {
            iss: ISSUER.into(),
            sub: "123".into(),
            aud: APP_ID.into(),
            email: "user@example.com".into(),
            iat,
            exp: iat + 86_400,
            jti: "jti-0001".into(),
        }
    );
    // The JWKS is public: it is fetched without the app key.
    let requests = received(&server).await;
    let jwks_request = requests
        .iter()
        .find(|r| r.url.path() == JWKS_PATH)
        .expect("a JWKS fetch");
    assert!(jwks_request.headers.get("authorization").is_none());
    assert_eq!(count(&server, APP_PATH).await, 1);
}

#[tokio::test]
async fn keys_and_app_info_are_fetched_once_for_many_verifications() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(&[&k1]))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .and(header("authorization", format!("Bearer {APP_KEY}").as_str()))
        .respond_with(app_info())
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server).build().unwrap();
    for i in 0..10 {
        let token = k1.sign(&with(claims(now()), "jti", json!(format!("jti-{i}"))));
        let claims = client.verify_session(&token).await.unwrap();
        assert_eq!(claims.jti, format!("jti-{i}"));
    }
    // A clone shares the cache.
    let clone = client.clone();
    clone.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    server.verify().await;
}

/// The outcomes of `verify_session(token)` from `tasks` tasks at once.
async fn verify_concurrently(client: &Client, token: &str, tasks: usize) -> Vec<Result<SessionClaims, Error>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (client, token) = (client.clone(), token.to_owned());
        set.spawn(async move { client.verify_session(&token).await });
    }
    set.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_verifications_fetch_once() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server).build().unwrap();
    let token = k1.sign(&claims(now()));
    for result in verify_concurrently(&client, &token, 16).await {
        assert_eq!(result.unwrap().sub, "123");
    }
    assert_eq!(count(&server, JWKS_PATH).await, 1);
    assert_eq!(count(&server, APP_PATH).await, 1);
}

#[tokio::test]
async fn an_unknown_key_id_refetches_the_keys_at_most_once_per_interval() {
    let server = MockServer::start().await;
    let (k1, k2, k3) = (Signer::new("k1"), Signer::new("k2"), Signer::new("k3"));
    // The first fetch sees k1 only; k2 is rotated in afterwards. k3 is never published.
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(&[&k1]))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(&[&k1, &k2]))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .respond_with(app_info())
        .mount(&server)
        .await;
    let interval = Duration::from_millis(700);
    let client = builder(&server).jwks_min_refresh_interval(interval).build().unwrap();

    let started = Instant::now();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    let first_fetch_done = Instant::now();
    assert_eq!(count(&server, JWKS_PATH).await, 1);

    // k2 is unknown, and the keys were fetched less than `interval` ago: no new fetch.
    for _ in 0..5 {
        assert_invalid_session(
            client.verify_session(&k2.sign(&claims(now()))).await,
            "k2 before the interval",
        );
    }
    assert!(
        started.elapsed() < interval,
        "the test machine is too slow for this interval"
    );
    assert_eq!(count(&server, JWKS_PATH).await, 1, "refetched before the interval");

    // Once the interval has passed, the unknown k2 triggers one fetch, which finds it.
    tokio::time::sleep_until((first_fetch_done + interval + Duration::from_millis(50)).into()).await;
    let claims_k2 = client.verify_session(&k2.sign(&claims(now()))).await.unwrap();
    assert_eq!(claims_k2.aud, APP_ID);
    assert_eq!(count(&server, JWKS_PATH).await, 2);
    let second_fetch_done = Instant::now();

    // Known keys are served from the cache; the never-published k3 does not refetch so soon.
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    client.verify_session(&k2.sign(&claims(now()))).await.unwrap();
    for _ in 0..5 {
        assert_invalid_session(client.verify_session(&k3.sign(&claims(now()))).await, "unpublished k3");
    }
    assert!(
        second_fetch_done.elapsed() < interval,
        "the test machine is too slow for this interval"
    );
    assert_eq!(count(&server, JWKS_PATH).await, 2);
    assert_eq!(count(&server, APP_PATH).await, 1);
}

#[tokio::test]
async fn with_a_zero_interval_every_unknown_key_id_refetches() {
    let server = MockServer::start().await;
    let (k1, k9) = (Signer::new("k1"), Signer::new("k9"));
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server)
        .jwks_min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    for _ in 0..3 {
        assert_invalid_session(client.verify_session(&k9.sign(&claims(now()))).await, "k9");
    }
    assert_eq!(count(&server, JWKS_PATH).await, 4);
}

#[tokio::test]
async fn the_jwks_url_can_be_set() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    Mock::given(method("GET"))
        .and(path("/keys/v1.json"))
        .respond_with(jwks(&[&k1]))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .respond_with(app_info())
        .mount(&server)
        .await;
    let client = builder(&server)
        .jwks_url(format!("{}/keys/v1.json", server.uri()))
        .build()
        .unwrap();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    assert_eq!(count(&server, JWKS_PATH).await, 0);
}

#[tokio::test]
async fn tokens_that_must_not_pass_are_invalid_sessions() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    let impostor = Signer::new("k1"); // same kid, another key
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server).build().unwrap();
    let good = claims(T);
    let valid = k1.sign(&good);
    assert!(
        client.verify_session_at(&valid, at(T)).await.is_ok(),
        "the baseline passes"
    );

    let (header, payload, _) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
    };
    let tampered_payload = b64_json(&with(good.clone(), "sub", json!("1")));
    let hs256_header = b64_json(&json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
    let hs256_signature = {
        // The classic confusion: HMAC keyed with the public key.
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k1.key.public_key().as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, format!("{hs256_header}.{payload}").as_bytes());
        b64(tag.as_ref())
    };
    let cases: Vec<(&str, String)> = vec![
        ("signed by another key", impostor.sign(&good)),
        (
            "payload changed after signing",
            format!("{header}.{tampered_payload}.{}", valid.rsplit('.').next().unwrap()),
        ),
        (
            "signature of another token",
            format!(
                "{header}.{payload}.{}",
                k1.sign(&claims(T + 1)).rsplit('.').next().unwrap()
            ),
        ),
        ("wrong audience", k1.sign(&with(good.clone(), "aud", json!("app_2")))),
        (
            "wrong issuer",
            k1.sign(&with(good.clone(), "iss", json!("https://evil.example.com"))),
        ),
        (
            "issuer as a prefix",
            k1.sign(&with(good.clone(), "iss", json!("https://auth.example.com.evil.net"))),
        ),
        (
            "expired an hour ago",
            k1.sign(&with(
                with(good.clone(), "iat", json!(T - 90_000)),
                "exp",
                json!(T - 3600),
            )),
        ),
        (
            "issued in the future",
            k1.sign(&with(
                with(good.clone(), "iat", json!(T + 600)),
                "exp",
                json!(T + 90_000),
            )),
        ),
        (
            "alg none",
            format!(
                "{}.{payload}.",
                b64_json(&json!({"alg": "none", "typ": "JWT", "kid": "k1"}))
            ),
        ),
        (
            "alg none, signed",
            k1.sign_with_header(&json!({"alg": "none", "typ": "JWT", "kid": "k1"}), &good),
        ),
        ("alg HS256", format!("{hs256_header}.{payload}.{hs256_signature}")),
        (
            "alg HS256, Ed25519 signature",
            k1.sign_with_header(&json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}), &good),
        ),
        (
            "no kid",
            k1.sign_with_header(&json!({"alg": "EdDSA", "typ": "JWT"}), &good),
        ),
        (
            "unknown kid",
            k1.sign_with_header(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "nope"}), &good),
        ),
        ("empty", String::new()),
        ("one segment", "not-a-jwt".into()),
        ("two segments", format!("{header}.{payload}")),
        ("four segments", format!("{valid}.{payload}")),
        ("not base64", "%%%.###.$$$".into()),
        ("header not JSON", k1.sign_segments(&b64(b"not json"), payload)),
        ("payload not JSON", k1.sign_segments(header, &b64(b"not json"))),
        ("claims missing", k1.sign(&json!({"sub": "123", "aud": APP_ID}))),
        (
            "exp as a string",
            k1.sign(&with(good.clone(), "exp", json!("tomorrow"))),
        ),
        ("signature not base64", format!("{header}.{payload}.***")),
        ("signature empty", format!("{header}.{payload}.")),
        ("signature truncated", valid[..valid.len() - 4].to_string()),
    ];
    for (what, token) in cases {
        assert_invalid_session(client.verify_session_at(&token, at(T)).await, what);
    }
}

#[tokio::test]
async fn malformed_tokens_are_rejected_without_network() {
    let server = MockServer::start().await;
    let client = builder(&server).build().unwrap();
    for token in ["", "a", "a.b", "a.b.c.d", "%%%.###.$$$", "e30.e30.e30"] {
        assert_invalid_session(client.verify_session(token).await, token);
    }
    assert_eq!(received(&server).await.len(), 0);
}

#[tokio::test]
async fn expiry_and_issue_time_allow_the_leeway() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server).build().unwrap(); // default leeway: 60 s
    let expiring = k1.sign(&with(with(claims(T), "iat", json!(T - 3600)), "exp", json!(T)));

    assert!(
        client.verify_session_at(&expiring, at(T - 1)).await.is_ok(),
        "not yet expired"
    );
    assert!(
        client.verify_session_at(&expiring, at(T + 30)).await.is_ok(),
        "expired within the leeway"
    );
    assert_invalid_session(
        client.verify_session_at(&expiring, at(T + 90)).await,
        "expired beyond the leeway",
    );
    assert_invalid_session(
        client.verify_session_at(&expiring, at(T + 86_400)).await,
        "expired a day ago",
    );

    let early = k1.sign(&with(with(claims(T), "iat", json!(T + 30)), "exp", json!(T + 3600)));
    assert!(
        client.verify_session_at(&early, at(T)).await.is_ok(),
        "issued 30 s ahead: clock skew"
    );
    let future = k1.sign(&with(with(claims(T), "iat", json!(T + 120)), "exp", json!(T + 3600)));
    assert_invalid_session(client.verify_session_at(&future, at(T)).await, "issued 2 min ahead");

    // A client without leeway is strict.
    let strict = builder(&server).leeway(Duration::ZERO).build().unwrap();
    assert!(strict.verify_session_at(&expiring, at(T - 1)).await.is_ok());
    assert_invalid_session(
        strict.verify_session_at(&expiring, at(T + 1)).await,
        "no leeway, expired",
    );
    assert_invalid_session(strict.verify_session_at(&early, at(T)).await, "no leeway, issued ahead");
}

#[tokio::test]
async fn with_app_id_and_issuer_configured_the_app_is_never_asked() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(&[&k1]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .respond_with(app_info())
        .expect(0)
        .mount(&server)
        .await;
    let client = builder(&server)
        .app_id("app_configured")
        .issuer("https://id.example.org")
        .build()
        .unwrap();
    let mine = with(
        with(claims(now()), "aud", json!("app_configured")),
        "iss",
        json!("https://id.example.org"),
    );
    let claims_ok = client.verify_session(&k1.sign(&mine)).await.unwrap();
    assert_eq!(
        (claims_ok.aud.as_str(), claims_ok.iss.as_str()),
        ("app_configured", "https://id.example.org")
    );
    // What the server would have said (app_1 / auth.example.com) is not what this client expects.
    assert_invalid_session(
        client.verify_session(&k1.sign(&claims(now()))).await,
        "the server's app, not the configured one",
    );
    assert_invalid_session(
        client
            .verify_session(&k1.sign(&with(mine.clone(), "iss", json!(ISSUER))))
            .await,
        "the server's issuer, not the configured one",
    );
    assert_eq!(count(&server, APP_PATH).await, 0);
    server.verify().await;
}

#[tokio::test]
async fn an_unreachable_jwks_is_an_error_and_is_not_cached() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_string("nope"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_keys_and_app(&server, &[&k1]).await;
    let client: Client = builder(&server).build().unwrap();
    let token = k1.sign(&claims(now()));
    let error = client.verify_session(&token).await.unwrap_err();
    assert_eq!(error.status(), Some(404), "{error:?}");
    // The next call fetches again and succeeds.
    assert_eq!(client.verify_session(&token).await.unwrap().sub, "123");
    assert_eq!(count(&server, JWKS_PATH).await, 2);
}

#[tokio::test]
async fn extreme_timestamps_are_judged_without_overflow() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    mount_keys_and_app(&server, &[&k1]).await;
    let client = builder(&server).build().unwrap();
    // Never expires, issued at the dawn of time: valid (and no arithmetic overflow).
    let forever = k1.sign(&with(with(claims(T), "iat", json!(i64::MIN)), "exp", json!(i64::MAX)));
    let claims_ok = client.verify_session_at(&forever, at(T)).await.unwrap();
    assert_eq!((claims_ok.iat, claims_ok.exp), (i64::MIN, i64::MAX));
    // Expired at the dawn of time, issued at the end of it: both rejected.
    let expired = k1.sign(&with(with(claims(T), "iat", json!(i64::MIN)), "exp", json!(i64::MIN)));
    assert_invalid_session(client.verify_session_at(&expired, at(T)).await, "exp = i64::MIN");
    let future = k1.sign(&with(with(claims(T), "iat", json!(i64::MAX)), "exp", json!(i64::MAX)));
    assert_invalid_session(client.verify_session_at(&future, at(T)).await, "iat = i64::MAX");
}

/// Mounts a JWKS that serves `signers` once, then answers `then` (a 404 is
/// not retried, so each fetch is one request).
async fn mount_keys_once_then(server: &MockServer, signers: &[&Signer], then: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks(signers))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(then)
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(APP_PATH))
        .respond_with(app_info())
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_failed_fetch_waits_out_the_interval_like_a_good_one() {
    let server = MockServer::start().await;
    let (k1, forged) = (Signer::new("k1"), Signer::new("forged"));
    mount_keys_once_then(&server, &[&k1], ResponseTemplate::new(404)).await;
    let interval = Duration::from_millis(700);
    let client = builder(&server).jwks_min_refresh_interval(interval).build().unwrap();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    tokio::time::sleep(interval + Duration::from_millis(50)).await;

    // An unknown key id past the interval fetches once; the fetch fails.
    let failed_at = Instant::now();
    let error = client.verify_session(&forged.sign(&claims(now()))).await.unwrap_err();
    assert_eq!(error.status(), Some(404), "{error:?}");
    assert_eq!(count(&server, JWKS_PATH).await, 2);
    // More unknown key ids within the interval do not ask the server again.
    for _ in 0..5 {
        assert_invalid_session(client.verify_session(&forged.sign(&claims(now()))).await, "forged");
    }
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    assert!(
        failed_at.elapsed() < interval,
        "the test machine is too slow for this interval"
    );
    assert_eq!(
        count(&server, JWKS_PATH).await,
        2,
        "refetched within the interval after a failure"
    );
}

#[tokio::test]
async fn keys_past_their_age_stay_usable_while_the_jwks_fails() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    mount_keys_once_then(&server, &[&k1], ResponseTemplate::new(404)).await;
    // Every key is past its age at once, and every call may fetch.
    let client = builder(&server)
        .jwks_max_age(Duration::ZERO)
        .jwks_min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    for _ in 0..3 {
        // Each call tries a fetch, which fails, and uses the key it has.
        assert_eq!(
            client.verify_session(&k1.sign(&claims(now()))).await.unwrap().sub,
            "123"
        );
    }
    assert_eq!(count(&server, JWKS_PATH).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_known_key_never_waits_for_a_fetch() {
    let server = MockServer::start().await;
    let (k1, forged) = (Signer::new("k1"), Signer::new("forged"));
    // After the first fetch the JWKS answers only after a long delay.
    let slow = jwks(&[&k1]).set_delay(Duration::from_secs(3));
    mount_keys_once_then(&server, &[&k1], slow).await;
    let client = builder(&server)
        .jwks_min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();

    let fetching = tokio::spawn({
        let (client, token) = (client.clone(), forged.sign(&claims(now())));
        async move { client.verify_session(&token).await }
    });
    // Until the slow fetch has reached the server (bounded: 3 s at most).
    for _ in 0..300 {
        if count(&server, JWKS_PATH).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&server, JWKS_PATH).await, 2, "the second fetch never started");
    client.verify_session(&k1.sign(&claims(now()))).await.unwrap();
    assert!(!fetching.is_finished(), "the known key waited for the fetch");
    assert_invalid_session(fetching.await.unwrap(), "forged, after the fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_waiting_for_a_failing_first_fetch_share_its_outcome() {
    let server = MockServer::start().await;
    let k1 = Signer::new("k1");
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(404).set_delay(Duration::from_millis(500)))
        .mount(&server)
        .await;
    let client = builder(&server).build().unwrap();
    let token = k1.sign(&claims(now()));
    for result in verify_concurrently(&client, &token, 8).await {
        let error = result.unwrap_err();
        assert_eq!(error.status(), Some(404), "{error:?}");
    }
    assert_eq!(count(&server, JWKS_PATH).await, 1);
}
