//! The HTTP contract of API.md: every error row, the order of checks, the
//! allow-list, tokens, users, sessions, idempotency and rate limits.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use magicauth_server::clock::Clock;
use magicauth_server::domain::MagicToken;
use magicauth_server::store::{
    ConsumeClaim, ConsumeOutcome, IdempotencyClaim, IdempotencyQuery, Refuse, Respond, Retention, StoredResponse,
};

use crate::support::{Backend, TestApp, assert_error, backend_tests, json_of, token_of};

const CALLBACK: &str = "https://app.example.com/auth/callback";

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.http.post(format!("{}{path}", app.base)).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    request.send().await.expect("request sent")
}

backend_tests!(send_link_and_verify_round_trip);
async fn send_link_and_verify_round_trip(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, key) = app.create_app(&["--name", "Acme"]).await;
    let response = app.send_link(&key, "  User@Example.com ", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (_, body) = json_of(response).await;
    assert_eq!(body, json!({"success": true, "expires_in": 900}));

    let mails = app.wait_for_mail(1).await;
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["user@example.com".to_string()]);
    assert_eq!(mail.subject().as_deref(), Some("Your sign-in link for Acme"));
    let text = mail.text_body().expect("text part");
    let html = mail.html_body().expect("html part");
    let link = mail.find_link(CALLBACK).expect("link in text part");
    assert!(link.starts_with(&format!("{CALLBACK}?magic_token=")), "{link}");
    assert!(text.contains("15 minutes") && html.contains("15 minutes"));
    assert!(html.contains(&link.replace('&', "&amp;")));
    let token = token_of(mail);
    assert_eq!(token.len(), 43, "256-bit base64url token");
    assert!(B64.decode(&token).map(|b| b.len()) == Ok(32));

    let (status, body) = json_of(app.verify(&key, &token).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["redirect_url"], json!(CALLBACK));
    let user = &body["user"];
    assert!(user["id"].as_i64().unwrap() > 0);
    assert_eq!(user["email"], json!("user@example.com"));
    assert_eq!(user["name"], Value::Null);
    for field in ["email_verified_at", "last_login_at"] {
        let ts = user[field].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
    }
    let jwt = body["token"].as_str().unwrap();
    let claims = check_jwt(&app, jwt).await;
    assert_eq!(claims["aud"], json!(app_id));
    assert_eq!(claims["sub"], json!(user["id"].as_i64().unwrap().to_string()));
    assert_eq!(claims["email"], json!("user@example.com"));
    assert_eq!(claims["iss"], json!(app.base));
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 24 * 3600);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // Single use.
    let message = assert_error(app.verify(&key, &token).await, 400, "token_used").await;
    assert_eq!(message, "Token already used");
}

/// Verifies the JWT's EdDSA signature against the server's JWKS; returns the claims.
async fn check_jwt(app: &TestApp, jwt: &str) -> Value {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], json!("EdDSA"));
    assert_eq!(header["typ"], json!("JWT"));
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid in JWKS");
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let public = B64.decode(key["x"].as_str().unwrap()).unwrap();
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &B64.decode(parts[2]).unwrap(),
        )
        .expect("valid signature");
    serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap()
}

backend_tests!(malformed_bodies_are_invalid_request);
async fn malformed_bodies_are_invalid_request(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let json_ct = Some("application/json");
    for path in ["/api/send-link", "/api/verify-token"] {
        for body in ["{", "not json", "", "[]", "42", "null", "{\"email\": }"] {
            assert_error(raw_post(&app, path, json_ct, body).await, 400, "invalid_request").await;
        }
        // Wrong or missing content type.
        let valid = json!({"email": "a@b.co", "token": "x", "app_key": key}).to_string();
        assert_error(
            raw_post(&app, path, Some("text/plain"), valid.clone()).await,
            400,
            "invalid_request",
        )
        .await;
        assert_error(raw_post(&app, path, None, valid.clone()).await, 400, "invalid_request").await;
        // The JSON charset parameter is fine.
        let (_, body) = json_of(raw_post(&app, path, Some("application/json; charset=utf-8"), valid).await).await;
        assert_ne!(
            body["code"],
            json!("invalid_request"),
            "charset parameter accepted on {path}"
        );
    }
    // Missing and mistyped fields are named.
    let cases = [
        ("/api/send-link", json!({"app_key": key}), "email"),
        ("/api/send-link", json!({"email": "a@b.co"}), "app_key"),
        ("/api/send-link", json!({"email": 5, "app_key": key}), "email"),
        (
            "/api/send-link",
            json!({"email": "a@b.co", "app_key": key, "redirect_url": 3}),
            "redirect_url",
        ),
        ("/api/send-link", json!({"email": null, "app_key": key}), "email"),
        ("/api/verify-token", json!({"app_key": key}), "token"),
        ("/api/verify-token", json!({"token": ["x"], "app_key": key}), "token"),
        ("/api/verify-token", json!({"token": "x", "app_key": {}}), "app_key"),
    ];
    for (path, body, field) in cases {
        let message = assert_error(app.post(path, &body).await, 400, "invalid_request").await;
        assert!(message.contains(field), "{message:?} names {field}");
    }
}

