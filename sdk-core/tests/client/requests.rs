//! The requests the client sends, and how success bodies are read.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{APP_KEY, builder, client, header, received, send_link_ok};

/// The contract's example verify-token success body.
fn verification_body() -> Value {
    json!({
        "success": true,
        "user": {
            "id": 123,
            "email": "user@example.com",
            "name": null,
            "email_verified_at": "2025-11-13T12:30:00Z",
            "last_login_at": "2025-11-13T12:45:00Z"
        },
        "token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjMifQ.c2ln",
        "redirect_url": "https://yourapp.com/dashboard"
    })
}

/// Checks what every API call carries: JSON content type, an idempotency key.
fn assert_api_post(request: &Request, expected_path: &str) {
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), expected_path);
    assert_eq!(request.url.query(), None);
    assert_eq!(header(request, "content-type"), Some("application/json"));
    let key = header(request, "idempotency-key").expect("an Idempotency-Key header");
    // API.md: 1-255 printable ASCII.
    assert!((1..=255).contains(&key.len()), "{key:?}");
    assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
}

fn json_body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

#[tokio::test]
async fn send_link_posts_email_app_key_and_redirect_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(send_link_ok(900))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);

    let sent = client
        .send_link("user@example.com", Some("https://yourapp.com/dashboard"))
        .await
        .unwrap();
    assert_eq!(sent.expires_in, 900);
    let sent = client.send_link("other@example.com", None).await.unwrap();
    assert_eq!(sent.expires_in, 900);

    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    assert_api_post(&requests[0], "/api/send-link");
    assert_eq!(
        json_body(&requests[0]),
        json!({"email": "user@example.com", "app_key": APP_KEY, "redirect_url": "https://yourapp.com/dashboard"})
    );
    assert_api_post(&requests[1], "/api/send-link");
    // Without a redirect URL the field is left out (not sent as null).
    assert_eq!(
        json_body(&requests[1]),
        json!({"email": "other@example.com", "app_key": APP_KEY})
    );
}

#[tokio::test]
async fn send_link_reads_expires_in() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(send_link_ok(3600))
        .mount(&server)
        .await;
    let sent = client(&server).send_link("user@example.com", None).await.unwrap();
    assert_eq!(sent.expires_in, 3600);
}

#[tokio::test]
async fn verify_token_posts_token_and_app_key_and_reads_the_verification() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/verify-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(verification_body()))
        .expect(1)
        .mount(&server)
        .await;
    let verification = client(&server).verify_token("tok_Ab3_-xYz").await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    assert_api_post(&requests[0], "/api/verify-token");
    assert_eq!(
        json_body(&requests[0]),
        json!({"token": "tok_Ab3_-xYz", "app_key": APP_KEY})
    );

    let user = &verification.user;
    assert_eq!(user.id, 123);
    assert_eq!(user.email, "user@example.com");
    assert_eq!(user.name, None);
    let verified_at: DateTime<Utc> = Utc.with_ymd_and_hms(2025, 11, 13, 12, 30, 0).unwrap();
    assert_eq!(user.email_verified_at, verified_at);
    assert_eq!(
        user.last_login_at,
        Utc.with_ymd_and_hms(2025, 11, 13, 12, 45, 0).unwrap()
    );
    assert_eq!(verification.token, "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjMifQ.c2ln");
    assert_eq!(verification.redirect_url, "https://yourapp.com/dashboard");

    // The session JWT is a secret too: Debug leaves it out.
    let shown = format!("{verification:?}");
    assert!(!shown.contains("eyJhbGciOiJFZERTQSJ9"), "{shown}");
    assert!(shown.contains("user@example.com"), "{shown}");
}

#[tokio::test]
async fn verify_token_reads_a_name_and_fractional_timestamps() {
    let server = MockServer::start().await;
    let mut body = verification_body();
    body["user"]["name"] = json!("Ada Lovelace");
    body["user"]["id"] = json!(9_007_199_254_740_993_i64);
    body["user"]["email_verified_at"] = json!("2025-01-02T03:04:05.678901Z");
    body["user"]["last_login_at"] = json!("2025-11-13T12:45:00.5Z");
    Mock::given(method("POST"))
        .and(path("/api/verify-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let user = client(&server).verify_token("t").await.unwrap().user;
    assert_eq!(user.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(user.id, 9_007_199_254_740_993);
    assert_eq!(
        user.email_verified_at,
        DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678901Z").unwrap()
    );
    assert_eq!(user.email_verified_at.timestamp_subsec_micros(), 678_901);
    assert_eq!(user.last_login_at.timestamp_subsec_millis(), 500);
}

#[tokio::test]
async fn the_user_agent_names_the_sdk_by_default_and_can_be_overridden() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900))
        .mount(&server)
        .await;

    client(&server).send_link("a@example.com", None).await.unwrap();
    let custom = builder(&server)
        .user_agent("my-app/2.1 (+ops@example.com)")
        .build()
        .unwrap();
    custom.send_link("a@example.com", None).await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    let default_agent = format!("magicauth-rust/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(header(&requests[0], "user-agent"), Some(default_agent.as_str()));
    assert_eq!(
        header(&requests[1], "user-agent"),
        Some("my-app/2.1 (+ops@example.com)")
    );
}

#[tokio::test]
async fn the_app_key_travels_only_in_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(send_link_ok(900))
        .mount(&server)
        .await;
    client(&server).send_link("a@example.com", None).await.unwrap();
    let request = &received(&server).await[0];
    assert!(!request.url.as_str().contains(APP_KEY), "{}", request.url);
    for (name, value) in &request.headers {
        assert!(
            !value.as_bytes().windows(APP_KEY.len()).any(|w| w == APP_KEY.as_bytes()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_trailing_slash_on_the_base_url_is_ignored() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/send-link"))
        .respond_with(send_link_ok(900))
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server)
        .base_url(format!("{}/api/", server.uri()))
        .build()
        .unwrap();
    assert_eq!(client.base_url(), format!("{}/api", server.uri()));
    client.send_link("a@example.com", None).await.unwrap();
}
