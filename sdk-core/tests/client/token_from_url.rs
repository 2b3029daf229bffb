//! `magicauth::token_from_url`.

use magicauth::{Client, token_from_url};

#[test]
fn finds_the_magic_token_in_urls_and_query_strings() {
    let token = "Zm9vYmFyLWJhei_qux-123";
    for input in [
        format!("https://yourapp.com/auth/callback?magic_token={token}"),
        format!("https://yourapp.com/auth/callback?next=%2Fhome&magic_token={token}&lang=en"),
        format!("http://localhost:3000/cb?magic_token={token}#top"),
        format!("/auth/callback?magic_token={token}"),
        format!("?magic_token={token}"),
        format!("magic_token={token}"),
        format!("  https://yourapp.com/cb?magic_token={token}\n"),
    ] {
        assert_eq!(token_from_url(&input).as_deref(), Some(token), "{input:?}");
    }
}

#[test]
fn decodes_percent_escapes() {
    assert_eq!(
        token_from_url("https://a.com/cb?magic_token=ab%2Dcd").as_deref(),
        Some("ab-cd")
    );
}

#[test]
fn none_without_a_token() {
    for input in [
        "",
        "https://yourapp.com/auth/callback",
        "https://yourapp.com/auth/callback?magic_token=",
        "https://yourapp.com/auth/callback?token=abc",
        "https://yourapp.com/auth/callback?not_magic_token=abc",
        "https://yourapp.com/auth/callback#magic_token=abc",
    ] {
        assert_eq!(token_from_url(input), None, "{input:?}");
    }
}

#[test]
fn the_client_method_agrees() {
    let client = Client::builder()
        .app_key("k")
        .base_url("http://127.0.0.1:9/api")
        .build()
        .unwrap();
    assert_eq!(client.token_from_url("?x=1&magic_token=t0k").as_deref(), Some("t0k"));
    assert_eq!(client.token_from_url("https://a.com/"), None);
}
