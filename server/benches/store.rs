//! Microseconds per store operation on the request path of `verify-token`
//! (and the session JWT a success signs), for each backend: SQLite always,
//! PostgreSQL when
//! `MAGICAUTH_TEST_POSTGRES_URL` is set. One operation at a time (the
//! latency a single request sees), after a warm-up. Prints figures only.
//!
//!     cargo bench -p magicauth-server --bench store [-- --calls 5000]

use std::time::{Duration, Instant};

use std::sync::Arc;

use magicauth::wire::SessionClaims;
use magicauth_server::domain::{AppKey, MagicToken, SecretHash};
use magicauth_server::session::SessionSigner;
use magicauth_server::store::{
    self, AppRecord, ConsumeClaim, ConsumeOutcome, DatabaseOptions, DynStore, IdempotencyQuery, NewApp, NewLink,
    NewMail, StoredResponse,
};

fn main() {
    let calls = std::env::args()
        .skip_while(|a| a != "--calls")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backends = vec![("sqlite", format!("sqlite://{}", dir.path().join("bench.db").display()))];
    if let Ok(url) = std::env::var("MAGICAUTH_TEST_POSTGRES_URL") {
        backends.push(("postgres", url));
    }
    println!("{calls} sequential calls per operation; µs per call (median of 5 batches)");
    for (name, url) in backends {
        runtime.block_on(async {
            let store = store::connect(&DatabaseOptions::new(url)).await.expect("connect");
            store.migrate().await.expect("migrate");
            bench_backend(name, &store, calls).await;
        });
    }
}