backend_tests!(bad_email_and_url_are_invalid_request);
async fn bad_email_and_url_are_invalid_request(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let long_local = format!("{}@example.com", "a".repeat(250));
    for email in [
        "no-at-sign",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "user@localhost",
        "user@exa mple.com",
        "user@example.com\r\nBcc: victim@example.com",
        "user\n@example.com",
        "",
        long_local.as_str(),
        // Addresses mail cannot be sent to: refused now, not lost later.
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a:b@example.com",
    ] {
        let message = assert_error(app.send_link(&key, email, None).await, 400, "invalid_request").await;
        assert!(message.contains("email"), "{message}");
    }
    for (i, url) in [
        "not a url",
        "/relative/path",
        "http://app.example.com/auth/callback",
        "ftp://app.example.com/auth/callback",
        "javascript:alert(1)",
        "https://user:pw@app.example.com/auth/callback",
        "https://app.example.com/auth/callback#frag",
    ]
    .iter()
    .enumerate()
    {
        let email = format!("url{i}@example.com");
        let message = assert_error(app.send_link(&key, &email, Some(url)).await, 400, "invalid_request").await;
        assert!(message.contains("redirect_url"), "{message}");
    }
    assert!(app.smtp.messages().await.is_empty(), "no email for rejected requests");
}

backend_tests!(app_key_errors);
async fn app_key_errors(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, key) = app.create_app(&[]).await;
    for bad in [
        "",
        "mk_",
        "nope",
        "mk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        &format!("{key}x"),
    ] {
        let message = assert_error(app.send_link(bad, "a@example.com", None).await, 401, "invalid_app_key").await;
        assert_eq!(message, "Invalid app_key");
        assert_error(app.verify(bad, "token").await, 401, "invalid_app_key").await;
    }
    // Rotated away.
    let rotated: Value =
        serde_json::from_str(app.cli(&["rotate-key", &app_id, "--json"]).await.unwrap().trim()).unwrap();
    assert_error(app.send_link(&key, "a@example.com", None).await, 401, "invalid_app_key").await;
    let new_key = rotated["app_key"].as_str().unwrap();
    assert_eq!(app.send_link(new_key, "a@example.com", None).await.status(), 200);
    // Disabled.
    app.cli(&["disable", &app_id]).await.unwrap();
    let message = assert_error(app.send_link(new_key, "a@example.com", None).await, 403, "app_disabled").await;
    assert_eq!(message, "App disabled");
    assert_error(app.verify(new_key, "token").await, 403, "app_disabled").await;
    app.cli(&["enable", &app_id]).await.unwrap();
    assert_eq!(app.send_link(new_key, "b@example.com", None).await.status(), 200);
}

backend_tests!(checks_run_in_the_documented_order);
async fn checks_run_in_the_documented_order(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (limited_id, limited) = app.create_app(&["--plan", "custom", "--burst", "1"]).await;
    // Shape before key.
    assert_error(
        app.post("/api/send-link", &json!({"app_key": "bad"})).await,
        400,
        "invalid_request",
    )
    .await;
    // Key before email validity and allow-list.
    assert_error(
        app.send_link("bad", "not-an-email", Some("https://evil.com")).await,
        401,
        "invalid_app_key",
    )
    .await;
    // Rate limit before email validity: the burst of 1 is used by an accepted request...
    assert_eq!(app.send_link(&limited, "a@example.com", None).await.status(), 200);
    assert_error(app.send_link(&limited, "not-an-email", None).await, 429, "rate_limited").await;
    assert_error(
        app.send_link(&limited, "a@example.com", Some("https://evil.com/"))
            .await,
        429,
        "rate_limited",
    )
    .await;
    // Disabled before rate limit.
    app.cli(&["disable", &limited_id]).await.unwrap();
    assert_error(app.send_link(&limited, "not-an-email", None).await, 403, "app_disabled").await;
    // Email validity before the allow-list.
    let (_, key) = app.create_app(&[]).await;
    assert_error(
        app.send_link(&key, "not-an-email", Some("https://evil.com/")).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        app.send_link(&key, "a@example.com", Some("https://evil.com/")).await,
        403,
        "redirect_not_allowed",
    )
    .await;
}

