//! End to end: the real MagicAuth server and SMTP sink (the test bed), this
//! example on a loopback port, and an HTTP client acting as the browser, with
//! redirects and cookies handled by hand so every step can be checked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use magicauth_example_axum::config::{AppUrl, SessionSecret};
use magicauth_example_axum::{AppState, router};
use magicauth_testbed::{Mail, Testbed};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY, SET_COOKIE};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The example, serving on `url`, wired to a fresh MagicAuth test bed.
struct TestApp {
    testbed: Testbed,
    url: String,
    http: reqwest::Client,
    server: JoinHandle<std::io::Result<()>>,
}

/// A response, read once.
struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: reqwest::header::HeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The full `Set-Cookie` line for cookie `name`.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// `name=value` of a cookie this response sets, as a browser would send it back.
    fn cookie_pair(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        Some(line.split(';').next().unwrap_or_default().to_owned())
    }

    fn assert_no_internals(&self) {
        for leak in [
            "panicked",
            "stack backtrace",
            "token_used",
            "token_expired",
            "invalid_token",
            "HTTP 4",
        ] {
            assert!(!self.body.contains(leak), "page shows {leak:?}:\n{}", self.body);
        }
    }
}

impl TestApp {
    async fn spawn() -> anyhow::Result<Self> {
        let testbed = Testbed::start().await?;
        // Bind first: the app's allowed redirect URL needs the port.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let redirect_url = format!("{url}/auth/callback");
        let (_app_id, app_key) = testbed
            .create_app(&["--name", "Axum example", "--redirect-url", &redirect_url])
            .await?;
        let magicauth = magicauth::Client::builder()
            .app_key(app_key)
            .base_url(&testbed.base_url)
            .timeout(Duration::from_secs(5))
            .build()?;
        let state = AppState::new(magicauth, &AppUrl::parse(&url)?, &SessionSecret::random());
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            testbed,
            url,
            http,
            server,
        })
    }

    async fn get(&self, path_or_url: &str, cookie: Option<&str>) -> anyhow::Result<Page> {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.url)
        };
        let mut request = self.http.get(url);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        read(request.send().await?).await
    }

    async fn post_form(&self, path: &str, fields: &[(&str, &str)], cookie: Option<&str>) -> anyhow::Result<Page> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        read(request.send().await?).await
    }

    async fn request_link(&self, email: &str, count: usize) -> anyhow::Result<Mail> {
        let page = self.post_form("/send-link", &[("email", email)], None).await?;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Check your email"), "{}", page.body);
        let (_, mail) = self
            .testbed
            .wait_for_mail(email, count, MAIL_TIMEOUT)
            .await
            .ok_or_else(|| anyhow::anyhow!("no email for {email}"))?;
        Ok(mail)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.server.abort();
        self.testbed.stop().await
    }
}

async fn read(response: reqwest::Response) -> anyhow::Result<Page> {
    Ok(Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await?,
    })
}

