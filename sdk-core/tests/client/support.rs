//! Helpers shared by the test modules.

use std::time::Duration;

use magicauth::{Client, ClientBuilder};
use serde_json::{Value, json};
use wiremock::{MockServer, Request, ResponseTemplate};

/// The app key every test client uses; it must never show up in output.
pub const APP_KEY: &str = "mk_test_S3cr3tAppKey_9f2c1e";

/// A builder pointed at `server`'s `/api`, with the test key and 1 ms backoff.
pub fn builder(server: &MockServer) -> ClientBuilder {
    Client::builder()
        .base_url(format!("{}/api", server.uri()))
        .app_key(APP_KEY)
        .retry_base_delay(Duration::from_millis(1))
}

pub fn client(server: &MockServer) -> Client {
    builder(server).build().expect("a valid configuration")
}

/// The contract's error body.
pub fn error_body(code: &str, message: &str) -> Value {
    json!({"success": false, "error": message, "code": code})
}

/// An error response with the contract's body.
pub fn api_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(error_body(code, message))
}

/// A successful `send-link` response.
pub fn send_link_ok(expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"success": true, "expires_in": expires_in}))
}

/// Every request the server received.
pub async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("request recording is on")
}

/// How many requests the server received for `path`.
pub async fn count(server: &MockServer, path: &str) -> usize {
    received(server).await.iter().filter(|r| r.url.path() == path).count()
}

/// A header of a received request, as text.
pub fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
}

/// A base URL on a loopback port where nothing listens (connection refused).
pub fn closed_port_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/api")
}

/// Fails when `text` shows the app key, whole or its secret part.
pub fn assert_no_key(text: &str) {
    assert!(!text.contains(APP_KEY), "app key shown: {text}");
    assert!(!text.contains("S3cr3tAppKey"), "part of the app key shown: {text}");
}