backend_tests!(early_rejections_do_not_count_against_the_limit);
async fn early_rejections_do_not_count_against_the_limit(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, key) = app.create_app(&["--burst", "2"]).await;
    for _ in 0..5 {
        assert_error(
            app.post("/api/send-link", &json!({"app_key": key})).await,
            400,
            "invalid_request",
        )
        .await;
        assert_error(
            app.send_link("mk_wrong", "a@example.com", None).await,
            401,
            "invalid_app_key",
        )
        .await;
    }
    app.cli(&["disable", &app_id]).await.unwrap();
    for _ in 0..3 {
        assert_error(app.send_link(&key, "a@example.com", None).await, 403, "app_disabled").await;
    }
    app.cli(&["enable", &app_id]).await.unwrap();
    let first = app.send_link(&key, "a@example.com", None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
}

backend_tests!(redirect_allow_list_matching);
async fn redirect_allow_list_matching(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app
        .create_app(&[
            "--plan",
            "custom",
            "--burst",
            "1000",
            "--redirect-url",
            "https://a.example.com/app",
            "--redirect-url",
            "http://localhost:3000/cb",
            "--redirect-url",
            "https://b.example.com:8443/",
        ])
        .await;
    let allowed = [
        "https://a.example.com/app",
        "https://a.example.com/app/",
        "https://a.example.com/app/cb",
        "https://a.example.com/app/cb?next=%2Fhome&x=1",
        "https://A.EXAMPLE.COM/app/cb",
        "https://a.example.com:443/app/cb",
        "https://a.example.com/other/../app/cb",
        "https://a.example.com/app/./cb",
        "http://localhost:3000/cb",
        "http://localhost:3000/cb/deeper",
        "https://b.example.com:8443/anything",
    ];
    let rejected = [
        "https://a.example.com/apple",
        "https://a.example.com/ap",
        "https://a.example.com/",
        "https://a.example.com/app/../admin",
        "https://a.example.com/app/%2e%2e/admin",
        "https://evil.a.example.com/app",
        "https://a.example.com.evil.com/app",
        "https://a.example.com./app",
        "https://a.example.com:8443/app",
        "http://localhost:3001/cb",
        "http://localhost/cb",
        "https://localhost:3000/cb",
        "https://b.example.com/anything",
        "https://evil.com/a.example.com/app",
        "https://evil.com?https://a.example.com/app",
    ];
    for (i, url) in allowed.iter().enumerate() {
        let response = app.send_link(&key, &format!("ok{i}@example.com"), Some(url)).await;
        assert_eq!(
            response.status(),
            200,
            "{url} should be allowed: {:?}",
            response.text().await
        );
    }
    for (i, url) in rejected.iter().enumerate() {
        let message = assert_error(
            app.send_link(&key, &format!("no{i}@example.com"), Some(url)).await,
            403,
            "redirect_not_allowed",
        )
        .await;
        assert_eq!(message, "Redirect URL not whitelisted", "{url}");
    }
    // Userinfo and fragments are invalid before matching is even tried.
    for url in [
        "https://a.example.com@evil.com/app",
        "https://x@a.example.com/app",
        "https://a.example.com/app#x",
    ] {
        assert_error(
            app.send_link(&key, "u@example.com", Some(url)).await,
            400,
            "invalid_request",
        )
        .await;
    }
    assert_eq!(app.wait_for_mail(allowed.len()).await.len(), allowed.len());
}

backend_tests!(the_link_carries_the_token_in_the_redirect_query);
async fn the_link_carries_the_token_in_the_redirect_query(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&["--redirect-url", "https://a.example.com/cb"]).await;
    let target = "https://a.example.com/cb?next=%2Fdash&magic_token=old&lang=en";
    assert_eq!(app.send_link(&key, "q@example.com", Some(target)).await.status(), 200);
    let mail = app.wait_for_mail(1).await.remove(0);
    let link = url::Url::parse(&mail.find_link("https://a.example.com/cb").unwrap()).unwrap();
    let pairs: Vec<(String, String)> = link
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(pairs.iter().filter(|(k, _)| k == "magic_token").count(), 1);
    assert!(pairs.contains(&("next".into(), "/dash".into())));
    assert!(pairs.contains(&("lang".into(), "en".into())));
    let token = token_of(&mail);
    assert_ne!(token, "old");
    // verify-token returns the redirect the link was sent to.
    let (_, body) = json_of(app.verify(&key, &token).await).await;
    assert_eq!(body["redirect_url"], json!(target));
}

backend_tests!(token_errors);
async fn token_errors(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    for bad in ["", "short", "!!!!", &"A".repeat(43), &"x".repeat(5000)] {
        let message = assert_error(app.verify(&key, bad).await, 400, "invalid_token").await;
        assert_eq!(message, "Invalid token");
    }
}

