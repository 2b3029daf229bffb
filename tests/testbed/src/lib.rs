//! A test bed for the SDK and example suites: the real MagicAuth server on
//! `127.0.0.1:0` with a fresh SQLite database, delivering to a real SMTP
//! server on loopback, plus a small control API (used by the Python, Node and
//! PHP suites through the `magicauth-testbed` binary) to create apps, read
//! delivered emails, move the server's clock and take SMTP down.

pub mod control;
pub mod null_api;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use magicauth_server::app::BuildOptions;
use magicauth_server::clock::OffsetClock;
use magicauth_server::config::{Cli, Command};
use magicauth_server::mail::RetryPolicy;
use magicauth_server::store::DynStore;
use magicauth_server::{Application, apps};
use serde::Serialize;
use tempfile::TempDir;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use smtp::{ReceivedMail, SmtpSink};

/// A running server and its SMTP sink.
pub struct Testbed {
    /// `http://127.0.0.1:PORT`
    pub server_url: String,
    /// `http://127.0.0.1:PORT/api`: what SDKs take as their base URL.
    pub base_url: String,
    pub db_url: String,
    clock: Arc<OffsetClock>,
    store: DynStore,
    smtp: Mutex<SmtpSink>,
    smtp_port: u16,
    shutdown: CancellationToken,
    handle: Mutex<Option<JoinHandle<anyhow::Result<()>>>>,
    _dir: TempDir,
}

/// An email as the control API returns it.
#[derive(Clone, Debug, Serialize)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The first link in the text part.
    pub link: Option<String>,
    /// The link's `magic_token`.
    pub token: Option<String>,
}

impl From<&ReceivedMail> for Mail {
    fn from(mail: &ReceivedMail) -> Self {
        let link = mail.find_link("http");
        let token = link.as_deref().and_then(|l| {
            let url = url::Url::parse(l).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "magic_token")
                .map(|(_, v)| v.into_owned())
        });
        Self {
            to: mail.to.clone(),
            subject: mail.subject(),
            text: mail.text_body(),
            html: mail.html_body(),
            link,
            token,
        }
    }
}

impl Testbed {
    /// Starts the server (fast mail retries, so SMTP outages heal in about a second).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let smtp = SmtpSink::start().await;
        let db_url = format!("sqlite://{}", dir.path().join("magicauth.db").display());
        let mail_dir = dir.path().join("mail");
        let smtp_url = smtp.url();
        let argv = [
            "magicauth-server",
            "--database-url",
            &db_url,
            "--listen",
            "127.0.0.1:0",
            "--smtp-url",
            &smtp_url,
            "--mail-dir",
            mail_dir.to_str().context("temp path is not UTF-8")?,
        ];
        let config = Cli::try_parse_from(argv)?.config;
        let clock = Arc::new(OffsetClock::default());
        let retry = RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let app = Application::build_with(
            &config,
            BuildOptions {
                clock: clock.clone(),
                retry,
            },
        )
        .await?;
        let server_url = format!("http://{}", app.local_addr());
        let store = app.state().store.clone();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run());
        Ok(Self {
            base_url: format!("{server_url}/api"),
            server_url,
            db_url,
            clock,
            store,
            smtp_port: smtp.port(),
            smtp: Mutex::new(smtp),
            shutdown,
            handle: Mutex::new(Some(handle)),
            _dir: dir,
        })
    }

    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// Runs `magicauth-server apps ARGS…` on the server's database; returns stdout.
    pub async fn cli<S: AsRef<str>>(&self, args: &[S]) -> anyhow::Result<String> {
        let mut argv = vec!["magicauth-server", "--database-url", &self.db_url, "apps"];
        argv.extend(args.iter().map(AsRef::as_ref));
        let cli = Cli::try_parse_from(argv)?;
        let Some(Command::Apps(command)) = cli.command else {
            anyhow::bail!("not an apps command");
        };
        let mut out = Vec::new();
        apps::run(self.store.as_ref(), command, &mut out).await?;
        Ok(String::from_utf8(out)?)
    }

    /// `apps create --json` with `args`; a name and a redirect URL are added when
    /// missing. Returns `(app_id, app_key)`.
    pub async fn create_app<S: AsRef<str>>(&self, args: &[S]) -> anyhow::Result<(String, String)> {
        let mut argv: Vec<String> = vec!["create".into(), "--json".into()];
        let given: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        if !given.contains(&"--name") {
            argv.extend(["--name".into(), "Test App".into()]);
        }
        if !given.contains(&"--redirect-url") {
            argv.extend(["--redirect-url".into(), "https://app.example.com/auth/callback".into()]);
        }
        argv.extend(given.iter().map(|s| s.to_string()));
        let out = self.cli(&argv).await?;
        let created: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok((
            created["app_id"].as_str().context("app_id")?.to_owned(),
            created["app_key"].as_str().context("app_key")?.to_owned(),
        ))
    }

    /// Waits until `to` has received at least `min_count` emails; returns the
    /// count and the newest, or `None` on timeout.
    pub async fn wait_for_mail(&self, to: &str, min_count: usize, timeout: Duration) -> Option<(usize, Mail)> {
        let arrival = self.smtp.lock().await.wait_for_recipient(to, min_count, timeout);
        arrival.await.map(|(count, mail)| (count, Mail::from(&mail)))
    }

    /// Every email delivered so far.
    pub async fn mails(&self) -> Vec<Mail> {
        self.smtp.lock().await.messages().await.iter().map(Mail::from).collect()
    }

    /// Moves the server's clock forward (token expiry, rate-limit windows).
    pub fn advance_clock(&self, seconds: i64) {
        self.clock.advance(seconds * 1000);
    }

    /// Takes the SMTP server down (connections refused) or brings it back.
    pub async fn set_smtp_up(&self, up: bool) {
        let mut smtp = self.smtp.lock().await;
        if up { smtp.restart().await } else { smtp.stop().await }
    }

    /// Shuts the server down gracefully.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.lock().await.take() {
            handle.await??;
        }
        Ok(())
    }
}
