//! The real `magicauth-server` binary, run as a subprocess: the CLI contract,
//! `apps …` changes reaching a live `serve`, durable mail across SIGKILL,
//! graceful shutdown on SIGTERM, and secrets never reaching the logs.
//!
//! Every run gets its own temp dir, explicit `--database-url`, `--listen` and
//! mail settings, and no inherited `MAGICAUTH_*` or `RUST_LOG` variables.
//! Every wait has a deadline; every child is killed when its guard drops.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::support::smtp::{ReceivedMail, SmtpSink};
use crate::support::token_of;

const BIN: &str = env!("CARGO_BIN_EXE_magicauth-server");
const REDIRECT: &str = "https://app.example.com/auth/callback";
/// Upper bound for one CLI invocation.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for `serve` to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for emails to arrive.
const MAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A distinct address per call, so the per-email rate limit never interferes.
fn fresh_email() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("user{}@example.com", N.fetch_add(1, Ordering::SeqCst))
}

/// The binary, run in `dir`, without inherited MagicAuth configuration.
fn command(dir: &Path) -> Command {
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

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what}: exit {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    fn assert_failure(&self, what: &str) {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what} should fail with an exit code: {:?}\nstdout: {}",
            self.status,
            self.stdout
        );
        assert!(!self.stderr.trim().is_empty(), "{what}: no message on stderr");
    }

    /// The one line of `{"app_id": …, "app_key": …}` on stdout.
    fn credentials(&self) -> (String, String) {
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

async fn output_of(mut cmd: Command) -> Output {
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

/// One temp dir with one database.
struct Sandbox {
    dir: TempDir,
    db_url: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = format!("sqlite://{}", dir.path().join("x.db").display());
        Self { dir, db_url }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mail_dir(&self) -> PathBuf {
        self.path().join("mail")
    }

    /// Runs the binary with `--database-url` and `args`.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[]).await
    }

    async fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = command(self.path());
        cmd.arg("--database-url").arg(&self.db_url).args(args);
        cmd.envs(envs.iter().copied());
        output_of(cmd).await
    }

    async fn apps(&self, args: &[&str]) -> Output {
        let mut argv = vec!["apps"];
        argv.extend_from_slice(args);
        self.run(&argv).await
    }

    /// `apps create --json` with `extra` flags; returns (app_id, app_key).
    async fn create_app(&self, extra: &[&str]) -> (String, String) {
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
    async fn list(&self) -> Vec<Value> {
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
enum Mail<'a> {
    /// `--mail-dir <sandbox>/mail`.
    Dir,
    /// `--smtp-url <url>`.
    Smtp(&'a str),
    /// `MAGICAUTH_SMTP_URL=<url>` in the environment (and no flag).
    SmtpEnv(&'a str),
}

/// A running `serve`; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    pid: u32,
    base: String,
    http: reqwest::Client,
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
    async fn start(sandbox: &Sandbox, mail: Mail<'_>, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let server = Self::spawn(sandbox, mail, Some("serve"), extra, envs);
        server.ready().await
    }

    fn spawn(
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

    async fn ready(mut self) -> Self {
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

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).expect("read stdout")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).expect("read stderr")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET sent")
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
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

    async fn send_link(&self, key: &str, email: &str) -> (u16, Value) {
        self.post("/api/send-link", &json!({"email": email, "app_key": key}))
            .await
    }

    async fn verify(&self, key: &str, token: &str) -> (u16, Value) {
        self.post("/api/verify-token", &json!({"token": token, "app_key": key}))
            .await
    }

    /// The value of an unlabelled metric, if present.
    async fn metric(&self, name: &str) -> Option<f64> {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Polls a metric until `accept` holds or `deadline` passes; returns the last value.
    async fn poll_metric(&self, name: &str, deadline: Duration, accept: impl Fn(f64) -> bool) -> Option<f64> {
        let start = Instant::now();
        loop {
            let value = self.metric(name).await;
            if value.is_some_and(&accept) || start.elapsed() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn signal(&self, signal: &str) {
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

    async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for serve"),
            Err(_) => panic!("serve did not exit within {deadline:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// SIGKILL: no chance to clean up.
    async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL serve");
        let status = self.wait_exit(EXIT_TIMEOUT).await;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    /// SIGTERM, then the exit status.
    async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM").await;
        self.wait_exit(EXIT_TIMEOUT).await
    }
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (want_status, Some(code)),
        "body: {body}"
    );
    assert_eq!(body["success"], json!(false), "body: {body}");
}

/// Polls `check` until it holds; fails unless it held within one second.
async fn within_one_second(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
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
fn eml_files(dir: &Path) -> Vec<PathBuf> {
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
async fn wait_for_eml(dir: &Path, n: usize) -> Vec<ReceivedMail> {
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

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_apps_create_prints_credentials() {
    let sb = Sandbox::new();

    // --json: exactly one line of {"app_id", "app_key"}; the key never on stderr.
    let out = sb
        .apps(&[
            "create",
            "--name",
            "Demo",
            "--redirect-url",
            REDIRECT,
            "--redirect-url",
            "http://localhost:3000/cb",
            "--json",
        ])
        .await;
    out.assert_success("apps create --json");
    let (json_id, json_key) = out.credentials();
    assert!(!out.stderr.contains(&json_key), "the key leaked to stderr");

    // Plain: the id and the key on stdout.
    let out = sb
        .apps(&["create", "--name", "Plain", "--redirect-url", REDIRECT])
        .await;
    out.assert_success("apps create");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    let plain_id = words
        .iter()
        .find(|w| w.starts_with("app_") && !w.ends_with(':'))
        .unwrap_or_else(|| panic!("an app id in {:?}", out.stdout))
        .to_string();
    let plain_key = words
        .iter()
        .find(|w| w.starts_with("mk_"))
        .unwrap_or_else(|| panic!("an app key in {:?}", out.stdout));
    assert!(plain_key.len() >= 35, "{plain_key}");
    assert!(!out.stderr.contains(plain_key), "the key leaked to stderr");

    // Every knob.
    let out = sb
        .apps(&[
            "create",
            "--name",
            "Custom",
            "--redirect-url",
            REDIRECT,
            "--plan",
            "custom",
            "--burst",
            "3",
            "--monthly-limit",
            "10",
            "--token-ttl",
            "90s",
            "--session-ttl",
            "1h",
            "--json",
        ])
        .await;
    out.assert_success("apps create with every option");
    let (custom_id, custom_key) = out.credentials();

    // Refused: a bad duration and an http URL that is not loopback.
    let bad_ttl = sb
        .apps(&[
            "create",
            "--name",
            "Bad",
            "--redirect-url",
            REDIRECT,
            "--token-ttl",
            "soon",
            "--json",
        ])
        .await;
    bad_ttl.assert_failure("--token-ttl soon");
    assert!(bad_ttl.stderr.contains("token-ttl"), "{}", bad_ttl.stderr);
    assert!(bad_ttl.stdout.is_empty(), "{}", bad_ttl.stdout);
    let bad_url = sb
        .apps(&[
            "create",
            "--name",
            "Bad",
            "--redirect-url",
            "http://example.com",
            "--json",
        ])
        .await;
    bad_url.assert_failure("--redirect-url http://example.com");
    assert!(bad_url.stderr.contains("redirect"), "{}", bad_url.stderr);
    assert!(bad_url.stdout.is_empty(), "{}", bad_url.stdout);
    let missing = sb.apps(&["create", "--name", "No URL"]).await;
    missing.assert_failure("apps create without --redirect-url");

    // The listing: exactly the three good apps, with their settings, no keys.
    let out = sb.apps(&["list", "--json"]).await;
    out.assert_success("apps list --json");
    for key in [json_key.as_str(), plain_key, custom_key.as_str()] {
        assert!(!out.stdout.contains(key), "apps list shows a key");
    }
    let apps = sb.list().await;
    assert_eq!(apps.len(), 3, "{apps:?}");
    let find = |id: &str| {
        apps.iter()
            .find(|a| a["app_id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} in {apps:?}"))
            .clone()
    };
    let demo = find(&json_id);
    assert_eq!(demo["name"], json!("Demo"));
    assert_eq!(demo["plan"], json!("free"));
    assert_eq!(demo["status"], json!("enabled"));
    assert_eq!(demo["burst"], json!(100));
    assert_eq!(demo["monthly_limit"], Value::Null);
    assert_eq!(demo["redirect_urls"].as_array().map(Vec::len), Some(2), "{demo}");
    assert!(demo["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{demo}");
    find(&plain_id);
    let custom = find(&custom_id);
    assert_eq!(custom["name"], json!("Custom"));
    assert_eq!(custom["plan"], json!("custom"));
    assert_eq!(custom["burst"], json!(3));
    assert_eq!(custom["monthly_limit"], json!(10));
    assert_eq!(custom["token_ttl"], json!("1m30s"));
    assert_eq!(custom["session_ttl"], json!("1h"));

    // Plain listing: a table naming every app.
    let out = sb.apps(&["list"]).await;
    out.assert_success("apps list");
    for (id, name) in [(&json_id, "Demo"), (&plain_id, "Plain"), (&custom_id, "Custom")] {
        assert!(
            out.stdout.contains(id.as_str()) && out.stdout.contains(name),
            "{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_apps_disable_enable_rotate() {
    let sb = Sandbox::new();
    let (id, key) = sb.create_app(&[]).await;
    let status = async |sb: &Sandbox| sb.list().await[0]["status"].clone();

    let out = sb.apps(&["disable", &id]).await;
    out.assert_success("apps disable");
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    assert_eq!(status(&sb).await, json!("disabled"));
    let out = sb.apps(&["enable", &id]).await;
    out.assert_success("apps enable");
    assert_eq!(status(&sb).await, json!("enabled"));

    let out = sb.apps(&["rotate-key", &id, "--json"]).await;
    out.assert_success("apps rotate-key --json");
    let (rotated_id, rotated) = out.credentials();
    assert_eq!(rotated_id, id);
    assert_ne!(rotated, key);
    let out = sb.apps(&["rotate-key", &id]).await;
    out.assert_success("apps rotate-key");
    let again = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("mk_"))
        .unwrap_or_else(|| panic!("a key in {:?}", out.stdout));
    assert!(again != rotated && again.len() >= 35, "{again}");

    for args in [
        ["disable", "app_doesnotexist"],
        ["enable", "app_doesnotexist"],
        ["rotate-key", "app_doesnotexist"],
    ] {
        let out = sb.apps(&args).await;
        out.assert_failure(&args.join(" "));
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert_eq!(sb.list().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrate_on_a_fresh_database() {
    let sb = Sandbox::new();
    let db = sb.path().join("x.db");
    assert!(!db.exists());
    let out = sb.run(&["migrate"]).await;
    out.assert_success("migrate");
    assert!(db.exists(), "migrate created the database");
    assert!(!out.stdout.trim().is_empty());
    // Applying again is a no-op, and the schema is usable.
    sb.run(&["migrate"]).await.assert_success("migrate again");
    assert!(sb.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_help_names_options_and_environment() {
    let sb = Sandbox::new();
    // A password in the environment must not show up in the help text.
    let envs = [("MAGICAUTH_SMTP_URL", "smtp://user:helpsecret77@127.0.0.1:2525")];
    let mut cmd = command(sb.path());
    cmd.arg("--help").envs(envs);
    let out = output_of(cmd).await;
    out.assert_success("--help");
    for needle in [
        "serve",
        "migrate",
        "apps",
        "--database-url",
        "MAGICAUTH_DATABASE_URL",
        "--listen",
        "MAGICAUTH_LISTEN",
        "--public-url",
        "MAGICAUTH_PUBLIC_URL",
        "--smtp-url",
        "MAGICAUTH_SMTP_URL",
        "--mail-dir",
        "MAGICAUTH_MAIL_DIR",
        "--mail-from",
        "MAGICAUTH_MAIL_FROM",
        "--sponsor-footer",
        "MAGICAUTH_SPONSOR_FOOTER",
        "--log-format",
        "MAGICAUTH_LOG_FORMAT",
    ] {
        assert!(out.stdout.contains(needle), "--help lacks {needle}:\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("helpsecret77") && !out.stderr.contains("helpsecret77"));

    let mut cmd = command(sb.path());
    cmd.args(["apps", "create", "--help"]).envs(envs);
    let out = output_of(cmd).await;
    out.assert_success("apps create --help");
    for needle in [
        "--name",
        "--redirect-url",
        "--plan",
        "free",
        "custom",
        "--burst",
        "--monthly-limit",
        "--token-ttl",
        "--session-ttl",
        "--json",
        "--database-url",
        "MAGICAUTH_DATABASE_URL",
    ] {
        assert!(
            out.stdout.contains(needle),
            "apps create --help lacks {needle}:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("helpsecret77"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flags_win_over_environment() {
    let flag_db = Sandbox::new();
    let env_db = Sandbox::new();
    // The environment names one database, the flag another: the flag wins.
    let out = flag_db
        .run_env(
            &["apps", "create", "--name", "Flag", "--redirect-url", REDIRECT, "--json"],
            &[("MAGICAUTH_DATABASE_URL", &env_db.db_url)],
        )
        .await;
    out.assert_success("apps create");
    let (id, _) = out.credentials();
    assert_eq!(flag_db.list().await[0]["app_id"], json!(id));
    // Without the flag, the environment is used.
    let mut cmd = command(env_db.path());
    cmd.args(["apps", "list", "--json"])
        .env("MAGICAUTH_DATABASE_URL", &env_db.db_url);
    let out = output_of(cmd).await;
    out.assert_success("apps list from the environment");
    assert_eq!(out.stdout.trim(), "[]");
}

// ---------------------------------------------------------------------------
// A live server
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_changes_reach_a_running_server_within_a_second() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, Mail::Dir, &[], &[]).await;
    // Created after `serve` started: no restart needed.
    let (id, key) = sb.create_app(&["--token-ttl", "90s"]).await;
    let (status, body) = server.send_link(&key, &fresh_email()).await;
    assert_eq!((status, &body), (200, &json!({"success": true, "expires_in": 90})));

    sb.apps(&["disable", &id]).await.assert_success("apps disable");
    let took = within_one_second("disable", async || {
        let (status, body) = server.send_link(&key, &fresh_email()).await;
        if status == 403 {
            assert_error(status, &body, 403, "app_disabled");
            assert_eq!(body["error"], json!("App disabled"));
        }
        status == 403
    })
    .await;
    eprintln!("disable seen after {took:?}");
    // Verification is refused too.
    let (status, body) = server.verify(&key, "unknown-token-unknown-token-unknown-token").await;
    assert_error(status, &body, 403, "app_disabled");

    sb.apps(&["enable", &id]).await.assert_success("apps enable");
    let took = within_one_second("enable", async || server.send_link(&key, &fresh_email()).await.0 == 200).await;
    eprintln!("enable seen after {took:?}");

    let out = sb.apps(&["rotate-key", &id, "--json"]).await;
    out.assert_success("apps rotate-key");
    let (_, new_key) = out.credentials();
    let took = within_one_second("rotate-key", async || {
        let (old_status, old_body) = server.send_link(&key, &fresh_email()).await;
        if old_status != 401 {
            return false;
        }
        assert_error(old_status, &old_body, 401, "invalid_app_key");
        assert_eq!(old_body["error"], json!("Invalid app_key"));
        server.send_link(&new_key, &fresh_email()).await.0 == 200
    })
    .await;
    eprintln!("rotation seen after {took:?}");
    let (status, body) = server.verify(&key, "unknown-token-unknown-token-unknown-token").await;
    assert_error(status, &body, 401, "invalid_app_key");
    assert!(server.stdout().is_empty(), "serve wrote to stdout: {}", server.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_survives_sigkill_and_is_delivered_exactly_once() {
    let sb = Sandbox::new();
    let mut sink = SmtpSink::start().await;
    let smtp_url = sink.url();
    // SMTP down: connections are refused.
    sink.stop().await;
    let (_, key) = sb.create_app(&[]).await;
    let mut server = Server::start(&sb, Mail::Smtp(&smtp_url), &[], &[]).await;

    let recipients = ["alice@example.com", "bob@example.com", "carol@example.com"];
    for email in recipients {
        let (status, body) = server.send_link(&key, email).await;
        assert_eq!(status, 200, "{body}");
    }
    let depth = server
        .poll_metric("magicauth_outbox_depth", Duration::from_secs(5), |d| d == 3.0)
        .await;
    assert_eq!(depth, Some(3.0), "outbox depth");
    // Each email failed once; the worker has recorded the retry (the first
    // retry is at least 750 ms later, so nothing is in flight when killed).
    let failures = server
        .poll_metric("magicauth_mail_failures_total", Duration::from_secs(5), |n| n >= 3.0)
        .await;
    assert!(failures.is_some_and(|n| n >= 3.0), "failures: {failures:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill9().await;
    assert_eq!(sink.messages().await.len(), 0);

    sink.restart().await;
    let server = Server::start(&sb, Mail::Smtp(&smtp_url), &[], &[]).await;
    let mails = sink.wait_for(3, MAIL_TIMEOUT).await;
    assert_eq!(mails.len(), 3, "expected 3 emails after the restart");
    // Exactly once: nothing more turns up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = sink.messages().await;
    assert_eq!(
        mails.len(),
        3,
        "duplicates: {:?}",
        mails.iter().map(|m| &m.to).collect::<Vec<_>>()
    );
    let mut delivered: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    delivered.sort();
    assert_eq!(delivered, recipients);
    for mail in &mails {
        let (status, body) = server.verify(&key, &token_of(mail)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["email"], json!(mail.to[0]));
    }
    let depth = server
        .poll_metric("magicauth_outbox_depth", Duration::from_secs(5), |d| d == 0.0)
        .await;
    assert_eq!(depth, Some(0.0));
    assert!(server.stdout().is_empty(), "serve wrote to stdout: {}", server.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_after_delivering_queued_mail() {
    let sb = Sandbox::new();
    let sink = SmtpSink::start().await;
    let (_, key) = sb.create_app(&[]).await;
    let mut server = Server::start(&sb, Mail::Smtp(&sink.url()), &[], &[]).await;
    let (status, body) = server.send_link(&key, "last@example.com").await;
    assert_eq!(status, 200, "{body}");
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", server.stderr());
    // Delivered before the process exited: no waiting here.
    let mails = sink.messages().await;
    assert_eq!(mails.len(), 1, "the queued email was not delivered before exit");
    assert_eq!(mails[0].to, ["last@example.com"]);
    assert!(server.stdout().is_empty(), "serve wrote to stdout: {}", server.stdout());
}

/// A TCP proxy to `target` that holds every connection for `delay` before
/// forwarding, so an SMTP delivery is reliably in flight for that long.
async fn slow_proxy(target: u16, delay: Duration) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            connections.spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (port, accepted, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_delivery_in_flight() {
    let sb = Sandbox::new();
    let sink = SmtpSink::start().await;
    let (proxy_port, accepted, proxy) = slow_proxy(sink.port(), Duration::from_millis(1500)).await;
    let (_, key) = sb.create_app(&[]).await;
    let url = format!("smtp+plain://127.0.0.1:{proxy_port}");
    let mut server = Server::start(&sb, Mail::Smtp(&url), &[], &[]).await;
    let (status, body) = server.send_link(&key, "inflight@example.com").await;
    assert_eq!(status, 200, "{body}");
    // Wait until the worker has connected: the delivery is now in progress.
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the worker never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sink.messages().await.is_empty());
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", server.stderr());
    let mails = sink.messages().await;
    assert_eq!(mails.len(), 1, "the delivery in flight was abandoned");
    assert_eq!(mails[0].to, ["inflight@example.com"]);
    proxy.abort();
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// Runs both log formats through a failing SMTP delivery (password in the URL)
/// and a full send/verify round trip (file mode), at debug level.
async fn secrets_stay_out_of_logs(format: &str) {
    let sb = Sandbox::new();
    let (_, key) = sb.create_app(&[]).await;
    let wrong_key = "mk_WrongKeyWrongKeyWrongKeyWrongKeyWrongKey1";
    let password = format!("hunter2pass{}", free_port());
    let smtp_port = free_port();
    let smtp_url = format!("smtp+plain://user:{password}@127.0.0.1:{smtp_port}");
    let log = [("RUST_LOG", "debug")];
    let flags = ["--log-format", format];

    // 1. SMTP with a password, nobody listening: delivery fails and is logged.
    let mail = if format == "json" {
        Mail::SmtpEnv(&smtp_url)
    } else {
        Mail::Smtp(&smtp_url)
    };
    let mut smtp_run = Server::start(&sb, mail, &flags, &log).await;
    let (status, body) = smtp_run.send_link(&key, "secret@example.com").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = smtp_run.send_link(wrong_key, "secret@example.com").await;
    assert_error(status, &body, 401, "invalid_app_key");
    let failures = smtp_run
        .poll_metric("magicauth_mail_failures_total", Duration::from_secs(5), |n| n >= 1.0)
        .await;
    assert!(failures.is_some_and(|n| n >= 1.0), "the delivery never failed");
    assert!(smtp_run.terminate().await.success());

    // 2. Email to files: the round trip with a real token.
    let mut file_run = Server::start(&sb, Mail::Dir, &flags, &log).await;
    let (status, body) = file_run.send_link(&key, "secret@example.com").await;
    assert_eq!(status, 200, "{body}");
    let mails = wait_for_eml(&sb.mail_dir(), 1).await;
    let token = token_of(&mails[0]);
    assert!(token.len() >= 43, "{token}");
    let (status, body) = file_run.verify(wrong_key, &token).await;
    assert_error(status, &body, 401, "invalid_app_key");
    let (status, body) = file_run.verify(&key, &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = file_run.verify(&key, &token).await;
    assert_error(status, &body, 400, "token_used");
    assert!(file_run.terminate().await.success());

    for run in [&smtp_run, &file_run] {
        let stdout = run.stdout();
        assert!(stdout.is_empty(), "serve wrote to stdout: {stdout}");
        let stderr = run.stderr();
        assert!(!stderr.is_empty());
        // Debug logging was really on.
        assert!(stderr.contains("DEBUG"), "no debug lines:\n{stderr}");
        for (what, secret) in [
            ("app_key", key.as_str()),
            ("wrong app_key", wrong_key),
            ("magic token", token.as_str()),
            ("SMTP password", password.as_str()),
        ] {
            assert!(!stderr.contains(secret), "the {what} is in the {format} log:\n{stderr}");
        }
        if format == "json" {
            for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
                let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(parsed.is_object() && parsed.get("level").is_some(), "{line}");
            }
        }
    }
    // The SMTP URL did reach the log (masked), so the password check above means something.
    let logged = smtp_run.stderr();
    assert!(logged.contains(&format!("127.0.0.1:{smtp_port}")), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_text_logs() {
    secrets_stay_out_of_logs("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_json_logs() {
    secrets_stay_out_of_logs("json").await;
}

/// API.md: no error message ever contains an SMTP password. clap's
/// "invalid value '<value>' for '--smtp-url'" error echoes the whole URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_smtp_url_error_hides_the_password() {
    let sb = Sandbox::new();
    let listen = format!("127.0.0.1:{}", free_port());
    for url in [
        "smtpx://user:badurlsecret1@127.0.0.1:2525",
        "smtp://user:badurlsecret1@",
    ] {
        for via_env in [false, true] {
            let mut cmd = command(sb.path());
            cmd.arg("--database-url")
                .arg(&sb.db_url)
                .args(["--listen", &listen, "serve"]);
            if via_env {
                cmd.env("MAGICAUTH_SMTP_URL", url);
            } else {
                cmd.args(["--smtp-url", url]);
            }
            let out = output_of(cmd).await;
            out.assert_failure(&format!("serve with SMTP URL {url}"));
            assert!(
                !out.stderr.contains("badurlsecret1") && !out.stdout.contains("badurlsecret1"),
                "the SMTP password is echoed (env: {via_env}):\n{}",
                out.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Operator surface
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_the_default_and_answers_readyz_and_openapi() {
    let sb = Sandbox::new();
    // No subcommand: `serve`.
    let server = Server::spawn(&sb, Mail::Dir, None, &[], &[]).ready().await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let response = server.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("OpenAPI JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{}",
        doc["openapi"]
    );
    for path in ["/api/send-link", "/api/verify-token"] {
        assert!(doc["paths"][path]["post"].is_object(), "{path} missing");
    }
    // `serve` applied the migrations: the CLI sees an empty, usable schema.
    assert!(sb.list().await.is_empty());
    assert!(server.stdout().is_empty(), "serve wrote to stdout: {}", server.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_cleanly_when_the_port_is_taken() {
    let sb = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("address").to_string();
    let mut cmd = command(sb.path());
    cmd.arg("--database-url")
        .arg(&sb.db_url)
        .args(["--listen", &listen, "--mail-dir"])
        .arg(sb.mail_dir())
        .arg("serve");
    let out = output_of(cmd).await;
    out.assert_failure("serve on a taken port");
    assert!(out.stderr.contains(&listen), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    drop(taken);
}