backend_tests!(expired_tokens_are_token_expired_even_unused);
async fn expired_tokens_are_token_expired_even_unused(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&["--token-ttl", "10m"]).await;
    let response = app.send_link(&key, "e@example.com", None).await;
    assert_eq!(json_of(response).await.1["expires_in"], json!(600));
    let token = crate::support::token_of(&app.wait_for_mail(1).await[0]);
    app.clock.advance(10 * 60 * 1000 + 1000);
    let message = assert_error(app.verify(&key, &token).await, 400, "token_expired").await;
    assert_eq!(message, "Token expired");
    // Still expired (not invalid, not used) on a second look.
    assert_error(app.verify(&key, &token).await, 400, "token_expired").await;
}

backend_tests!(default_ttl_is_fifteen_minutes);
async fn default_ttl_is_fifteen_minutes(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "t@example.com").await;
    app.clock.advance(14 * 60 * 1000);
    let second = app.request_token(&key, "t@example.com").await;
    assert_eq!(app.verify(&key, &token).await.status(), 200, "valid at 14 min");
    app.clock.advance(2 * 60 * 1000);
    assert_eq!(
        app.verify(&key, &second).await.status(),
        200,
        "second link is 2 min old"
    );
}

backend_tests!(a_token_of_another_app_is_invalid_and_stays_unused);
async fn a_token_of_another_app_is_invalid_and_stays_unused(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key_a) = app.create_app(&[]).await;
    let (_, key_b) = app.create_app(&[]).await;
    let token = app.request_token(&key_a, "x@example.com").await;
    assert_error(app.verify(&key_b, &token).await, 400, "invalid_token").await;
    assert_eq!(
        app.verify(&key_a, &token).await.status(),
        200,
        "still usable by its own app"
    );
}

backend_tests!(concurrent_verifies_of_one_token_succeed_exactly_once);
async fn concurrent_verifies_of_one_token_succeed_exactly_once(backend: Backend) {
    let app = Arc::new(TestApp::spawn(&backend).await);
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "race@example.com").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (app, key, token) = (app.clone(), key.clone(), token.clone());
        tasks.spawn(async move { json_of(app.verify(&key, &token).await).await });
    }
    let mut ok = 0;
    let mut used = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        match (status, body["code"].as_str()) {
            (200, _) => ok += 1,
            (400, Some("token_used")) => used += 1,
            other => panic!("unexpected {other:?}: {body}"),
        }
    }
    assert_eq!((ok, used), (1, 31));
}

backend_tests!(users_are_per_app_and_case_insensitive);
async fn users_are_per_app_and_case_insensitive(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key_a) = app.create_app(&[]).await;
    let (_, key_b) = app.create_app(&[]).await;
    let t1 = app.request_token(&key_a, "Mixed.Case@Example.COM").await;
    let (_, first) = json_of(app.verify(&key_a, &t1).await).await;
    app.clock.advance(5_000);
    let t2 = app.request_token(&key_a, "mixed.case@example.com").await;
    let (_, second) = json_of(app.verify(&key_a, &t2).await).await;
    assert_eq!(first["user"]["id"], second["user"]["id"], "same user");
    assert_eq!(
        first["user"]["email_verified_at"], second["user"]["email_verified_at"],
        "set once"
    );
    assert_ne!(
        first["user"]["last_login_at"], second["user"]["last_login_at"],
        "updated per login"
    );
    assert!(second["user"]["last_login_at"].as_str() > first["user"]["last_login_at"].as_str());
    let t3 = app.request_token(&key_b, "mixed.case@example.com").await;
    let (_, other) = json_of(app.verify(&key_b, &t3).await).await;
    assert_ne!(other["user"]["id"], first["user"]["id"], "another app, another user");
}

backend_tests!(several_unused_links_for_one_email_are_each_valid_once);
async fn several_unused_links_for_one_email_are_each_valid_once(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let t1 = app.request_token(&key, "multi@example.com").await;
    let t2 = app.request_token(&key, "multi@example.com").await;
    assert_ne!(t1, t2);
    assert_eq!(app.verify(&key, &t2).await.status(), 200);
    assert_eq!(app.verify(&key, &t1).await.status(), 200);
    assert_error(app.verify(&key, &t1).await, 400, "token_used").await;
}

backend_tests!(rate_limit_headers_and_burst);
async fn rate_limit_headers_and_burst(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&["--plan", "custom", "--burst", "3"]).await;
    for i in 0..3u32 {
        let response = app.send_link(&key, &format!("r{i}@example.com"), None).await;
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], (2 - i).to_string().as_str());
        let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
        assert!(h.get("retry-after").is_none());
    }
    let response = app.send_link(&key, "r9@example.com", None).await;
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let message = assert_error(response, 429, "rate_limited").await;
    assert_eq!(message, "Rate limit exceeded");
    // A rolling minute later the window is free again.
    app.clock.advance(61_000);
    assert_eq!(app.send_link(&key, "r10@example.com", None).await.status(), 200);
    assert_eq!(app.wait_for_mail(4).await.len(), 4);
}

