//! The real `magicauth-server` binary, run as a subprocess: the CLI contract,
//! `apps …` changes reaching a live `serve`, durable mail across SIGKILL,
//! graceful shutdown on SIGTERM, and secrets never reaching the logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::smtp::SmtpSink;
use crate::support::subprocess::*;
use crate::support::{Backend, backend_tests, token_of};

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

backend_tests!(multi_thread: cli_apps_create_prints_credentials);
async fn cli_apps_create_prints_credentials(backend: Backend) {
    let sb = Sandbox::new(&backend).await;

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

backend_tests!(multi_thread: cli_apps_disable_enable_rotate);
async fn cli_apps_disable_enable_rotate(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: cli_migrate_on_a_fresh_database);
async fn cli_migrate_on_a_fresh_database(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
    let file = sb.db.sqlite_file();
    if let Some(file) = &file {
        assert!(!file.exists());
    }
    let out = sb.run(&["migrate"]).await;
    out.assert_success("migrate");
    if let Some(file) = &file {
        assert!(file.exists(), "migrate created the database");
    }
    assert!(sb.db.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await >= 1);
    assert!(!out.stdout.trim().is_empty());
    // Applying again is a no-op, and the schema is usable.
    sb.run(&["migrate"]).await.assert_success("migrate again");
    assert!(sb.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_help_names_options_and_environment() {
    let sb = Sandbox::new(&Backend::Sqlite).await;
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

backend_tests!(multi_thread: cli_flags_win_over_environment);
async fn cli_flags_win_over_environment(backend: Backend) {
    let flag_db = Sandbox::new(&backend).await;
    let env_db = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: apps_changes_reach_a_running_server_within_a_second);
async fn apps_changes_reach_a_running_server_within_a_second(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: queued_mail_survives_sigkill_and_is_delivered_exactly_once);
async fn queued_mail_survives_sigkill_and_is_delivered_exactly_once(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: sigterm_exits_cleanly_after_delivering_queued_mail);
async fn sigterm_exits_cleanly_after_delivering_queued_mail(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: sigterm_waits_for_the_delivery_in_flight);
async fn sigterm_waits_for_the_delivery_in_flight(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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
/// and a full send/verify round trip (file mode), at debug level. On
/// PostgreSQL the database URL carries a password too.
async fn secrets_stay_out_of_logs(backend: Backend, format: &str) {
    let mut sb = Sandbox::new(&backend).await;
    let db_password = sb.with_database_password();
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
            ("database password", db_password.as_deref().unwrap_or(password.as_str())),
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

backend_tests!(multi_thread: secrets_never_reach_text_logs);
async fn secrets_never_reach_text_logs(backend: Backend) {
    secrets_stay_out_of_logs(backend, "text").await;
}

backend_tests!(multi_thread: secrets_never_reach_json_logs);
async fn secrets_never_reach_json_logs(backend: Backend) {
    secrets_stay_out_of_logs(backend, "json").await;
}

/// API.md: no error message ever contains an SMTP password. clap's
/// "invalid value '<value>' for '--smtp-url'" error echoes the whole URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_smtp_url_error_hides_the_password() {
    // Refused before the database is opened: the backend does not matter.
    let sb = Sandbox::new(&Backend::Sqlite).await;
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

backend_tests!(multi_thread: serve_is_the_default_and_answers_readyz_and_openapi);
async fn serve_is_the_default_and_answers_readyz_and_openapi(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: serve_fails_cleanly_when_the_port_is_taken);
async fn serve_fails_cleanly_when_the_port_is_taken(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
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

backend_tests!(multi_thread: database_passwords_never_reach_error_messages);
async fn database_passwords_never_reach_error_messages(backend: Backend) {
    let sb = Sandbox::new(&backend).await;
    let secret = format!("dbpw{}", free_port());
    // Nobody listening, so every subcommand fails to open the database.
    let mut urls = vec![format!("postgres://magic:{secret}@127.0.0.1:{}/magicauth", free_port())];
    if let Backend::Postgres { server_url } = &backend {
        // A real server, but no such database.
        let mut url = url::Url::parse(server_url).expect("URL");
        url.set_path("/magicauth_no_such_database");
        url.set_password(Some(&secret)).expect("password");
        urls.push(url.to_string());
    }
    let runs: [(&[&str], bool); 3] = [
        (&["migrate"], false),
        (&["apps", "list"], true),
        (&["--listen", "127.0.0.1:0", "serve"], false),
    ];
    for url in &urls {
        for (args, via_env) in runs {
            let mut cmd = command(sb.path());
            if via_env {
                cmd.env("MAGICAUTH_DATABASE_URL", url);
            } else {
                cmd.args(["--database-url", url]);
            }
            // A refused connection is retried until the acquire timeout.
            cmd.args(["--database-acquire-timeout", "1s", "--mail-dir"])
                .arg(sb.mail_dir())
                .args(args);
            let out = output_of(cmd).await;
            out.assert_failure(&format!("{args:?} on an unusable database"));
            assert!(
                !out.stderr.contains(&secret) && !out.stdout.contains(&secret),
                "the database password is printed:\n{}",
                out.stderr
            );
            assert!(out.stderr.contains(":****@"), "{}", out.stderr);
        }
    }
}
