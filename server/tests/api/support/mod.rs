//! Test harness: a real server on 127.0.0.1:0 with a fresh database and a real
//! SMTP server on loopback.
//!
//! Every test that touches the store runs against both backends: write it as
//! `async fn name(backend: Backend)` and put `backend_tests!(name);` above it,
//! which makes the tests `name::sqlite` and `name::postgres`. SQLite always
//! runs; PostgreSQL runs when `MAGICAUTH_TEST_POSTGRES_URL` names a server
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`), each test in a database of
//! its own that is dropped afterwards.

mod database;
// The SMTP sink lives with the cross-language test bed, which uses it too.
#[path = "../../../../tests/testbed/src/smtp.rs"]
pub mod smtp;
pub mod subprocess;

pub use database::{Backend, TestDatabase};

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use magicauth_server::app::BuildOptions;
use magicauth_server::clock::OffsetClock;
use magicauth_server::config::{Cli, Command, Config};
use magicauth_server::mail::RetryPolicy;
use magicauth_server::store::DynStore;
use magicauth_server::{Application, apps};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use smtp::{ReceivedMail, SmtpSink};

/// Makes `name::sqlite` and `name::postgres` tests that call
/// `async fn name(backend: Backend)`. The PostgreSQL one says "skipped" and
/// passes when `MAGICAUTH_TEST_POSTGRES_URL` is unset, and fails when it is set
/// but the server cannot be reached. `multi_thread:` runs them on a
/// two-thread runtime (for tests that run subprocesses).
macro_rules! backend_tests {
    (multi_thread: $($name:ident),+ $(,)?) => {
        $($crate::support::backend_tests!(@test [tokio::test(flavor = "multi_thread", worker_threads = 2)] $name);)+
    };
    ($($name:ident),+ $(,)?) => {
        $($crate::support::backend_tests!(@test [tokio::test] $name);)+
    };
    (@test [$($test:tt)+] $name:ident) => {
        mod $name {
            #[$($test)+]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }

            #[$($test)+]
            async fn postgres() {
                if let Some(backend) = $crate::support::Backend::postgres() {
                    super::$name(backend).await;
                }
            }
        }
    };
}
pub(crate) use backend_tests;

/// How long tests wait for an email before failing.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// Retries fast enough for outage tests: 100 ms doubling, capped at 1 s.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db_url: String,
    pub db: Arc<TestDatabase>,
    pub clock: Arc<OffsetClock>,
    pub store: DynStore,
    pub smtp: SmtpSink,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Options for [`TestApp::spawn_with`].
pub struct Spawn {
    pub sponsor_footer: Option<String>,
    pub retry: RetryPolicy,
    /// Reuse the database of an earlier app (a restart).
    pub db: Option<Arc<TestDatabase>>,
    /// Reuse an SMTP sink (a restart).
    pub smtp: Option<SmtpSink>,
    /// URL scheme used to reach the sink (`smtp+plain` unless set).
    pub smtp_scheme: Option<&'static str>,
}

impl Default for Spawn {
    fn default() -> Self {
        Self {
            sponsor_footer: None,
            retry: fast_retry(),
            db: None,
            smtp: None,
            smtp_scheme: None,
        }
    }
}

/// The shared configuration, parsed from the same flags an operator would use.
pub fn config(args: &[&str]) -> Config {
    let mut argv = vec!["magicauth-server"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("valid test configuration").config
}

impl TestApp {
    pub async fn spawn(backend: &Backend) -> Self {
        Self::spawn_with(backend, Spawn::default()).await
    }

    pub async fn spawn_with(backend: &Backend, options: Spawn) -> Self {
        let db = match options.db {
            Some(db) => db,
            None => Arc::new(backend.database().await),
        };
        let smtp = match options.smtp {
            Some(sink) => sink,
            None => SmtpSink::start().await,
        };
        let db_url = db.url.clone();
        let mail_dir = db.path().join("mail");
        let smtp_url = match options.smtp_scheme {
            Some(scheme) => format!("{scheme}://127.0.0.1:{}", smtp.port()),
            None => smtp.url(),
        };
        let mut args = vec![
            "--database-url",
            &db_url,
            "--listen",
            "127.0.0.1:0",
            "--smtp-url",
            &smtp_url,
            "--mail-dir",
            mail_dir.to_str().expect("utf-8 path"),
        ];
        if let Some(footer) = options.sponsor_footer.as_deref() {
            args.extend(["--sponsor-footer", footer]);
        }
        let config = config(&args);
        let clock = Arc::new(OffsetClock::default());
        let app = Application::build_with(
            &config,
            BuildOptions {
                clock: clock.clone(),
                retry: options.retry,
            },
        )
        .await
        .expect("the app builds");
        let addr = app.local_addr();
        let store = app.state().store.clone();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run());
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            db_url,
            db,
            clock,
            store,
            smtp,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Shuts down gracefully and hands back the database and SMTP sink.
    pub async fn stop(mut self) -> (Arc<TestDatabase>, SmtpSink) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server ran cleanly");
        }
        (self.db.clone(), self.smtp)
    }

    /// Runs `apps …` against this app's database; returns stdout.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["magicauth-server", "--database-url", &self.db_url, "apps"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv)?;
        let Some(Command::Apps(command)) = cli.command else {
            panic!("not an apps command")
        };
        let mut out = Vec::new();
        apps::run(self.store.as_ref(), command, &mut out).await?;
        Ok(String::from_utf8(out)?)
    }

    /// Creates an app with extra `apps create` flags; returns (app_id, app_key).
    pub async fn create_app(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["create", "--json"];
        if !extra.contains(&"--name") {
            args.extend(["--name", "Test App"]);
        }
        if !extra.contains(&"--redirect-url") {
            args.extend(["--redirect-url", "https://app.example.com/auth/callback"]);
        }
        args.extend_from_slice(extra);
        let out = self.cli(&args).await.expect("apps create");
        let v: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        (
            v["app_id"].as_str().expect("app_id").to_owned(),
            v["app_key"].as_str().expect("app_key").to_owned(),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn send_link(&self, key: &str, email: &str, redirect_url: Option<&str>) -> reqwest::Response {
        let mut body = json!({"email": email, "app_key": key});
        if let Some(url) = redirect_url {
            body["redirect_url"] = json!(url);
        }
        self.post("/api/send-link", &body).await
    }

    pub async fn verify(&self, key: &str, token: &str) -> reqwest::Response {
        self.post("/api/verify-token", &json!({"token": token, "app_key": key}))
            .await
    }

    /// `verify` with an `Idempotency-Key` header.
    pub async fn verify_with_key(&self, key: &str, token: &str, idempotency_key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/verify-token", self.base))
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({"token": token, "app_key": key}))
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until `n` emails in total have arrived at the SMTP sink.
    pub async fn wait_for_mail(&self, n: usize) -> Vec<ReceivedMail> {
        let mails = self.smtp.wait_for(n, MAIL_TIMEOUT).await;
        assert!(mails.len() >= n, "expected {n} emails, got {}", mails.len());
        mails
    }

    /// Sends a link and returns the token from the delivered email.
    pub async fn request_token(&self, key: &str, email: &str) -> String {
        let before = self.smtp.messages().await.len();
        let response = self.send_link(key, email, None).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        let mails = self.wait_for_mail(before + 1).await;
        token_of(mails.last().expect("a mail"))
    }
}

/// The magic token in an email's link.
pub fn token_of(mail: &ReceivedMail) -> String {
    let link = mail.find_link("http").expect("a link in the email");
    let url = url::Url::parse(&link).expect("a URL");
    url.query_pairs()
        .find(|(k, _)| k == "magic_token")
        .map(|(_, v)| v.into_owned())
        .expect("magic_token parameter")
}

/// Status and JSON body of a response.
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"));
    (status, body)
}

/// Asserts the contract's error shape and returns the message.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let (got, body) = json_of(response).await;
    assert_eq!((got, body["code"].as_str()), (status, Some(code)), "body: {body}");
    assert_eq!(body["success"], json!(false));
    let message = body["error"].as_str().expect("error text").to_owned();
    assert!(!message.is_empty());
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(3),
        "exactly success/error/code: {body}"
    );
    message
}
