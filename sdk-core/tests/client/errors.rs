//! Every API error code, and every response that is not the contract's, maps
//! to the right `magicauth::Error`.

use std::time::Duration;

use magicauth::Error;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{api_error, assert_no_key, builder, received};

type IsKind = fn(&Error) -> bool;

/// API.md's table: code, status, message, and the variant SDK.md maps it to.
const CONTRACT: [(&str, u16, &str, IsKind); 11] = [
    ("invalid_request", 400, "email: not a valid address", |e| {
        matches!(e, Error::InvalidRequest(_))
    }),
    ("invalid_token", 400, "Invalid token", |e| {
        matches!(e, Error::InvalidToken(_))
    }),
    ("token_used", 400, "Token already used", |e| {
        matches!(e, Error::TokenAlreadyUsed(_))
    }),
    ("token_expired", 400, "Token expired", |e| {
        matches!(e, Error::TokenExpired(_))
    }),
    ("invalid_app_key", 401, "Invalid app_key", |e| {
        matches!(e, Error::InvalidAppKey(_))
    }),
    ("app_disabled", 403, "App disabled", |e| {
        matches!(e, Error::Forbidden(_))
    }),
    ("redirect_not_allowed", 403, "Redirect URL not whitelisted", |e| {
        matches!(e, Error::Forbidden(_))
    }),
    ("payload_too_large", 413, "Request body over 16 KiB", |e| {
        matches!(e, Error::InvalidRequest(_))
    }),
    ("rate_limited", 429, "Rate limit exceeded", |e| {
        matches!(e, Error::RateLimited { .. })
    }),
    ("quota_exceeded", 429, "Monthly limit exceeded", |e| {
        matches!(e, Error::RateLimited { .. })
    }),
    ("internal_error", 500, "Internal server error", |e| {
        matches!(e, Error::Server(_))
    }),
];

/// Calls `send_link` or `verify_token` (by `endpoint`) and returns its error.
async fn call_error(client: &magicauth::Client, endpoint: &str) -> Error {
    match endpoint {
        "send-link" => client
            .send_link("user@example.com", None)
            .await
            .expect_err("the server answered an error"),
        _ => client
            .verify_token("tok_abc")
            .await
            .expect_err("the server answered an error"),
    }
}

#[tokio::test]
async fn every_contract_code_maps_to_its_variant() {
    let server = MockServer::start().await;
    let client = builder(&server).max_retries(0).build().unwrap();
    for endpoint in ["send-link", "verify-token"] {
        for (code, status, message, is_kind) in CONTRACT {
            server.reset().await;
            let mut response = api_error(status, code, message);
            if status == 429 {
                response = response.insert_header("Retry-After", "7");
            }
            Mock::given(method("POST"))
                .and(path(format!("/api/{endpoint}")))
                .respond_with(response)
                .expect(1)
                .mount(&server)
                .await;

            let error = call_error(&client, endpoint).await;
            let context = format!("{endpoint} {code}: {error:?}");
            assert!(is_kind(&error), "wrong variant for {context}");
            assert_eq!(error.code(), code, "{context}");
            assert_eq!(error.message(), message, "{context}");
            assert_eq!(error.status(), Some(status), "{context}");
            assert_eq!(error.raw_body(), None, "a contract body is not kept raw: {context}");
            let expected_wait = (status == 429).then_some(Duration::from_secs(7));
            assert_eq!(error.retry_after(), expected_wait, "{context}");
            assert_eq!(error.to_string(), format!("{message} ({code}, HTTP {status})"));
            assert_no_key(&error.to_string());
            assert_no_key(&format!("{error:?}"));
            server.verify().await;
        }
    }
}

#[tokio::test]
async fn routing_codes_are_invalid_requests() {
    let server = MockServer::start().await;
    let client = builder(&server).max_retries(0).build().unwrap();
    for (code, status, message) in [
        ("not_found", 404, "Not found"),
        ("method_not_allowed", 405, "Method not allowed"),
    ] {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(api_error(status, code, message))
            .mount(&server)
            .await;
        let error = call_error(&client, "verify-token").await;
        assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
        assert_eq!(
            (error.code(), error.message(), error.status()),
            (code, message, Some(status))
        );
    }
}

