//! Which failures are retried, how often, and with which idempotency key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use magicauth::{Client, Error};
use tokio::io::AsyncReadExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{api_error, builder, closed_port_base_url, header, received, send_link_ok};

/// Mounts `first` for the first `times` requests, and a success afterwards.
async fn fail_then_succeed(server: &MockServer, first: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(send_link_ok(900))
        .with_priority(2)
        .mount(server)
        .await;
}

#[tokio::test]
async fn transient_server_errors_are_retried() {
    let responses = [
        (500, api_error(500, "internal_error", "Internal server error")),
        (
            502,
            ResponseTemplate::new(502).set_body_raw("<html>Bad Gateway</html>", "text/html"),
        ),
        (503, ResponseTemplate::new(503)),
        (504, ResponseTemplate::new(504).set_body_string("upstream timed out")),
    ];
    for (status, response) in responses {
        let server = MockServer::start().await;
        fail_then_succeed(&server, response, 2).await;
        let client = builder(&server).max_retries(2).build().unwrap();
        let sent = client.send_link("user@example.com", None).await;
        assert_eq!(sent.map(|s| s.expires_in).ok(), Some(900), "HTTP {status}");
        assert_eq!(
            received(&server).await.len(),
            3,
            "HTTP {status}: two failures, then the success"
        );
    }
}

#[tokio::test]
async fn not_implemented_and_client_errors_are_not_retried() {
    let responses = [
        (501, api_error(501, "not_implemented", "Not implemented")),
        (400, api_error(400, "invalid_request", "email: required")),
        (400, api_error(400, "invalid_token", "Invalid token")),
        (400, api_error(400, "token_used", "Token already used")),
        (400, api_error(400, "token_expired", "Token expired")),
        (401, api_error(401, "invalid_app_key", "Invalid app_key")),
        (403, api_error(403, "app_disabled", "App disabled")),
        (
            403,
            api_error(403, "redirect_not_allowed", "Redirect URL not whitelisted"),
        ),
        (404, api_error(404, "not_found", "Not found")),
        (405, api_error(405, "method_not_allowed", "Method not allowed")),
        (408, ResponseTemplate::new(408)),
        (409, api_error(409, "conflict", "Conflict")),
        (413, api_error(413, "payload_too_large", "Too large")),
        (422, ResponseTemplate::new(422).set_body_string("unprocessable")),
    ];
    for (status, response) in responses {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
        let client = builder(&server).max_retries(3).build().unwrap();
        let error = client.send_link("user@example.com", None).await.unwrap_err();
        assert_eq!(error.status(), Some(status), "{error:?}");
        assert_eq!(
            received(&server).await.len(),
            1,
            "HTTP {status} ({}) was retried",
            error.code()
        );
        server.verify().await;
    }
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    let client = Client::builder()
        .base_url(closed_port_base_url())
        .app_key(crate::support::APP_KEY)
        .retry_base_delay(Duration::from_millis(1))
        .max_retries(3)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client.send_link("user@example.com", None).await.unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_eq!(error.code(), "connection");
    assert_eq!(error.status(), None);
    assert!(
        std::error::Error::source(&error).is_some(),
        "the transport error is kept as source"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// A server that accepts connections, reads the request and hangs up without
/// answering: each attempt is one connection, and fails as a connection error.
#[tokio::test]
async fn connection_errors_are_retried_max_retries_times() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/api"))
        .app_key(crate::support::APP_KEY)
        .retry_base_delay(Duration::from_millis(1))
        .max_retries(3)
        .build()
        .unwrap();
    let error = client.verify_token("tok").await.unwrap_err();
    accept.abort();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert_eq!(error.code(), "connection");
    assert_eq!(connections.load(Ordering::SeqCst), 4, "max_retries + 1 attempts");
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let server = MockServer::start().await;
    fail_then_succeed(
        &server,
        api_error(429, "rate_limited", "Rate limit exceeded").insert_header("Retry-After", "1"),
        1,
    )
    .await;
    let client = builder(&server).build().unwrap();
    let started = Instant::now();
    let sent = client.send_link("user@example.com", None).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(sent.expires_in, 900);
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried after {elapsed:?}, before Retry-After"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(received(&server).await.len(), 2);
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_with_backoff() {
    let server = MockServer::start().await;
    fail_then_succeed(&server, api_error(429, "rate_limited", "Rate limit exceeded"), 2).await;
    let sent = builder(&server)
        .build()
        .unwrap()
        .send_link("u@example.com", None)
        .await
        .unwrap();
    assert_eq!(sent.expires_in, 900);
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn a_retry_after_over_30_seconds_is_returned_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(api_error(429, "rate_limited", "Rate limit exceeded").insert_header("Retry-After", "31"))
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(3).build().unwrap();
    let started = Instant::now();
    let error = client.send_link("user@example.com", None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(31)));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_used_up_quota_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(api_error(429, "quota_exceeded", "Monthly limit exceeded").insert_header("Retry-After", "1"))
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(3).build().unwrap();
    let started = Instant::now();
    let error = client.send_link("user@example.com", None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.code(), "quota_exceeded");
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn gives_up_after_max_retries_with_the_last_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(api_error(500, "internal_error", "Internal server error"))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("last attempt: overloaded"))
        .with_priority(2)
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(3).build().unwrap();
    let error = client.verify_token("tok").await.unwrap_err();
    assert_eq!(received(&server).await.len(), 4, "1 attempt + 3 retries");
    assert!(matches!(error, Error::Server(_)), "{error:?}");
    assert_eq!(error.status(), Some(503), "the last error is returned");
    assert_eq!(error.raw_body(), Some("last attempt: overloaded"));
}