backend_tests!(free_plan_burst_is_one_hundred);
async fn free_plan_burst_is_one_hundred(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let response = app.send_link(&key, "f@example.com", None).await;
    // The per-email window (5) is the closer one here, so check the app's by the limit of a fresh email.
    assert_eq!(response.status(), 200);
    let mut last = None;
    for i in 0..100 {
        let response = app.send_link(&key, &format!("f{i}@example.com"), None).await;
        last = Some(response.status().as_u16());
        if response.status() != 200 {
            assert_eq!(i, 99, "the 101st link in a minute is refused");
            assert_error(response, 429, "rate_limited").await;
            break;
        }
    }
    assert_eq!(last, Some(429));
}

backend_tests!(five_links_per_email_per_fifteen_minutes);
async fn five_links_per_email_per_fifteen_minutes(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    for _ in 0..5 {
        assert_eq!(app.send_link(&key, "same@example.com", None).await.status(), 200);
    }
    let response = app.send_link(&key, "SAME@example.com", None).await;
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 60 && retry <= 900, "{retry}");
    assert_error(response, 429, "rate_limited").await;
    assert_eq!(app.send_link(&key, "other@example.com", None).await.status(), 200);
    app.clock.advance(15 * 60 * 1000 + 1000);
    assert_eq!(app.send_link(&key, "same@example.com", None).await.status(), 200);
}

backend_tests!(monthly_quota);
async fn monthly_quota(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&["--monthly-limit", "2"]).await;
    assert_eq!(app.send_link(&key, "m1@example.com", None).await.status(), 200);
    assert_eq!(app.send_link(&key, "m2@example.com", None).await.status(), 200);
    let response = app.send_link(&key, "m3@example.com", None).await;
    assert!(response.headers().contains_key("retry-after"));
    let message = assert_error(response, 429, "quota_exceeded").await;
    assert_eq!(message, "Monthly limit exceeded");
    assert_eq!(app.wait_for_mail(2).await.len(), 2);
    // Next calendar month (at most 31 days on).
    app.clock.advance(32 * 24 * 3600 * 1000);
    assert_eq!(app.send_link(&key, "m4@example.com", None).await.status(), 200);

    let (_, zero) = app.create_app(&["--monthly-limit", "0"]).await;
    assert_error(app.send_link(&zero, "z@example.com", None).await, 429, "quota_exceeded").await;
}

backend_tests!(idempotent_replays);
async fn idempotent_replays(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let body = json!({"email": "idem@example.com", "app_key": key});
    let send = |idem: &'static str, body: Value| {
        let request = app
            .http
            .post(format!("{}/api/send-link", app.base))
            .header("Idempotency-Key", idem)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = json_of(send("key-1", body.clone()).await).await;
    let again = send("key-1", body.clone()).await;
    assert_eq!(
        again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(json_of(again).await, first);
    // Same key, other body.
    assert_error(
        send("key-1", json!({"email": "other@example.com", "app_key": key})).await,
        400,
        "invalid_request",
    )
    .await;
    // Exactly one email went out.
    app.wait_for_mail(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.messages().await.len(), 1);

    // verify-token: a replay returns the first success, a new key sees the token used.
    let token = token_of(&app.smtp.messages().await[0]);
    let verify = |idem: &'static str| app.verify_with_key(&key, &token, idem);
    let (status, first) = json_of(verify("v-1").await).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(verify("v-1").await).await, (200, first));
    assert_error(verify("v-2").await, 400, "token_used").await;

    // Keys are per app: another app may use the same key.
    let (_, other) = app.create_app(&[]).await;
    let response = send("key-1", json!({"email": "idem@example.com", "app_key": other})).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("idempotent-replayed").is_none());
    // Malformed keys.
    for bad in ["", &"k".repeat(256)] {
        let response = app
            .http
            .post(format!("{}/api/send-link", app.base))
            .header("Idempotency-Key", bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_request").await;
    }
}

backend_tests!(refused_verifications_are_stored_under_their_key);
async fn refused_verifications_are_stored_under_their_key(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let verify = |idem: &'static str, token: String| {
        let app = &app;
        let key = &key;
        async move { app.verify_with_key(key, &token, idem).await }
    };
    let replayed = |response: &reqwest::Response| response.headers().get("idempotent-replayed").is_some();
    let unknown = "A".repeat(43);
    for (idem, token) in [("unknown", unknown.clone()), ("malformed", "not a token".to_owned())] {
        let first = verify(idem, token.clone()).await;
        assert!(!replayed(&first));
        assert_error(first, 400, "invalid_token").await;
        let again = verify(idem, token).await;
        assert!(replayed(&again), "{idem}: the refusal was not stored");
        assert_error(again, 400, "invalid_token").await;
        // The key is taken: another body is refused.
        assert_error(verify(idem, "B".repeat(43)).await, 400, "invalid_request").await;
    }

    // A used token: the first success replays under its key, a refusal under its own.
    assert_eq!(app.send_link(&key, "refused@example.com", None).await.status(), 200);
    let token = token_of(&app.wait_for_mail(1).await[0]);
    let (status, first) = json_of(verify("ok", token.clone()).await).await;
    assert_eq!(status, 200);
    let replay = verify("ok", token.clone()).await;
    assert!(replayed(&replay));
    assert_eq!(json_of(replay).await, (200, first));
    assert_error(verify("late", token.clone()).await, 400, "token_used").await;
    let again = verify("late", token).await;
    assert!(replayed(&again));
    assert_error(again, 400, "token_used").await;
}

