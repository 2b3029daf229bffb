//! Microseconds per store operation on the request path of `verify-token`,
//! for each backend: SQLite always, PostgreSQL when
//! `MAGICAUTH_TEST_POSTGRES_URL` is set. One operation at a time (the
//! latency a single request sees), after a warm-up. Prints figures only.
//!
//!     cargo bench -p magicauth-server --bench store [-- --calls 5000]

use std::time::{Duration, Instant};

use magicauth_server::domain::{AppKey, MagicToken, SecretHash};
use magicauth_server::store::{
    self, AppRecord, DatabaseOptions, DynStore, IdempotencyQuery, NewApp, Plan, StoredResponse,
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
            record: AppRecord {
                id: app_id.clone(),
                name: "bench".into(),
                plan: Plan::Free,
                burst: 100,
                monthly_limit: None,
                token_ttl_s: 900,
                session_ttl_s: 3600,
                redirect_urls: vec!["https://app.example.com/cb".into()],
                disabled: false,
                created_at: 0,
            },
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
