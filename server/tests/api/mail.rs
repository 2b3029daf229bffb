//! Durable mail: the outbox survives SMTP outages and restarts, and every
//! accepted link is delivered exactly once.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::smtp::SinkMode;
use crate::support::{Spawn, TestApp, token_of};

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

#[tokio::test]
async fn links_requested_during_an_smtp_outage_arrive_once_it_is_back() {
    let mut app = TestApp::spawn().await;
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

#[tokio::test]
async fn temporary_smtp_failures_are_retried() {
    let app = TestApp::spawn().await;
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

#[tokio::test]
async fn queued_mail_survives_a_restart() {
    let mut first = TestApp::spawn().await;
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
    let (dir, mut smtp) = first.stop().await;
    smtp.restart().await;
    let second = TestApp::spawn_with(Spawn {
        dir: Some(dir),
        smtp: Some(smtp),
        ..Spawn::default()
    })
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

#[tokio::test]
async fn sponsor_footer_only_for_free_plan_apps() {
    let app = TestApp::spawn_with(Spawn {
        sponsor_footer: Some("Sent free by MagicAuth Sponsors".into()),
        ..Spawn::default()
    })
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

#[tokio::test]
async fn mail_dir_mode_writes_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let db_url = format!("sqlite://{}", dir.path().join("m.db").display());
    let config = crate::support::config(&[
        "--database-url",
        &db_url,
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

#[tokio::test]
async fn smtp_scheme_falls_back_to_plain_when_starttls_is_not_offered() {
    // `smtp://` uses STARTTLS when the relay offers it; the test relay does not.
    let app = TestApp::spawn_with(Spawn {
        smtp_scheme: Some("smtp"),
        ..Spawn::default()
    })
    .await;
    let (_, key) = app.create_app(&[]).await;
    let token = app.request_token(&key, "starttls@example.com").await;
    assert_eq!(app.verify(&key, &token).await.status(), 200);
}

#[tokio::test]
async fn delivery_is_given_up_after_a_day_of_failures() {
    let mut app = TestApp::spawn().await;
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
