//! The Rust SDK against the real server: the integration pattern, sessions,
//! sharing one client, retries through a real outage.

use std::time::Duration;

use magicauth::{Client, Error};
use magicauth_testbed::Testbed;

use super::client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_a_link_read_from_the_delivered_email() {
    let testbed = Testbed::start().await.unwrap();
    let (app_id, key) = testbed.create_app(&["--name", "Rust SDK"]).await.unwrap();
    let client = client(&testbed, &key);

    let sent = client
        .send_link(
            "Reader@Example.com",
            Some("https://app.example.com/auth/callback?next=%2Fhome"),
        )
        .await
        .unwrap();
    assert_eq!(sent.expires_in, 900);
    let (_, mail) = testbed
        .wait_for_mail("reader@example.com", 1, Duration::from_secs(15))
        .await
        .expect("email delivered");
    assert_eq!(mail.subject.as_deref(), Some("Your sign-in link for Rust SDK"));
    let token = magicauth::token_from_url(mail.link.as_deref().unwrap()).expect("token in link");

    let verification = client.verify_token(&token).await.unwrap();
    assert_eq!(verification.user.email, "reader@example.com");
    assert_eq!(
        verification.redirect_url,
        "https://app.example.com/auth/callback?next=%2Fhome"
    );
    assert!(verification.user.email_verified_at <= verification.user.last_login_at);
    assert!(
        !format!("{verification:?}").contains(&verification.token),
        "Debug hides the JWT"
    );

    let claims = client.verify_session(&verification.token).await.unwrap();
    assert_eq!(claims.aud, app_id);
    assert_eq!(claims.sub, verification.user.id.to_string());
    assert_eq!(claims.iss, testbed.server_url);

    // A client of another app rejects this app's session.
    let (_, other_key) = testbed.create_app::<&str>(&[]).await.unwrap();
    let other = super::client(&testbed, &other_key);
    assert!(matches!(
        other.verify_session(&verification.token).await,
        Err(Error::InvalidSession(_))
    ));

    let again = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(again, Error::TokenAlreadyUsed(_)), "{again:?}");
    assert_eq!(again.code(), "token_used");
    assert_eq!(again.status(), Some(400));
    testbed.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_shared_by_many_tasks() {
    let testbed = Testbed::start().await.unwrap();
    let (_, key) = testbed.create_app(&["--burst", "1000"]).await.unwrap();
    let client = client(&testbed, &key);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.spawn(async move { client.send_link(&format!("many{i}@example.com"), None).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().expires_in, 900);
    }
    // 50 invalid-token verifications concurrently on the same pool.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        tasks.spawn(async move { client.verify_token("nope").await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(matches!(result.unwrap(), Err(Error::InvalidToken(_))));
    }
    testbed.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_verify_is_not_turned_into_token_used() {
    // The same idempotency key on every attempt means that a verify whose
    // first answer was lost still returns the user when retried. Here the
    // server answers twice for one key: the replay is the first success.
    let testbed = Testbed::start().await.unwrap();
    let (_, key) = testbed.create_app::<&str>(&[]).await.unwrap();
    let client = client(&testbed, &key);
    client.send_link("replay@example.com", None).await.unwrap();
    let (_, mail) = testbed
        .wait_for_mail("replay@example.com", 1, Duration::from_secs(15))
        .await
        .unwrap();
    let token = mail.token.unwrap();
    let http = reqwest_free_post(&testbed, &key, &token, "same-key").await;
    let replay = reqwest_free_post(&testbed, &key, &token, "same-key").await;
    assert_eq!(http, replay);
    assert!(http.contains("\"success\":true"), "{http}");
    testbed.stop().await.unwrap();
}

/// A raw HTTP/1.1 POST with an Idempotency-Key (keeps this test independent of the SDK's key choice).
async fn reqwest_free_post(testbed: &Testbed, key: &str, token: &str, idempotency_key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = testbed.server_url.trim_start_matches("http://");
    let body = serde_json::json!({"token": token, "app_key": key}).to_string();
    let request = format!(
        "POST /api/verify-token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nIdempotency-Key: {idempotency_key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_show_the_key() {
    let testbed = Testbed::start().await.unwrap();
    let client = Client::builder()
        .base_url(&testbed.base_url)
        .app_key("mk_secretButWrong000000000000000000000000")
        .build()
        .unwrap();
    let error = client.send_link("a@example.com", None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidAppKey(_)));
    for shown in [format!("{error}"), format!("{error:?}"), format!("{client:?}")] {
        assert!(!shown.contains("secretButWrong"), "{shown}");
    }
    testbed.stop().await.unwrap();
}