#[tokio::test]
async fn unknown_codes_are_classified_by_status() {
    type Case = (u16, IsKind);
    let cases: [Case; 9] = [
        (400, |e| matches!(e, Error::InvalidRequest(_))),
        (401, |e| matches!(e, Error::InvalidAppKey(_))),
        (403, |e| matches!(e, Error::Forbidden(_))),
        (404, |e| matches!(e, Error::InvalidRequest(_))),
        (409, |e| matches!(e, Error::InvalidRequest(_))),
        (422, |e| matches!(e, Error::InvalidRequest(_))),
        (429, |e| matches!(e, Error::RateLimited { .. })),
        (500, |e| matches!(e, Error::Server(_))),
        (503, |e| matches!(e, Error::Server(_))),
    ];
    let server = MockServer::start().await;
    let client = builder(&server).max_retries(0).build().unwrap();
    for (status, is_kind) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path("/api/send-link"))
            .respond_with(api_error(status, "brand_new_code", "Something new").insert_header("Retry-After", "4"))
            .mount(&server)
            .await;
        let error = call_error(&client, "send-link").await;
        assert!(is_kind(&error), "HTTP {status}: {error:?}");
        // A 4xx keeps the server's code; a 5xx is a `server_error`, as the
        // SDK contract has it (a server error's code is `internal_error` or that).
        let code = if status >= 500 {
            "server_error"
        } else {
            "brand_new_code"
        };
        assert_eq!(error.code(), code, "HTTP {status}");
        assert_eq!(error.message(), "Something new");
        assert_eq!(error.status(), Some(status));
        let expected_wait = (status == 429).then_some(Duration::from_secs(4));
        assert_eq!(error.retry_after(), expected_wait, "HTTP {status}");
    }
}