#[tokio::test]
async fn signs_in_with_an_emailed_link() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let email = "ada@example.com";

    // The sign-in form.
    let home = app.get("/", None).await?;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.body.contains(r#"<form method="post" action="/send-link">"#),
        "{}",
        home.body
    );
    assert!(home.body.contains(r#"name="email""#));

    // The link in the email leads to this app's callback.
    let mail = app.request_link(email, 1).await?;
    let link = mail.link.clone().expect("a link in the email");
    let token = mail.token.clone().expect("a token in the link");
    assert!(link.starts_with(&format!("{}/auth/callback?", app.url)), "{link}");

    // Opening the link (twice, as a scanner then the person would) only shows a button.
    for _ in 0..2 {
        let page = app.get(&link, None).await?;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.header(REFERRER_POLICY), "no-referrer");
        assert_eq!(page.header(CACHE_CONTROL), "no-store");
        assert!(
            page.body.contains(r#"<form method="post" action="/auth/callback">"#),
            "{}",
            page.body
        );
        assert!(page.body.contains(&format!(r#"name="magic_token" value="{token}""#)));
        assert!(page.body.contains("Continue"));
    }

    // Continue: the token was still unused, so this signs in.
    let signed_in = app
        .post_form("/auth/callback", &[("magic_token", &token)], None)
        .await?;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
    assert_eq!(signed_in.header(LOCATION), "/dashboard");
    assert_eq!(signed_in.header(CACHE_CONTROL), "no-store");
    let set_cookie = signed_in.set_cookie("session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http on loopback: {set_cookie}");
    let session = signed_in.cookie_pair("session").unwrap();

    let dashboard = app.get("/dashboard", Some(&session)).await?;
    assert_eq!(dashboard.status, StatusCode::OK);
    assert!(dashboard.body.contains(email), "{}", dashboard.body);
    assert_eq!(dashboard.header(CACHE_CONTROL), "no-store");

    // A cookie with a changed payload, or a damaged signature, is refused.
    let value = session.strip_prefix("session=").unwrap();
    let (payload, tag) = value.split_once('.').unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    claims["email"] = "mallory@example.com".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let mut damaged_tag = tag.to_owned();
    let last = if damaged_tag.pop() == Some('A') { 'B' } else { 'A' };
    damaged_tag.push(last);
    for forged in [
        format!("session={forged_payload}.{tag}"),
        format!("session={payload}.{damaged_tag}"),
        "session=garbage".to_owned(),
    ] {
        let page = app.get("/dashboard", Some(&forged)).await?;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{forged}");
        assert_eq!(page.header(LOCATION), "/");
        assert!(!page.body.contains("mallory"));
    }
    let no_cookie = app.get("/dashboard", None).await?;
    assert_eq!(no_cookie.status, StatusCode::SEE_OTHER);
    assert_eq!(no_cookie.header(LOCATION), "/");

    // The same link again: used, explained, with a way to get a new one.
    let reused = app
        .post_form("/auth/callback", &[("magic_token", &token)], None)
        .await?;
    assert_eq!(reused.status, StatusCode::GONE);
    assert!(reused.body.contains("already been used"), "{}", reused.body);
    assert!(reused.body.contains(r#"action="/send-link""#));
    assert!(reused.set_cookie("session").is_none());
    reused.assert_no_internals();

    // Signing out clears the cookie and says so on the next page.
    let logout = app.post_form("/logout", &[], Some(&session)).await?;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(logout.header(LOCATION), "/");
    let cleared = logout.set_cookie("session").expect("the session cookie is cleared");
    assert!(
        cleared.starts_with("session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let flash = logout.cookie_pair("flash").expect("a flash message");
    let home = app.get("/", Some(&flash)).await?;
    assert!(home.body.contains("You have signed out."), "{}", home.body);
    assert!(home.set_cookie("flash").is_some_and(|c| c.contains("Max-Age=0")));
    let after = app.get("/dashboard", None).await?;
    assert_eq!(after.status, StatusCode::SEE_OTHER);

    app.stop().await
}

#[tokio::test]
async fn bad_input_and_rate_limits_are_explained() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    // Not an address: a validation message, with the input shown back escaped.
    let invalid = app
        .post_form("/send-link", &[("email", "<b>not an email")], None)
        .await?;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.body.contains("does not look like an email address"),
        "{}",
        invalid.body
    );
    assert!(
        invalid.body.contains(r#"value="&lt;b&gt;not an email""#),
        "{}",
        invalid.body
    );
    assert!(!invalid.body.contains("<b>not"));
    invalid.assert_no_internals();

    let empty = app.post_form("/send-link", &[("email", "  ")], None).await?;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("Please enter your email address."));

    // MagicAuth allows 5 links per address per 15 minutes; the 6th is refused, kindly.
    let email = "busy@example.com";
    for n in 1..=5 {
        let page = app.post_form("/send-link", &[("email", email)], None).await?;
        assert_eq!(page.status, StatusCode::OK, "send {n}: {}", page.body);
    }
    let limited = app.post_form("/send-link", &[("email", email)], None).await?;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
    assert!(limited.body.contains("Too many sign-in links"), "{}", limited.body);
    assert!(limited.body.contains("15 minutes"), "{}", limited.body);
    assert!(!limited.header(reqwest::header::RETRY_AFTER).is_empty());
    limited.assert_no_internals();

    app.stop().await
}

#[tokio::test]
async fn broken_expired_and_forged_links_offer_a_new_one() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    // No token at all.
    for path in ["/auth/callback", "/auth/callback?magic_token="] {
        let page = app.get(path, None).await?;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.body.contains("This link is incomplete"));
        assert!(page.body.contains(r#"action="/send-link""#));
        assert_eq!(page.header(REFERRER_POLICY), "no-referrer");
    }
    let page = app.post_form("/auth/callback", &[], None).await?;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    // A token MagicAuth never issued.
    let unknown = "A".repeat(43);
    let page = app
        .post_form("/auth/callback", &[("magic_token", &unknown)], None)
        .await?;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("This link is not valid"), "{}", page.body);
    page.assert_no_internals();

    // Markup in the token is escaped on the Continue page.
    let page = app
        .get(r#"/auth/callback?magic_token="><script>x</script>"#, None)
        .await?;
    assert!(!page.body.contains("<script>x"), "{}", page.body);

    // Another site's page posting a token (login CSRF) is refused before any verify.
    let email = "late@example.com";
    let mail = app.request_link(email, 1).await?;
    let token = mail.token.expect("a token");
    let cross_site = app
        .http
        .post(format!("{}/auth/callback", app.url))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("magic_token={token}"))
        .send()
        .await?;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    // Too late: the link has expired (MagicAuth's default lifetime is 15 minutes).
    app.testbed.advance_clock(16 * 60);
    let expired = app
        .post_form("/auth/callback", &[("magic_token", &token)], None)
        .await?;
    assert_eq!(expired.status, StatusCode::GONE, "{}", expired.body);
    assert!(expired.body.contains("This link has expired"), "{}", expired.body);
    assert!(expired.body.contains(r#"action="/send-link""#));
    expired.assert_no_internals();

    // Unknown pages and non-form bodies get pages too, not axum's defaults.
    let missing = app.get("/nope", None).await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Page not found"));
    let json = app
        .http
        .post(format!("{}/send-link", app.url))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"email":"x@example.com"}"#)
        .send()
        .await?;
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    app.stop().await
}