#[tokio::test]
async fn max_retries_zero_makes_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let error = builder(&server)
        .max_retries(0)
        .build()
        .unwrap()
        .send_link("u@example.com", None)
        .await;
    assert_eq!(error.unwrap_err().status(), Some(503));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn two_retries_by_default() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .expect(3)
        .mount(&server)
        .await;
    let error = builder(&server).build().unwrap().send_link("u@example.com", None).await;
    assert_eq!(error.unwrap_err().status(), Some(502));
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn one_idempotency_key_per_call_for_all_its_attempts() {
    let server = MockServer::start().await;
    for endpoint in ["send-link", "verify-token"] {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(502))
            .up_to_n_times(1)
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/send-link"))
            .respond_with(send_link_ok(900))
            .with_priority(3)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/verify-token"))
            .respond_with(api_error(400, "token_used", "Token already used"))
            .with_priority(3)
            .mount(&server)
            .await;
        let client = builder(&server).max_retries(3).build().unwrap();
        let call = || async {
            match endpoint {
                "send-link" => client.send_link("u@example.com", None).await.map(drop),
                _ => client.verify_token("tok").await.map(drop),
            }
        };
        // First call: 503, 503, 502, then the final answer; second call: one request.
        let _ = call().await;
        let _ = call().await;
        let requests = received(&server).await;
        assert_eq!(requests.len(), 5, "{endpoint}");
        let keys: Vec<&str> = requests
            .iter()
            .map(|r| header(r, "idempotency-key").expect("an Idempotency-Key"))
            .collect();
        assert!(
            keys[..4].iter().all(|k| *k == keys[0]),
            "{endpoint}: one key per call: {keys:?}"
        );
        assert_ne!(keys[4], keys[0], "{endpoint}: a new call gets a new key");
        assert!(!keys[0].is_empty());
    }
}

#[tokio::test]
async fn a_clone_shares_the_configuration() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(1).build().unwrap();
    let clone = client.clone();
    let error = tokio::spawn(async move { clone.send_link("u@example.com", None).await })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert_eq!(received(&server).await.len(), 2);
}
