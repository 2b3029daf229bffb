//! Durable mail: the outbox survives SMTP outages and restarts, and every
//! accepted link is delivered exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::smtp::SinkMode;
use crate::support::{Backend, Spawn, TestApp, backend_tests, token_of};

async fn settle() {
    // Long enough for a duplicate delivery to show up if there were one.
    tokio::time::sleep(Duration::from_millis(800)).await;
}

fn count_by_recipient(mails: &[crate::support::smtp::ReceivedMail]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for mail in mails {
        for to in &mail.to {
            *counts.entry(to.clone()).or_default() += 1;
        }
    }
    counts
}

backend_tests!(links_requested_during_an_smtp_outage_arrive_once_it_is_back);
async fn links_requested_during_an_smtp_outage_arrive_once_it_is_back(backend: Backend) {
    let mut app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    app.smtp.stop().await;
    for i in 0..5 {
        let response = app.send_link(&key, &format!("outage{i}@example.com"), None).await;
        assert_eq!(response.status(), 200, "answered without waiting for SMTP");
    }
    // Let the worker fail a few times against the closed port.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.store.outbox_depth().await.unwrap(), 5);
    app.smtp.restart().await;
    let mails = app.wait_for_mail(5).await;
    settle().await;
    let mails_after = app.smtp.messages().await;
    assert_eq!(mails_after.len(), mails.len());
    let counts = count_by_recipient(&mails_after);
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(app.store.outbox_depth().await.unwrap(), 0);
    // The delivered links work.
    for mail in &mails_after {
        assert_eq!(app.verify(&key, &token_of(mail)).await.status(), 200);
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("magicauth_mail_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 1, "outage attempts are counted");
}

backend_tests!(a_burst_of_links_goes_out_once_each_over_reused_connections);
/// The worker sends several emails at once, each on its own SMTP connection,
/// and keeps those connections for the next emails.
async fn a_burst_of_links_goes_out_once_each_over_reused_connections(backend: Backend) {
    let app = Arc::new(TestApp::spawn(&backend).await);
    let (_, key) = app.create_app(&["--burst", "1000"]).await;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (app, key) = (app.clone(), key.clone());
        sends.spawn(async move {
            app.send_link(&key, &format!("burst{i}@example.com"), None)
                .await
                .status()
        });
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let mails = app.wait_for_mail(60).await;
    settle().await;
    assert_eq!(app.smtp.messages().await.len(), mails.len());
    let counts = count_by_recipient(&mails);
    assert_eq!(counts.len(), 60);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let limit = magicauth_server::mail::RetryPolicy::default().concurrency as usize;
    let connections = app.smtp.connections();
    assert!(
        (1..=limit).contains(&connections),
        "{connections} SMTP connections for 60 emails"
    );
    assert_eq!(app.store.outbox_depth().await.unwrap(), 0);
    // Reused connections carry the messages intact: every link works.
    for mail in &mails {
        assert_eq!(app.verify(&key, &token_of(mail)).await.status(), 200);
    }
}

backend_tests!(temporary_smtp_failures_are_retried);
async fn temporary_smtp_failures_are_retried(backend: Backend) {
    let app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    app.smtp.set_mode(SinkMode::TempFail);
    assert_eq!(app.send_link(&key, "tempfail@example.com", None).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.smtp.data_attempts() >= 1, "the relay was tried");
    assert!(app.smtp.messages().await.is_empty());
    app.smtp.set_mode(SinkMode::Unavailable);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.smtp.set_mode(SinkMode::Accept);
    let mails = app.wait_for_mail(1).await;
    settle().await;
    assert_eq!(app.smtp.messages().await.len(), 1);
    assert_eq!(mails[0].to, vec!["tempfail@example.com".to_string()]);
}

backend_tests!(queued_mail_survives_a_restart);
async fn queued_mail_survives_a_restart(backend: Backend) {
    let mut first = TestApp::spawn(&backend).await;
    let (_, key) = first.create_app(&[]).await;
    first.smtp.stop().await;
    for i in 0..3 {
        assert_eq!(
            first
                .send_link(&key, &format!("restart{i}@example.com"), None)
                .await
                .status(),
            200
        );
    }
    let (db, mut smtp) = first.stop().await;
    smtp.restart().await;
    let second = TestApp::spawn_with(
        &backend,
        Spawn {
            db: Some(db),
            smtp: Some(smtp),
            ..Spawn::default()
        },
    )
    .await;
    let mails = second.wait_for_mail(3).await;
    settle().await;
    assert_eq!(second.smtp.messages().await.len(), 3);
    let counts = count_by_recipient(&mails);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // Same database, same signing key, same app: the tokens verify on the new process.
    for mail in &mails {
        assert_eq!(second.verify(&key, &token_of(mail)).await.status(), 200);
    }
}

backend_tests!(sponsor_footer_only_for_free_plan_apps);
async fn sponsor_footer_only_for_free_plan_apps(backend: Backend) {
    let app = TestApp::spawn_with(
        &backend,
        Spawn {
            sponsor_footer: Some("Sent free by MagicAuth Sponsors".into()),
            ..Spawn::default()
        },
    )
    .await;
    let (_, free) = app.create_app(&["--name", "Free App"]).await;
    let (_, custom) = app.create_app(&["--name", "Custom App", "--plan", "custom"]).await;
    assert_eq!(app.send_link(&free, "free@example.com", None).await.status(), 200);
    assert_eq!(app.send_link(&custom, "custom@example.com", None).await.status(), 200);
    let mails = app.wait_for_mail(2).await;
    for mail in mails {
        let text = mail.text_body().unwrap();
        let html = mail.html_body().unwrap();
        let is_free = mail.to[0] == "free@example.com";
        assert_eq!(text.contains("Sent free by MagicAuth Sponsors"), is_free, "{text}");
        assert_eq!(html.contains("Sent free by MagicAuth Sponsors"), is_free);
        assert_eq!(
            mail.subject().unwrap(),
            if is_free {
                "Your sign-in link for Free App"
            } else {
                "Your sign-in link for Custom App"
            }
        );
    }
}

backend_tests!(mail_dir_mode_writes_eml_files);
async fn mail_dir_mode_writes_eml_files(backend: Backend) {
    let db = backend.database().await;
    let mail_dir = db.path().join("mail");
    let config = crate::support::config(&[
        "--database-url",
        &db.url,
        "--listen",
        "127.0.0.1:0",
        "--mail-dir",
        mail_dir.to_str().unwrap(),
        "--mail-from",
        "Acme Login <login@acme.test>",
    ]);
    let app = magicauth_server::Application::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let store = app.state().store.clone();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    let mut out = Vec::new();
    let cli = <magicauth_server::config::Cli as clap::Parser>::try_parse_from([
        "magicauth-server",
        "apps",
        "create",
        "--name",
        "Files",
        "--redirect-url",
        "http://localhost:3000/cb",
        "--json",
    ])
    .unwrap();
    let Some(magicauth_server::config::Command::Apps(command)) = cli.command else {
        unreachable!()
    };
    magicauth_server::apps::run(store.as_ref(), command, &mut out)
        .await
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/send-link"))
        .json(&serde_json::json!({"email": "file@example.com", "app_key": created["app_key"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut files = Vec::new();
    for _ in 0..100 {
        files = std::fs::read_dir(&mail_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files.len(), 1);
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    assert!(raw.contains("To: file@example.com"));
    assert!(
        raw.contains("From: \"Acme Login\" <login@acme.test>") || raw.contains("From: Acme Login <login@acme.test>"),
        "{raw}"
    );
    assert!(raw.contains("Subject: Your sign-in link for Files"));
    assert!(raw.contains("multipart/alternative"));
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

backend_tests!(smtp_scheme_falls_back_to_plain_when_starttls_is_not_offered);
async fn smtp_scheme_falls_back_to_plain_when_starttls_is_not_offered(backend: Backend) {
    // `smtp://` uses STARTTLS when the relay offers it; the test relay does not.
    let app = TestApp::spawn_with(
        &backend,
        Spawn {
            smtp_scheme: Some("smtp"),
            ..Spawn::default()
        },
    )
    .await;
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "starttls@example.com").await;
    assert_eq!(app.verify(&key, &token).await.status(), 200);
}

backend_tests!(delivery_is_given_up_after_a_day_of_failures);
async fn delivery_is_given_up_after_a_day_of_failures(backend: Backend) {
    let mut app = TestApp::spawn(&backend).await;
    let (_, key) = app.create_app(&[]).await;
    app.smtp.stop().await;
    assert_eq!(app.send_link(&key, "never@example.com", None).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.store.outbox_depth().await.unwrap(),
        1,
        "still queued after early failures"
    );
    // A day later the next failed attempt is the last one.
    app.clock.advance(24 * 3600 * 1000 + 1000);
    let mut depth = 1;
    for _ in 0..100 {
        depth = app.store.outbox_depth().await.unwrap();
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, 0, "given up");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("magicauth_mail_given_up_total 1"), "{metrics}");
    app.smtp.restart().await;
    settle().await;
    assert!(
        app.smtp.messages().await.is_empty(),
        "a given-up email is not sent later"
    );
}

backend_tests!(an_outbox_lease_belongs_to_one_worker);
/// The store alone, with explicit times: a lapsed lease can be claimed by
/// another worker, after which the first one can no longer reschedule, give
/// up or release the email.
async fn an_outbox_lease_belongs_to_one_worker(backend: Backend) {
    use magicauth_server::domain::{AppKey, MagicToken};
    use magicauth_server::store::{AppRecord, DatabaseOptions, NewApp, NewLink, NewMail};

    let db = backend.database().await;
    let store = magicauth_server::app::open_store(&DatabaseOptions::new(db.url.clone()))
        .await
        .expect("store");
    let record = AppRecord::sample("app_lease");
    store
        .create_app(&NewApp {
            record,
            key_hash: AppKey::generate().hash(),
        })
        .await
        .expect("app");
    let link = NewLink {
        token_hash: MagicToken::generate().hash(),
        app_id: "app_lease".into(),
        email: "lease@example.com".into(),
        redirect_url: "https://app.example.com/cb".into(),
        created_at: 0,
        expires_at: 900_000,
    };
    let mail = NewMail {
        app_id: "app_lease".into(),
        recipient: "lease@example.com".into(),
        message_id: "lease@localhost".into(),
        subject: "Lease".into(),
        text_body: "text".into(),
        html_body: "<p>html</p>".into(),
        created_at: 0,
    };
    store.create_link(&link, &mail, "1970-01", None).await.expect("link");

    let first = store.claim_outbox(10, 100, 8).await.expect("claim");
    assert_eq!(first.len(), 1);
    let id = first[0].id;
    assert_eq!((first[0].attempts, first[0].lease_until), (1, 100));
    assert!(
        store.claim_outbox(99, 199, 8).await.expect("claim").is_empty(),
        "leased"
    );
    // The first worker stalls past its lease; a second one takes the email.
    let second = store.claim_outbox(100, 200, 8).await.expect("claim");
    assert_eq!(second.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), [(id, 2)]);
    assert!(!store.outbox_retry(id, 100, 150, "late").await.expect("retry"));
    assert!(!store.outbox_given_up(id, 100, 150, "late").await.expect("give up"));
    assert!(!store.outbox_release(id, 100).await.expect("release"));
    assert!(
        store.claim_outbox(150, 250, 8).await.expect("claim").is_empty(),
        "still the second's"
    );
    // The holder hands it back unattempted: due at once, the attempt not counted.
    assert!(store.outbox_release(id, 200).await.expect("release"));
    let third = store.claim_outbox(160, 260, 8).await.expect("claim");
    assert_eq!(third.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), [(id, 2)]);
    assert!(store.outbox_retry(id, 260, 1000, "relay down").await.expect("retry"));
    assert!(
        store.claim_outbox(999, 1100, 8).await.expect("claim").is_empty(),
        "backing off"
    );
    let fourth = store.claim_outbox(1000, 1100, 8).await.expect("claim");
    assert_eq!(fourth.len(), 1);
    store.outbox_sent(id, 1010).await.expect("sent");
    assert_eq!(store.outbox_depth().await.expect("depth"), 0);
    assert!(store.claim_outbox(5000, 6000, 8).await.expect("claim").is_empty());
}
