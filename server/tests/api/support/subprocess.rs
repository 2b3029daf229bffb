//! The real `magicauth-server` binary as a subprocess: a sandbox (one
//! database and a temp dir), CLI runs, and `serve` processes.
//!
//! Every run gets explicit `--database-url`, `--listen` and mail settings, and
//! no inherited `MAGICAUTH_*` or `RUST_LOG` variables. Every wait has a
//! deadline; every child is killed when its guard drops.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::smtp::ReceivedMail;
use crate::support::{Backend, TestDatabase};

pub const BIN: &str = env!("CARGO_BIN_EXE_magicauth-server");
pub const REDIRECT: &str = "https://app.example.com/auth/callback";
/// Upper bound for one CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for `serve` to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for emails to arrive.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A distinct address per call, so the per-email rate limit never interferes.
pub fn fresh_email() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("user{}@example.com", N.fetch_add(1, Ordering::SeqCst))
}

/// The binary, run in `dir`, without inherited MagicAuth configuration.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let inherited = name
            .to_str()
            .is_some_and(|n| n.starts_with("MAGICAUTH_") || n == "RUST_LOG");
        if inherited {
            cmd.env_remove(&name);
        }
    }
    cmd.current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what}: exit {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    pub fn assert_failure(&self, what: &str) {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what} should fail with an exit code: {:?}\nstdout: {}",
            self.status,
            self.stdout
        );
        assert!(!self.stderr.trim().is_empty(), "{what}: no message on stderr");
    }

    /// The one line of `{"app_id": …, "app_key": …}` on stdout.
    pub fn credentials(&self) -> (String, String) {
        assert_eq!(self.stdout.lines().count(), 1, "exactly one line: {:?}", self.stdout);
        let v: Value = serde_json::from_str(self.stdout.trim()).expect("a JSON object");
        let object = v.as_object().expect("a JSON object");
        assert_eq!(object.len(), 2, "only app_id and app_key: {v}");
        let id = v["app_id"].as_str().expect("app_id").to_owned();
        let key = v["app_key"].as_str().expect("app_key").to_owned();
        assert!(id.starts_with("app_"), "{id}");
        assert!(key.starts_with("mk_") && key.len() >= 35, "{key}");
        (id, key)
    }
}