backend_tests!(a_token_consumed_under_a_key_stores_the_response_in_the_same_call);
/// The claim, the consumption and the response are one transaction: once
/// `consume_link` returns, the key replays the response, with no completion
/// step that a crash could skip (which would leave the token used and the
/// key in progress, so that a retry found the token used).
async fn a_token_consumed_under_a_key_stores_the_response_in_the_same_call(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "claim@example.com").await;
    let token_hash = MagicToken::parse(&token).expect("a token").hash();
    let now = app.clock.now_ms();
    let query = IdempotencyQuery {
        app_id: &app_id,
        key: "k1",
        request_hash: &[7; 32],
        now,
        retention_ms: 86_400_000,
        abandon_after_ms: 60_000,
    };
    let respond: Respond = Arc::new(|user, redirect_url| StoredResponse {
        status: 200,
        body: format!("{} {redirect_url}", user.email),
    });
    // A refusal's stored body names its outcome.
    fn claim_with<'a>(query: &'a IdempotencyQuery<'a>, respond: Respond) -> ConsumeClaim<'a> {
        let refuse: Refuse = Arc::new(|outcome| StoredResponse {
            status: 400,
            body: format!("{outcome:?}"),
        });
        ConsumeClaim { query, respond, refuse }
    }
    let claim = claim_with(&query, respond);
    let outcome = app
        .store
        .consume_link(&token_hash, &app_id, now, Some(&claim))
        .await
        .expect("consume");
    let ConsumeOutcome::Consumed {
        response: Some(response),
        ..
    } = outcome
    else {
        panic!("not consumed with a response: {outcome:?}");
    };
    assert!(response.body.starts_with("claim@example.com "), "{response:?}");
    assert_eq!(
        app.store.claim_idempotency_key(&query).await.expect("claim"),
        IdempotencyClaim::Replay(response)
    );
    // The same key again: nothing more is consumed or stored.
    let again = app
        .store
        .consume_link(&token_hash, &app_id, now, Some(&claim))
        .await
        .expect("consume again");
    assert_eq!(again, ConsumeOutcome::KeyTaken);

    // A refusal is final: it is stored under its key in the same call.
    for (key, hash, refused) in [
        ("k2", token_hash, ConsumeOutcome::Used),
        ("k3", MagicToken::generate().hash(), ConsumeOutcome::Invalid),
    ] {
        let query = IdempotencyQuery { key, ..query };
        let respond: Respond = Arc::new(|_, _| panic!("a refused token was consumed"));
        let outcome = app
            .store
            .consume_link(&hash, &app_id, now, Some(&claim_with(&query, respond)))
            .await
            .expect("refuse");
        assert_eq!(outcome, refused);
        assert_eq!(
            app.store.claim_idempotency_key(&query).await.expect("claim"),
            IdempotencyClaim::Replay(StoredResponse {
                status: 400,
                body: format!("{refused:?}"),
            })
        );
    }
}

