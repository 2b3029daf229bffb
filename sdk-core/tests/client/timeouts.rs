//! The per-attempt timeout.

use std::time::{Duration, Instant};

use magicauth::Error;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

use crate::support::{assert_no_key, builder, received, send_link_ok};

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900).set_delay(Duration::from_millis(500)))
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server)
        .timeout(Duration::from_millis(100))
        .max_retries(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client.send_link("user@example.com", None).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(error.code(), "timeout");
    assert_eq!(error.status(), None);
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(450),
        "did not wait for the slow answer: {elapsed:?}"
    );
    assert_no_key(&format!("{error} {error:?}"));
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(1).set_delay(Duration::from_millis(500)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900))
        .with_priority(2)
        .mount(&server)
        .await;
    let client = builder(&server)
        .timeout(Duration::from_millis(150))
        .max_retries(1)
        .build()
        .unwrap();
    let sent = client.send_link("user@example.com", None).await.unwrap();
    assert_eq!(sent.expires_in, 900, "the fast second answer, not the slow first one");
    assert_eq!(received(&server).await.len(), 2);
}

#[tokio::test]
async fn always_slow_gives_up_with_a_timeout_after_max_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900).set_delay(Duration::from_millis(400)))
        .expect(3)
        .mount(&server)
        .await;
    let client = builder(&server)
        .timeout(Duration::from_millis(80))
        .max_retries(2)
        .build()
        .unwrap();
    let error = client.verify_token("tok").await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(received(&server).await.len(), 3);
}
