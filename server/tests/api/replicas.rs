//! Several `magicauth-server serve` processes (the real binary) on one
//! PostgreSQL database, as behind a load balancer: tokens are consumed once,
//! limits are shared, the outbox is delivered once even when a replica dies
//! mid-delivery, sessions verify against any replica's JWKS, and replicas
//! starting together on a fresh database agree on the schema and the key.
//!
//! PostgreSQL only: these tests say "skipped" and pass unless
//! `MAGICAUTH_TEST_POSTGRES_URL` is set.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::smtp::{ReceivedMail, SmtpSink};
use crate::support::subprocess::{Mail, Sandbox, Server, eml_files};
use crate::support::{Backend, token_of};

/// Requests in flight at once in the bulk tests.
const IN_FLIGHT: usize = 64;
const BULK_MAIL_TIMEOUT: Duration = Duration::from_secs(120);

/// What a test needs to call one replica from many tasks.
#[derive(Clone)]
struct Endpoint {
    base: String,
    http: reqwest::Client,
}

/// Status, JSON body and `RateLimit-Remaining` of a response.
struct Answer {
    status: u16,
    body: Value,
    remaining: Option<u32>,
}

impl Endpoint {
    fn of(server: &Server, http: &reqwest::Client) -> Self {
        Self {
            base: server.base.clone(),
            http: http.clone(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}{path}: {e}", self.base));
        let status = response.status().as_u16();
        let remaining = response
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"));
        Answer {
            status,
            body,
            remaining,
        }
    }

    async fn send_link(&self, key: &str, email: &str) -> Answer {
        self.post("/api/send-link", json!({"email": email, "app_key": key}))
            .await
    }

    async fn verify(&self, key: &str, token: &str) -> Answer {
        self.post("/api/verify-token", json!({"token": token, "app_key": key}))
            .await
    }

    async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/.well-known/jwks.json", self.base))
            .send()
            .await
            .expect("GET jwks")
            .json()
            .await
            .expect("JWKS JSON")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Runs the jobs with at most `limit` in flight; results in completion order.
async fn bounded<T, F>(limit: usize, jobs: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = JoinSet::new();
    for job in jobs {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        tasks.spawn(async move {
            let result = job.await;
            drop(permit);
            result
        });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.expect("task"));
    }
    results
}

fn count_by_recipient(mails: &[ReceivedMail]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for mail in mails {
        for to in &mail.to {
            *counts.entry(to.clone()).or_default() += 1;
        }
    }
    counts
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sends one link per address, alternating replicas, `IN_FLIGHT` at a time.
async fn send_links(replicas: &[Endpoint], key: &str, emails: &[String]) {
    let answers = bounded(
        IN_FLIGHT,
        emails.iter().enumerate().map(|(i, email)| {
            let (replica, key, email) = (replicas[i % replicas.len()].clone(), key.to_owned(), email.clone());
            async move { (email.clone(), replica.send_link(&key, &email).await) }
        }),
    )
    .await;
    for (email, answer) in answers {
        assert_eq!(answer.status, 200, "send-link for {email}: {}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tokens_verified_eight_times_across_replicas_succeed_once_each() {
    let Some(backend) = Backend::postgres() else { return };
    let sb = Sandbox::new(&backend).await;
    let (_, key) = sb.create_app(&["--plan", "custom", "--burst", "100000"]).await;
    // Both write their emails to one directory: quicker than SMTP for 1,000.
    let a = Server::start(&sb, Mail::Dir, &[], &[]).await;
    let b = Server::start(&sb, Mail::Dir, &[], &[]).await;
    let http = client();
    let replicas = [Endpoint::of(&a, &http), Endpoint::of(&b, &http)];

    let started = Instant::now();
    let emails: Vec<String> = (0..1000).map(|i| format!("bulk{i}@example.com")).collect();
    send_links(&replicas, &key, &emails).await;
    eprintln!("1000 links sent in {:?}", started.elapsed());
    while eml_files(&sb.mail_dir()).len() < 1000 {
        assert!(started.elapsed() < BULK_MAIL_TIMEOUT, "1000 emails not written in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens: HashSet<String> = eml_files(&sb.mail_dir())
        .iter()
        .map(|file| {
            let data = std::fs::read_to_string(file).expect("read .eml");
            token_of(&ReceivedMail {
                from: String::new(),
                to: Vec::new(),
                data,
            })
        })
        .collect();
    eprintln!("... and all written after {:?}", started.elapsed());
    assert_eq!(tokens.len(), 1000, "one distinct token per email");

    // Eight verifies per token, four on each replica, issued back to back.
    let started = Instant::now();
    let jobs = tokens.iter().flat_map(|token| {
        (0..8).map({
            let (replicas, key) = (replicas.clone(), key.clone());
            move |i| {
                let (replica, key, token) = (replicas[i % 2].clone(), key.clone(), token.clone());
                async move {
                    let answer = replica.verify(&key, &token).await;
                    (token, answer)
                }
            }
        })
    });
    let answers = bounded(IN_FLIGHT, jobs).await;
    eprintln!("8000 verifies in {:?}", started.elapsed());
    let mut successes: HashMap<String, usize> = HashMap::new();
    let mut user_ids = HashSet::new();
    for (token, answer) in &answers {
        match (answer.status, answer.body["code"].as_str()) {
            (200, _) => {
                *successes.entry(token.clone()).or_default() += 1;
                user_ids.insert(answer.body["user"]["id"].as_i64().expect("user id"));
            }
            (400, Some("token_used")) => {}
            other => panic!("unexpected answer {other:?}: {}", answer.body),
        }
    }
    assert_eq!(answers.len(), 8000);
    assert_eq!(successes.len(), 1000, "every token succeeded once");
    assert!(successes.values().all(|&n| n == 1), "a token succeeded twice");
    assert_eq!(user_ids.len(), 1000, "one user per address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_and_monthly_limits_are_shared_across_replicas() {
    let Some(backend) = Backend::postgres() else { return };
    let sb = Sandbox::new(&backend).await;
    let a = Server::start(&sb, Mail::Dir, &[], &[]).await;
    let b = Server::start(&sb, Mail::Dir, &[], &[]).await;
    let http = client();
    let replicas = [Endpoint::of(&a, &http), Endpoint::of(&b, &http)];

    // A lost update shows up only sometimes: several rounds, each on a new app.
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let (_, burst) = sb.create_app(&["--plan", "custom", "--burst", "3"]).await;
        rounds.push((burst, 6, 3, "rate_limited"));
        let (_, quota) = sb
            .create_app(&["--plan", "custom", "--burst", "1000", "--monthly-limit", "4"])
            .await;
        rounds.push((quota, 10, 4, "quota_exceeded"));
    }
    for (key, attempts, allowed, refusal) in &rounds {
        let (attempts, allowed, refusal) = (*attempts, *allowed, *refusal);
        // All requests leave together, alternating replicas.
        let start = Arc::new(Barrier::new(attempts));
        let mut tasks = JoinSet::new();
        for i in 0..attempts {
            let (replica, key, start) = (replicas[i % 2].clone(), key.clone(), start.clone());
            tasks.spawn(async move {
                start.wait().await;
                replica.send_link(&key, &format!("shared{i}@example.com")).await
            });
        }
        let mut remaining = Vec::new();
        let mut refused = 0;
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.expect("task");
            match answer.status {
                200 => remaining.push(answer.remaining),
                429 => {
                    assert_eq!(answer.body["code"], json!(refusal), "{}", answer.body);
                    refused += 1;
                }
                status => panic!("unexpected {status}: {}", answer.body),
            }
        }
        assert_eq!(
            (remaining.len(), refused),
            (allowed, attempts - allowed),
            "{refusal}: {remaining:?}"
        );
        if refusal == "rate_limited" {
            // The counts were taken one after the other, never side by side.
            remaining.sort();
            assert_eq!(remaining, [Some(0), Some(1), Some(2)]);
        }
    }
}

/// A TCP proxy in front of the SMTP sink for one replica that lets its first
/// `allow` messages through and then holds back the `DATA` command of the
/// next one (and everything after it) while replies still flow: the replica
/// is stuck inside that delivery, holding its lease, and the sink never gets
/// the message. The gate notes who that message was for.
struct Gate {
    port: u16,
    /// The recipient of the message held back, once there is one.
    stuck: Arc<std::sync::Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Gate {
    async fn start(target: u16, allow: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().expect("gate address").port();
        let stuck = Arc::new(std::sync::Mutex::new(None));
        let passed = Arc::new(AtomicUsize::new(0));
        let noted = stuck.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (stuck, passed) = (noted.clone(), passed.clone());
                connections.spawn(async move {
                    // SMTP down behind the gate: the client sees the connection drop.
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (client_read, mut client_write) = client.into_split();
                    let (mut upstream_read, mut upstream_write) = upstream.into_split();
                    let replies = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
                    });
                    // lettre waits for each reply, so commands come one line at a time.
                    let mut client_read = tokio::io::BufReader::new(client_read);
                    let mut line = Vec::new();
                    let (mut in_data, mut recipient, mut holding) = (false, String::new(), false);
                    loop {
                        line.clear();
                        match client_read.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        if holding {
                            continue;
                        }
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        if in_data {
                            if text == "." {
                                in_data = false;
                                passed.fetch_add(1, Ordering::SeqCst);
                            }
                        } else if let Some(to) = text.to_ascii_uppercase().strip_prefix("RCPT TO:") {
                            recipient = text[text.len() - to.len()..].trim_matches(['<', '>', ' ']).to_owned();
                        } else if text.eq_ignore_ascii_case("DATA") {
                            if passed.load(Ordering::SeqCst) >= allow {
                                *stuck.lock().expect("lock") = Some(recipient.clone());
                                holding = true;
                                continue;
                            }
                            in_data = true;
                        }
                        if upstream_write.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                    replies.abort();
                });
            }
        });
        Self { port, stuck, task }
    }

    fn stuck(&self) -> Option<String> {
        self.stuck.lock().expect("lock").clone()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// 200 emails queued during an SMTP outage, then delivered by both replicas'
/// workers; replica A is SIGKILLed while it holds leased rows in the middle
/// of a delivery. B takes those over once the lease lapses (shortened to 3 s
/// with the undocumented `MAGICAUTH_MAIL_LEASE`, instead of 60 s) and every
/// recipient gets exactly one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_is_delivered_once_when_a_replica_dies_mid_delivery() {
    let Some(backend) = Backend::postgres() else { return };
    let sb = Sandbox::new(&backend).await;
    let mut sink = SmtpSink::start().await;
    let gate = Gate::start(sink.port(), 3).await;
    sink.stop().await;
    let (_, key) = sb.create_app(&["--plan", "custom", "--burst", "1000"]).await;
    let lease = [("MAGICAUTH_MAIL_LEASE", "3s")];
    let through_gate = format!("smtp+plain://127.0.0.1:{}", gate.port);
    let mut a = Server::start(&sb, Mail::Smtp(&through_gate), &[], &lease).await;
    let b = Server::start(&sb, Mail::Smtp(&sink.url()), &[], &lease).await;
    let http = client();
    let replicas = [Endpoint::of(&a, &http), Endpoint::of(&b, &http)];

    let emails: Vec<String> = (0..200).map(|i| format!("once{i}@example.com")).collect();
    send_links(&replicas, &key, &emails).await;
    let depth = b
        .poll_metric("magicauth_outbox_depth", Duration::from_secs(5), |d| d == 200.0)
        .await;
    assert_eq!(depth, Some(200.0), "all queued while SMTP is down");

    sink.restart().await;
    let started = Instant::now();
    let stuck = loop {
        if let Some(recipient) = gate.stuck() {
            break recipient;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica A never got past its third email"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    a.kill9().await;
    let killed = Instant::now();

    // A died holding the lease of the email it was sending.
    let pool = sqlx::PgPool::connect(&sb.db_url).await.expect("connect");
    let row = "SELECT locked_until, sent_at FROM outbox WHERE recipient = $1";
    let (lease_until, sent_at): (Option<i64>, Option<i64>) = sqlx::query_as(row)
        .bind(&stuck)
        .fetch_one(&pool)
        .await
        .expect("outbox row");
    let lease_until = lease_until.expect("the row is leased");
    assert!(
        sent_at.is_none() && lease_until > now_ms(),
        "{stuck}: {lease_until} {sent_at:?}"
    );

    let mails = sink.wait_for(200, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 200, "every email delivered within 30 s of the kill");
    eprintln!("all 200 delivered {:?} after the kill", killed.elapsed());
    // Long enough for a duplicate to show up if there were one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = sink.messages().await;
    let counts = count_by_recipient(&mails);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(counts.len(), 200);
    assert!(emails.iter().all(|e| counts.contains_key(e)));
    // B took the stuck email over after A's lease ran out, not before.
    let (_, sent_at): (Option<i64>, Option<i64>) = sqlx::query_as(row)
        .bind(&stuck)
        .fetch_one(&pool)
        .await
        .expect("outbox row");
    assert!(
        sent_at.is_some_and(|t| t >= lease_until),
        "{stuck}: sent at {sent_at:?}, lease until {lease_until}"
    );
    let depth = b
        .poll_metric("magicauth_outbox_depth", Duration::from_secs(5), |d| d == 0.0)
        .await;
    assert_eq!(depth, Some(0.0));
    pool.close().await;
}

/// The JWKS key with `kid`, checked to verify `jwt`; returns the claims.
fn verify_jwt(jwks: &Value, jwt: &str) -> Value {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).expect("base64url")).expect("JSON header");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in {jwks}", header["kid"]));
    let public = B64.decode(key["x"].as_str().expect("x")).expect("base64url");
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &B64.decode(parts[2]).expect("base64url"),
        )
        .expect("the signature verifies");
    serde_json::from_slice(&B64.decode(parts[1]).expect("base64url")).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_one_replica_verify_with_the_other_replicas_jwks() {
    let Some(backend) = Backend::postgres() else { return };
    let sb = Sandbox::new(&backend).await;
    let sink = SmtpSink::start().await;
    let (app_id, key) = sb.create_app(&[]).await;
    let public = ["--public-url", "https://auth.example.test"];
    let a = Server::start(&sb, Mail::Smtp(&sink.url()), &public, &[]).await;
    let b = Server::start(&sb, Mail::Smtp(&sink.url()), &public, &[]).await;
    let http = client();
    let (a, b) = (Endpoint::of(&a, &http), Endpoint::of(&b, &http));

    let (jwks_a, jwks_b) = (a.jwks().await, b.jwks().await);
    assert_eq!(jwks_a, jwks_b, "same kid, same key");
    assert_eq!(jwks_a["keys"].as_array().map(Vec::len), Some(1));

    // A link sent by one replica is verified on the other, both ways round.
    for (sender, verifier, other) in [(&a, &b, &jwks_a), (&b, &a, &jwks_b)] {
        let before = sink.messages().await.len();
        let answer = sender.send_link(&key, "cross@example.com").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let mails = sink.wait_for(before + 1, Duration::from_secs(20)).await;
        let token = token_of(mails.last().expect("a mail"));
        let answer = verifier.verify(&key, &token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let claims = verify_jwt(other, answer.body["token"].as_str().expect("JWT"));
        assert_eq!(claims["iss"], json!("https://auth.example.test"));
        assert_eq!(claims["aud"], json!(app_id));
        let again = sender.verify(&key, &token).await;
        assert_eq!(again.body["code"], json!("token_used"), "{}", again.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_fresh_database_share_one_signing_key() {
    let Some(backend) = Backend::postgres() else { return };
    for round in 0..3 {
        // Nothing has touched the database: both `serve`s race to migrate it
        // and to create the signing key.
        let sb = Sandbox::new(&backend).await;
        let a = Server::spawn(&sb, Mail::Dir, Some("serve"), &[], &[]);
        let b = Server::spawn(&sb, Mail::Dir, Some("serve"), &[], &[]);
        let (a, b) = tokio::join!(a.ready(), b.ready());
        for server in [&a, &b] {
            assert_eq!(server.get("/readyz").await.status(), 200, "round {round}");
        }
        let http = client();
        let (jwks_a, jwks_b) = (
            Endpoint::of(&a, &http).jwks().await,
            Endpoint::of(&b, &http).jwks().await,
        );
        assert_eq!(jwks_a, jwks_b, "round {round}");
        let pool = sqlx::PgPool::connect(&sb.db_url).await.expect("connect");
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&pool)
            .await
            .expect("count keys");
        assert_eq!(keys, 1, "round {round}");
        let migrations: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
            .fetch_all(&pool)
            .await
            .expect("migrations");
        assert_eq!(migrations, [(1, true)], "each migration applied once, round {round}");
        pool.close().await;
        // The schema is usable from both.
        let (_, key) = sb.create_app(&[]).await;
        for (i, server) in [&a, &b].into_iter().enumerate() {
            let (status, body) = server.send_link(&key, &format!("fresh{i}@example.com")).await;
            assert_eq!(status, 200, "{body}");
        }
    }
}