backend_tests!(connections_the_database_dropped_are_replaced_before_use);
/// A restart or failover of PostgreSQL ends the server's pooled connections.
/// A connection that sat idle is checked before use and replaced, so no
/// request fails for it (on SQLite there is no connection to lose).
async fn connections_the_database_dropped_are_replaced_before_use(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    assert_error(app.verify(&key, "mt_unknown").await, 400, "invalid_token").await;
    if app.db.backend() == "postgres" {
        app.db
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    for _ in 0..5 {
        assert_error(app.verify(&key, "mt_unknown").await, 400, "invalid_token").await;
    }
}

backend_tests!(idempotency_keys_are_forgotten_after_a_day);
async fn idempotency_keys_are_forgotten_after_a_day(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let send = |email: &str| {
        let request = app
            .http
            .post(format!("{}/api/send-link", app.base))
            .header("Idempotency-Key", "daily")
            .json(&json!({"email": email, "app_key": key}));
        async move { request.send().await.unwrap() }
    };
    assert_eq!(send("first@example.com").await.status(), 200);
    assert_error(send("second@example.com").await, 400, "invalid_request").await;
    // A day later the key is free again, even for another request.
    app.clock.advance(24 * 3600 * 1000 + 1000);
    let response = send("second@example.com").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("idempotent-replayed").is_none());
    // ...and the new request is the one replayed from now on.
    assert_eq!(
        send("second@example.com")
            .await
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_error(send("first@example.com").await, 400, "invalid_request").await;
    let mails = app.wait_for_mail(2).await;
    let mut to: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    to.sort();
    assert_eq!(to, ["first@example.com", "second@example.com"]);
}

backend_tests!(rate_limited_responses_are_not_replayed);
async fn rate_limited_responses_are_not_replayed(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&["--burst", "1"]).await;
    assert_eq!(app.send_link(&key, "a@example.com", None).await.status(), 200);
    let send = || {
        let request = app
            .http
            .post(format!("{}/api/send-link", app.base))
            .header("Idempotency-Key", "retry-me")
            .json(&json!({"email": "b@example.com", "app_key": key}));
        async move { request.send().await.unwrap() }
    };
    assert_error(send().await, 429, "rate_limited").await;
    app.clock.advance(61_000);
    assert_eq!(send().await.status(), 200, "the retry after Retry-After goes through");
}

backend_tests!(oversize_bodies_get_413);
async fn oversize_bodies_get_413(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let big = json!({"email": "a@example.com", "app_key": key, "pad": "x".repeat(17 * 1024)}).to_string();
    for path in ["/api/send-link", "/api/verify-token"] {
        assert_error(
            raw_post(&app, path, Some("application/json"), big.clone()).await,
            413,
            "payload_too_large",
        )
        .await;
    }
    // Just under the limit is fine.
    let fits = json!({"email": "a@example.com", "app_key": key, "pad": "x".repeat(15 * 1024)}).to_string();
    assert_eq!(
        raw_post(&app, "/api/send-link", Some("application/json"), fits)
            .await
            .status(),
        200
    );
}

backend_tests!(unknown_routes_and_methods);
async fn unknown_routes_and_methods(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    for path in ["/", "/api", "/api/send-links", "/api/verify-token/x"] {
        let response = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_error(response, 404, "not_found").await;
    }
    for (method, path) in [
        (reqwest::Method::GET, "/api/send-link"),
        (reqwest::Method::PUT, "/api/verify-token"),
        (reqwest::Method::DELETE, "/api/send-link"),
        (reqwest::Method::POST, "/healthz"),
    ] {
        let response = app
            .http
            .request(method, format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_error(response, 405, "method_not_allowed").await;
    }
}

backend_tests!(internal_errors_leak_nothing);
async fn internal_errors_leak_nothing(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    // Break the database under the running server.
    app.db.execute("DROP TABLE magic_links").await;
    let response = app.send_link(&key, "a@example.com", None).await;
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"success": false, "error": "Internal server error", "code": "internal_error"})
    );
    assert!(!text.contains("magic_links"));
    let verify = app.verify(&key, &"A".repeat(43)).await;
    assert_error(verify, 500, "internal_error").await;
}

/// `/readyz` is what a load balancer asks: 503 once the database is gone,
/// while `/healthz` (liveness) still answers.
#[tokio::test]
async fn readyz_fails_when_the_database_is_gone() {
    let Some(backend) = Backend::postgres() else { return };
    let app = TestApp::spawn(&backend).await;
    let get = |path: &'static str| {
        let request = app.http.get(format!("{}{path}", app.base));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(get("/readyz").await, 200);
    app.db.drop_now().await;
    assert_eq!(get("/readyz").await, 503);
    assert_eq!(get("/healthz").await, 200);
}

backend_tests!(operator_endpoints);
async fn operator_endpoints(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "ops@example.com").await;
    app.verify(&key, &token).await;
    app.verify(&key, &token).await;
    let get = |path: &'static str| {
        let request = app.http.get(format!("{}{path}", app.base));
        async move { request.send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 200);
    let metrics = get("/metrics").await.text().await.unwrap();
    for expected in [
        "magicauth_http_requests_total{route=\"/api/send-link\",status=\"200\"} 1",
        "magicauth_http_requests_total{route=\"/api/verify-token\",status=\"400\"} 1",
        "magicauth_links_sent_total 1",
        "magicauth_verifications_total{outcome=\"success\"} 1",
        "magicauth_verifications_total{outcome=\"token_used\"} 1",
        "magicauth_mail_attempts_total 1",
        "magicauth_mail_failures_total 0",
        "magicauth_outbox_depth 0",
    ] {
        assert!(metrics.contains(expected), "missing {expected:?} in\n{metrics}");
    }
    let spec: Value = get("/api/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/send-link", "/api/verify-token", "/.well-known/jwks.json"] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    let codes: HashSet<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(codes.contains("token_used") && codes.contains("quota_exceeded"));
}