#[tokio::test]
async fn an_html_bad_gateway_is_a_server_error_with_its_body() {
    let server = MockServer::start().await;
    let html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>";
    Mock::given(method("POST"))
        .and(path("/api/verify-token"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(html, "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(0).build().unwrap();
    let error = call_error(&client, "verify-token").await;
    assert!(matches!(error, Error::Server(_)), "{error:?}");
    assert_eq!(error.code(), "server_error");
    assert_eq!(error.status(), Some(502));
    assert_eq!(error.raw_body(), Some(html));
    assert!(!error.message().is_empty());
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn non_json_error_bodies_are_classified_by_status() {
    type Case = (u16, &'static str, IsKind);
    let cases: [Case; 6] = [
        (401, "invalid_app_key", |e| matches!(e, Error::InvalidAppKey(_))),
        (403, "forbidden", |e| matches!(e, Error::Forbidden(_))),
        (404, "invalid_request", |e| matches!(e, Error::InvalidRequest(_))),
        (413, "payload_too_large", |e| matches!(e, Error::InvalidRequest(_))),
        (429, "rate_limited", |e| matches!(e, Error::RateLimited { .. })),
        (503, "server_error", |e| matches!(e, Error::Server(_))),
    ];
    let server = MockServer::start().await;
    let client = builder(&server).max_retries(0).build().unwrap();
    for (status, code, is_kind) in cases {
        server.reset().await;
        let body = format!("upstream says {status}");
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_raw(body.clone(), "text/plain")
                    .insert_header("Retry-After", "2"),
            )
            .mount(&server)
            .await;
        let error = call_error(&client, "send-link").await;
        assert!(is_kind(&error), "HTTP {status}: {error:?}");
        assert_eq!(error.code(), code, "HTTP {status}");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.raw_body(), Some(body.as_str()));
        let expected_wait = (status == 429).then_some(Duration::from_secs(2));
        assert_eq!(error.retry_after(), expected_wait, "HTTP {status}");
    }
}

#[tokio::test]
async fn a_success_status_with_a_body_that_is_not_the_contract_is_a_server_error() {
    let server = MockServer::start().await;
    let client = builder(&server).build().unwrap();
    for (endpoint, body) in [
        ("send-link", "OK"),
        ("verify-token", "<html>hello</html>"),
        ("send-link", r#"{"success": true}"#),
        ("verify-token", r#"{"success": true, "user": {"id": 1}}"#),
    ] {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path(format!("/api/{endpoint}")))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .expect(1) // not retried: the server answered
            .mount(&server)
            .await;
        let error = call_error(&client, endpoint).await;
        assert!(matches!(error, Error::Server(_)), "{endpoint} {body}: {error:?}");
        assert_eq!(error.code(), "server_error");
        assert_eq!(error.status(), Some(200));
        assert_eq!(error.raw_body(), Some(body));
        server.verify().await;
    }
}

#[tokio::test]
async fn retry_after_is_read_from_a_429() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(api_error(429, "rate_limited", "Rate limit exceeded").insert_header("Retry-After", "12"))
        .mount(&server)
        .await;
    let client = builder(&server).max_retries(0).build().unwrap();
    let error = call_error(&client, "send-link").await;
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(12)));

    // Without the header there is nothing to report.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(api_error(429, "rate_limited", "Rate limit exceeded"))
        .mount(&server)
        .await;
    let error = call_error(&client, "send-link").await;
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn extra_fields_in_an_error_body_are_ignored() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"success": false, "error": "Token expired", "code": "token_expired", "request_id": "r1"}),
        ))
        .mount(&server)
        .await;
    let client = builder(&server).build().unwrap();
    let error = call_error(&client, "verify-token").await;
    assert!(matches!(error, Error::TokenExpired(_)), "{error:?}");
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_a_server_error() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "expires_in": 900})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    let client = builder(&server).build().unwrap();
    let target = elsewhere.uri().replace("http://", "http://proxy-user:proxy-pass@") + "/api/verify-token?sig=abc#part";
    for status in [301, 302, 303, 307, 308] {
        for endpoint in ["send-link", "verify-token"] {
            server.reset().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(status).insert_header("Location", target.as_str()))
                .expect(1) // not retried either
                .mount(&server)
                .await;
            let error = call_error(&client, endpoint).await;
            assert!(matches!(error, Error::Server(_)), "HTTP {status}: {error:?}");
            assert_eq!(error.code(), "server_error");
            assert_eq!(error.status(), Some(status));
            assert!(error.message().contains("redirect"), "{}", error.message());
            let shown = format!("{}/api/verify-token", elsewhere.uri());
            assert!(error.message().contains(&shown), "{}", error.message());
            for hidden in ["proxy-user", "proxy-pass", "sig=abc", "part"] {
                assert!(!error.message().contains(hidden), "{hidden}: {}", error.message());
            }
            assert_no_key(&format!("{error} {error:?}"));
            server.verify().await;
        }
    }
    elsewhere.verify().await;
    assert!(
        received(&elsewhere).await.is_empty(),
        "nothing reached the redirect's target"
    );
}

#[tokio::test]
async fn a_relative_redirect_is_named_in_full_without_credentials_or_query() {
    let server = MockServer::start().await;
    let client = builder(&server).build().unwrap();
    let host = server.uri().trim_start_matches("http://").to_owned();
    for (location, shown) in [
        (
            "/v2/verify-token?key=abc".to_owned(),
            format!("{}/v2/verify-token", server.uri()),
        ),
        (
            format!("//proxy-user:proxy-pass@{host}/v2/verify-token?key=abc"),
            format!("{}/v2/verify-token", server.uri()),
        ),
    ] {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(308).insert_header("Location", location.as_str()))
            .expect(1)
            .mount(&server)
            .await;
        let error = call_error(&client, "verify-token").await;
        assert!(matches!(error, Error::Server(_)), "{location}: {error:?}");
        assert_eq!(error.status(), Some(308));
        assert!(
            error.message().contains(&format!(" to {shown};")),
            "{location}: {}",
            error.message()
        );
        for hidden in ["key=abc", "proxy-user", "proxy-pass"] {
            assert!(!error.message().contains(hidden), "{hidden}: {}", error.message());
        }
        server.verify().await;
    }
}