pub async fn output_of(mut cmd: Command) -> Output {
    let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .expect("the command finished in time")
        .expect("the command ran");
    Output {
        status: out.status,
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// One database and its temp dir.
pub struct Sandbox {
    pub db: TestDatabase,
    pub db_url: String,
}

impl Sandbox {
    pub async fn new(backend: &Backend) -> Self {
        let db = backend.database().await;
        let db_url = db.url.clone();
        Self { db, db_url }
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Puts a password into a PostgreSQL URL that has none (the test server
    /// trusts local connections, so it is never asked for) and returns the
    /// URL's password; `None` on SQLite.
    pub fn with_database_password(&mut self) -> Option<String> {
        if self.db.backend() != "postgres" {
            return None;
        }
        let mut url = url::Url::parse(&self.db_url).expect("a PostgreSQL URL");
        if url.password().is_none() {
            url.set_password(Some(&format!("dbsecret{}", free_port())))
                .expect("a URL with a host takes a password");
            self.db_url = url.to_string();
        }
        url.password().map(str::to_owned)
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.path().join("mail")
    }

    /// Runs the binary with `--database-url` and `args`.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[]).await
    }

    pub async fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = command(self.path());
        cmd.arg("--database-url").arg(&self.db_url).args(args);
        cmd.envs(envs.iter().copied());
        output_of(cmd).await
    }

    pub async fn apps(&self, args: &[&str]) -> Output {
        let mut argv = vec!["apps"];
        argv.extend_from_slice(args);
        self.run(&argv).await
    }

    /// `apps create --json` with `extra` flags; returns (app_id, app_key).
    pub async fn create_app(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["create", "--name", "Process Test", "--json"];
        if !extra.contains(&"--redirect-url") {
            args.extend(["--redirect-url", REDIRECT]);
        }
        args.extend_from_slice(extra);
        let out = self.apps(&args).await;
        out.assert_success("apps create");
        out.credentials()
    }

    /// `apps list --json`, parsed.
    pub async fn list(&self) -> Vec<Value> {
        let out = self.apps(&["list", "--json"]).await;
        out.assert_success("apps list --json");
        assert_eq!(out.stdout.lines().count(), 1, "one line: {:?}", out.stdout);
        serde_json::from_str::<Value>(&out.stdout)
            .expect("JSON")
            .as_array()
            .expect("a JSON array")
            .clone()
    }
}

/// Where `serve` sends its email.
pub enum Mail<'a> {
    /// `--mail-dir <sandbox>/mail`.
    Dir,
    /// `--smtp-url <url>`.
    Smtp(&'a str),
    /// `MAGICAUTH_SMTP_URL=<url>` in the environment (and no flag).
    SmtpEnv(&'a str),
}

/// A running `serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pid: u32,
    pub base: String,
    pub http: reqwest::Client,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Harmless when it already exited.
        let _ = self.child.start_kill();
    }
}

impl Server {
    /// Starts `serve` and waits until `/healthz` answers.
    pub async fn start(sandbox: &Sandbox, mail: Mail<'_>, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let server = Self::spawn(sandbox, mail, Some("serve"), extra, envs);
        server.ready().await
    }

    pub fn spawn(
        sandbox: &Sandbox,
        mail: Mail<'_>,
        subcommand: Option<&str>,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let run = RUN.fetch_add(1, Ordering::SeqCst);
        let stdout = sandbox.path().join(format!("serve-{run}.stdout"));
        let stderr = sandbox.path().join(format!("serve-{run}.stderr"));
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = command(sandbox.path());
        cmd.arg("--database-url")
            .arg(&sandbox.db_url)
            .args(["--listen", &listen]);
        match mail {
            Mail::Dir => {
                cmd.arg("--mail-dir").arg(sandbox.mail_dir());
            }
            Mail::Smtp(url) => {
                cmd.args(["--smtp-url", url]);
            }
            Mail::SmtpEnv(url) => {
                cmd.env("MAGICAUTH_SMTP_URL", url);
            }
        }
        cmd.args(extra).envs(envs.iter().copied());
        if let Some(subcommand) = subcommand {
            cmd.arg(subcommand);
        }
        cmd.stdout(std::fs::File::create(&stdout).expect("stdout file"));
        cmd.stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("spawn magicauth-server");
        let pid = child.id().expect("a running child has a pid");
        Self {
            child,
            pid,
            base: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            stdout,
            stderr,
        }
    }

    pub async fn ready(mut self) -> Self {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("serve exited early ({status}); stderr:\n{}", self.stderr());
            }
            let probe = self
                .http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return self;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("serve not ready within 10 s; stderr:\n{}", self.stderr());
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).expect("read stdout")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).expect("read stderr")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET sent")
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("POST sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"));
        (status, body)
    }

    pub async fn send_link(&self, key: &str, email: &str) -> (u16, Value) {
        self.post("/api/send-link", &json!({"email": email, "app_key": key}))
            .await
    }

    pub async fn verify(&self, key: &str, token: &str) -> (u16, Value) {
        self.post("/api/verify-token", &json!({"token": token, "app_key": key}))
            .await
    }

    /// The value of an unlabelled metric, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Polls a metric until `accept` holds or `deadline` passes; returns the last value.
    pub async fn poll_metric(&self, name: &str, deadline: Duration, accept: impl Fn(f64) -> bool) -> Option<f64> {
        let start = Instant::now();
        loop {
            let value = self.metric(name).await;
            if value.is_some_and(&accept) || start.elapsed() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn signal(&self, signal: &str) {
        let status = tokio::time::timeout(
            CLI_TIMEOUT,
            Command::new("kill")
                .args([format!("-{signal}"), self.pid.to_string()])
                .status(),
        )
        .await
        .expect("kill finished")
        .expect("kill ran");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for serve"),
            Err(_) => panic!("serve did not exit within {deadline:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL serve");
        let status = self.wait_exit(EXIT_TIMEOUT).await;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM").await;
        self.wait_exit(EXIT_TIMEOUT).await
    }
}

pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (want_status, Some(code)),
        "body: {body}"
    );
    assert_eq!(body["success"], json!(false), "body: {body}");
}

/// Polls `check` until it holds; fails unless it held within one second.
pub async fn within_one_second(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            let took = start.elapsed();
            assert!(took <= Duration::from_secs(1), "{what}: took {took:?}");
            return took;
        }
        assert!(start.elapsed() <= Duration::from_secs(1), "{what}: not seen within 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `.eml` files written to `dir` (complete ones only: not the `.…tmp` files).
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "eml")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Waits for `n` `.eml` files and parses them.
pub async fn wait_for_eml(dir: &Path, n: usize) -> Vec<ReceivedMail> {
    let start = Instant::now();
    loop {
        let files = eml_files(dir);
        if files.len() >= n {
            return files
                .iter()
                .map(|f| ReceivedMail {
                    from: String::new(),
                    to: Vec::new(),
                    data: std::fs::read_to_string(f).expect("read .eml"),
                })
                .collect();
        }
        assert!(
            start.elapsed() < MAIL_TIMEOUT,
            "expected {n} .eml files in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