async fn bench_backend(name: &str, store: &DynStore, calls: usize) {
    let run = MagicToken::generate().hash().as_bytes()[0];
    let app_id = format!("app_bench_{run:02x}_{}", std::process::id());
    let key = AppKey::generate();
    store
        .create_app(&NewApp {
            record: AppRecord::sample(&app_id),
            key_hash: key.hash(),
        })
        .await
        .expect("app");
    let key_hash: SecretHash = key.hash();
    let unknown = MagicToken::generate().hash();
    let mut serial = 0u64;
    let mut next_key = || {
        serial += 1;
        format!("bench-{run}-{serial}")
    };

    report(name, "app_by_key_hash", calls, || async {
        store.app_by_key_hash(&key_hash).await.expect("app");
    })
    .await;
    report(name, "link_refusal (unknown token)", calls, || async {
        store.link_refusal(&unknown, &app_id, 1).await.expect("refusal");
    })
    .await;
    report(name, "consume_link (unknown token)", calls, || async {
        store.consume_link(&unknown, &app_id, 1, None).await.expect("consume");
    })
    .await;
    let keys: Vec<String> = (0..calls * 6).map(|_| next_key()).collect();
    let refused: Vec<String> = (0..calls * 6).map(|_| next_key()).collect();
    let mut claimed = keys.iter();
    report(name, "claim_idempotency_key (new key)", calls, || {
        let key = claimed.next().expect("key");
        async {
            store
                .claim_idempotency_key(&IdempotencyQuery {
                    app_id: &app_id,
                    key,
                    request_hash: &[7; 32],
                    now: 1,
                    retention_ms: 86_400_000,
                    abandon_after_ms: 60_000,
                })
                .await
                .expect("claim");
        }
    })
    .await;
    let mut completed = keys.iter();
    let response = StoredResponse {
        status: 400,
        body: r#"{"success":false,"error":"Invalid token","code":"invalid_token"}"#.into(),
    };
    let mut recorded = refused.iter();
    report(name, "record_idempotent_response", calls, || {
        let key = recorded.next().expect("key");
        let (response, app_id) = (&response, &app_id);
        async move {
            let query = IdempotencyQuery {
                app_id,
                key,
                request_hash: &[7; 32],
                now: 1,
                retention_ms: 86_400_000,
                abandon_after_ms: 60_000,
            };
            assert!(
                store
                    .record_idempotent_response(&query, response)
                    .await
                    .expect("record")
            );
        }
    })
    .await;
    // Successes: a link per call, made beforehand, to a new address each (a
    // new user, as in the SDK benchmarks).
    let links: Vec<SecretHash> = (0..calls + calls / 10).map(|_| MagicToken::generate().hash()).collect();
    for (i, token_hash) in links.iter().enumerate() {
        let email = format!("bench-{run}-{i}@example.com");
        let link = NewLink {
            token_hash: *token_hash,
            app_id: app_id.clone(),
            email: email.clone(),
            redirect_url: "https://app.example.com/cb".into(),
            created_at: 1,
            expires_at: i64::MAX,
        };
        let mail = NewMail {
            app_id: app_id.clone(),
            recipient: email,
            message_id: format!("<{run}-{i}@bench>"),
            subject: "Sign in".into(),
            text_body: "link".into(),
            html_body: "<a>link</a>".into(),
            created_at: 1,
        };
        store.create_link(&link, &mail, "2026-11", None).await.expect("link");
    }
    // A response the size of a real one (a session JWT and the user), built
    // without signing: the signature is timed on its own below.
    let respond: store::Respond = Arc::new(|user, redirect_url| StoredResponse {
        status: 200,
        body: format!(
            r#"{{"success":true,"token":"{}","user":{{"id":{},"email":"{}"}},"redirect_url":"{redirect_url}"}}"#,
            "j".repeat(420),
            user.id,
            user.email
        ),
    });
    let mut consumed = links.iter();
    let mut success_keys = (0..).map(|i| format!("bench-{run}-success-{i}"));
    report(name, "consume_link (success, with a key)", calls, || {
        let token_hash = consumed.next().expect("link");
        let key = success_keys.next().expect("key");
        let (respond, app_id) = (respond.clone(), &app_id);
        async move {
            let query = IdempotencyQuery {
                app_id,
                key: &key,
                request_hash: &[7; 32],
                now: 2,
                retention_ms: 86_400_000,
                abandon_after_ms: 60_000,
            };
            let refuse: store::Refuse = Arc::new(|_| panic!("a fresh token was refused"));
            let claim = ConsumeClaim {
                query: &query,
                respond,
                refuse,
            };
            let outcome = store
                .consume_link(token_hash, app_id, 2, Some(&claim))
                .await
                .expect("consume");
            assert!(matches!(outcome, ConsumeOutcome::Consumed { .. }), "{outcome:?}");
        }
    })
    .await;
    let signer = SessionSigner::load_or_create(store.as_ref(), 1)
        .await
        .expect("signing key");
    let claims = SessionClaims {
        iss: "https://auth.example.com".into(),
        sub: "12345".into(),
        aud: app_id.clone(),
        email: "someone@example.com".into(),
        iat: 1_800_000_000,
        exp: 1_800_003_600,
        jti: "0123456789abcdef0123456789abcdef".into(),
    };
    report(name, "sign a session JWT (no database)", calls, || {
        let jwt = signer.sign(&claims);
        async move {
            assert!(jwt.len() > 100);
        }
    })
    .await;
    report(name, "complete_idempotency_key", calls, || {
        let key = completed.next().expect("key");
        let (response, app_id) = (&response, &app_id);
        async move {
            store
                .complete_idempotency_key(app_id, key, response)
                .await
                .expect("complete");
        }
    })
    .await;
}

async fn report<F, Fut>(backend: &str, operation: &str, calls: usize, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..calls / 10 {
        call().await;
    }
    let batch = (calls / 5).max(1);
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..batch {
            call().await;
        }
        times.push(start.elapsed() / u32::try_from(batch).unwrap_or(u32::MAX));
    }
    times.sort();
    println!("{backend:9} {operation:34} {:8.1}", times[2].as_secs_f64() * 1e6);
}