backend_tests!(responses_never_contain_secrets);
async fn responses_never_contain_secrets(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "s@example.com").await;
    let mut seen = String::new();
    for response in [
        app.send_link(&key, "s@example.com", None).await,
        app.verify(&key, &token).await,
        app.verify(&key, &token).await,
        app.http.get(format!("{}/metrics", app.base)).send().await.unwrap(),
    ] {
        seen.push_str(&format!("{:?}", response.headers()));
        seen.push_str(&response.text().await.unwrap());
    }
    assert!(!seen.contains(&key));
    assert!(!seen.contains(&token));
}

backend_tests!(concurrent_duplicates_of_one_idempotency_key_send_one_email);
async fn concurrent_duplicates_of_one_idempotency_key_send_one_email(backend: Backend) {
    let app = Arc::new(TestApp::spawn(&backend).await);
    let (_, key) = app.create_app(&[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (app, key) = (app.clone(), key.clone());
        tasks.spawn(async move {
            let response = app
                .http
                .post(format!("{}/api/send-link", app.base))
                .header("Idempotency-Key", "same-click")
                .json(&json!({"email": "dup@example.com", "app_key": key}))
                .send()
                .await
                .unwrap();
            json_of(response).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), (200, json!({"success": true, "expires_in": 900})));
    }
    app.wait_for_mail(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.smtp.messages().await.len(), 1);
}

backend_tests!(concurrent_duplicates_of_one_verification_get_one_answer);
async fn concurrent_duplicates_of_one_verification_get_one_answer(backend: Backend) {
    let app = Arc::new(TestApp::spawn(&backend).await);
    let (_, key) = app.create_app(&[]).await;
    assert_eq!(app.send_link(&key, "twice@example.com", None).await.status(), 200);
    let token = token_of(&app.wait_for_mail(1).await[0]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (app, key, token) = (app.clone(), key.clone(), token.clone());
        tasks.spawn(async move { json_of(app.verify_with_key(&key, &token, "same-callback").await).await });
    }
    // One consumption; every duplicate gets its answer, session JWT included.
    let mut answers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        answers.push(result.unwrap());
    }
    assert_eq!(answers[0].0, 200, "{:?}", answers[0].1);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    // Another key sees the token used.
    assert_error(
        app.verify_with_key(&key, &token, "other-callback").await,
        400,
        "token_used",
    )
    .await;
}

backend_tests!(purge_deletes_records_past_their_retention);
async fn purge_deletes_records_past_their_retention(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, _) = app.create_app(&[]).await;
    let start = app.clock.now_ms();
    let query = IdempotencyQuery {
        app_id: &app_id,
        key: "old",
        request_hash: &[1; 32],
        now: start,
        retention_ms: 86_400_000,
        abandon_after_ms: 60_000,
    };
    let response = StoredResponse {
        status: 400,
        body: "{}".into(),
    };
    let free = || async { app.store.record_idempotent_response(&query, &response).await.unwrap() };
    let retention = |now| Retention {
        now,
        rate_hits_ms: 3_600_000,
        idempotency_ms: 86_400_000,
        links_after_expiry_ms: 86_400_000,
        outbox_done_ms: 86_400_000,
    };
    // A second key, recorded 10 hours later.
    let later = IdempotencyQuery {
        key: "later",
        now: start + 36_000_000,
        ..query
    };
    let later_free = || async { app.store.record_idempotent_response(&later, &response).await.unwrap() };
    assert!(free().await, "a new key");
    assert!(!free().await, "recorded");
    assert!(later_free().await, "a second new key");
    app.store.purge(&retention(start + 1_000)).await.unwrap();
    assert!(!free().await, "kept within its retention");
    app.store.purge(&retention(start + 86_400_001)).await.unwrap();
    assert!(!later_free().await, "the later key is kept within its retention");
    assert!(free().await, "deleted after its retention");
}

backend_tests!(app_info_describes_the_key_holder_app);
async fn app_info_describes_the_key_holder_app(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (app_id, key) = app.create_app(&["--name", "Described"]).await;
    let get = |auth: Option<String>| {
        let mut request = app.http.get(format!("{}/api/app", app.base));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap() }
    };
    let (status, body) = json_of(get(Some(format!("Bearer {key}"))).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "app": {"id": app_id, "name": "Described"}, "issuer": app.base})
    );
    assert_error(get(None).await, 401, "invalid_app_key").await;
    assert_error(get(Some(key.clone())).await, 401, "invalid_app_key").await;
    assert_error(get(Some("Bearer mk_nope".into())).await, 401, "invalid_app_key").await;
    app.cli(&["disable", &app_id]).await.unwrap();
    assert_error(get(Some(format!("Bearer {key}"))).await, 403, "app_disabled").await;
}
