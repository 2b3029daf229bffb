//! Exercises the test SMTP sink with lettre as a real client over TCP, plus a
//! raw-socket client for protocol edge cases lettre never produces.

use std::error::Error as _;
use std::io;
use std::time::{Duration, Instant};

use crate::support::smtp::{ReceivedMail, SinkMode, SmtpSink};
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const SUBJECT: &str = "Your sign-in link for Café";
/// Long enough that quoted-printable has to soft-wrap it.
const LINK: &str =
    "https://auth.example.com/v1/verify?token=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8&redirect=%2Fhome";

fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn mailbox(s: &str) -> Mailbox {
    s.parse().expect("valid mailbox")
}

fn plain_message(subject: &str, body: &str) -> Message {
    Message::builder()
        .from(mailbox("MagicAuth <noreply@example.com>"))
        .to(mailbox("user@example.com"))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .expect("valid message")
}

fn io_error_kind(err: &SmtpError) -> Option<io::ErrorKind> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

#[tokio::test]
async fn alternative_message_decodes() {
    let sink = SmtpSink::start().await;
    assert_eq!(sink.url(), format!("smtp+plain://127.0.0.1:{}", sink.port()));

    let text = format!("Hello Zoë,\n\nSign in here:\n{LINK}\n\nThe link expires in 15 minutes.\n");
    let html = format!("<p>Hello Zoë,</p>\n<p><a href=\"{LINK}\">Sign in — ✓</a></p>\n");
    let message = Message::builder()
        .from(mailbox("MagicAuth <noreply@example.com>"))
        .to(mailbox("user@example.com"))
        .bcc(mailbox("audit@example.com"))
        .subject(SUBJECT)
        .multipart(MultiPart::alternative_plain_html(text.clone(), html.clone()))
        .expect("valid message");
    transport(&sink).send(message).await.expect("send succeeds");

    let mail = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    let mail = &mail[0];
    assert_eq!(mail.from, "noreply@example.com");
    assert_eq!(mail.to, ["user@example.com", "audit@example.com"]);
    assert!(
        mail.data.contains("=?utf-8?"),
        "subject should be RFC 2047 encoded on the wire"
    );
    assert_eq!(mail.subject().as_deref(), Some(SUBJECT));
    assert_eq!(mail.text_body().as_deref(), Some(text.as_str()));
    assert_eq!(mail.html_body().as_deref(), Some(html.as_str()));
    assert_eq!(mail.find_link("https://auth.example.com/").as_deref(), Some(LINK));
    assert_eq!(mail.find_link("https://elsewhere.example/"), None);
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.data_attempts(), 1);
}

#[tokio::test]
async fn explicit_transfer_encodings_decode() {
    let sink = SmtpSink::start().await;
    let text = format!("Base64 body — Café\n{LINK}\n");
    let html = "<p>Quoted-printable — Café</p>\n".to_owned();
    let message = Message::builder()
        .from(mailbox("noreply@example.com"))
        .to(mailbox("user@example.com"))
        .subject("Ünïcödé ✓ and a fairly long subject line so that it may get folded by lettre")
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .header(ContentTransferEncoding::Base64)
                        .body(text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .header(ContentTransferEncoding::QuotedPrintable)
                        .body(html.clone()),
                ),
        )
        .expect("valid message");
    transport(&sink).send(message).await.expect("send succeeds");

    let mail = sink.messages().await.pop().expect("message stored");
    let raw = mail.data.to_ascii_lowercase();
    assert!(raw.contains("content-transfer-encoding: base64"));
    assert!(raw.contains("content-transfer-encoding: quoted-printable"));
    assert_eq!(
        mail.subject().as_deref(),
        Some("Ünïcödé ✓ and a fairly long subject line so that it may get folded by lettre")
    );
    assert_eq!(mail.text_body().as_deref(), Some(text.as_str()));
    assert_eq!(mail.html_body().as_deref(), Some(html.as_str()));
    assert_eq!(mail.find_link("https://auth.example.com/").as_deref(), Some(LINK));
}

#[tokio::test]
async fn leading_dots_survive_dot_stuffing() {
    let sink = SmtpSink::start().await;
    let body = "first line\n.starts with a dot\n.\n..two dots\nlast line\n";
    transport(&sink)
        .send(plain_message("dots", body))
        .await
        .expect("send succeeds");

    let mail = sink.messages().await.pop().expect("message stored");
    assert!(mail.data.contains("\r\n.starts with a dot\r\n.\r\n..two dots\r\n"));
    // lettre always appends CRLF.CRLF, so a body that already ends in a line
    // break arrives with one extra empty line - faithfully recorded.
    assert_eq!(mail.text_body(), Some(format!("{body}\n")));
    assert_eq!(mail.html_body(), None);
    assert_eq!(mail.subject().as_deref(), Some("dots"));
}

#[tokio::test]
async fn tempfail_is_transient_and_stores_nothing() {
    let sink = SmtpSink::start().await;
    let transport = transport(&sink);
    sink.set_mode(SinkMode::TempFail);

    let err = transport
        .send(plain_message("hi", "body\n"))
        .await
        .expect_err("451 after DATA");
    assert!(err.is_transient(), "expected transient error, got {err:?}");
    assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("451"));
    assert!(sink.messages().await.is_empty());
    assert_eq!(sink.data_attempts(), 1);

    sink.set_mode(SinkMode::Accept);
    transport
        .send(plain_message("hi", "body\n"))
        .await
        .expect("send succeeds once the sink accepts again");
    assert_eq!(sink.messages().await.len(), 1);
    assert_eq!(sink.data_attempts(), 2);
}

#[tokio::test]
async fn unavailable_greets_421() {
    let sink = SmtpSink::start().await;
    sink.set_mode(SinkMode::Unavailable);

    let err = transport(&sink)
        .send(plain_message("hi", "body\n"))
        .await
        .expect_err("421 greeting");
    assert!(err.is_transient(), "expected transient error, got {err:?}");
    assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("421"));
    assert!(sink.connections() >= 1);
    assert_eq!(sink.data_attempts(), 0);
    assert!(sink.messages().await.is_empty());
}

#[tokio::test]
async fn stop_refuses_and_restart_recovers_on_same_port() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port();
    // One transport throughout, so its pooled connection must cope with the outage.
    let transport = transport(&sink);
    transport
        .send(plain_message("before", "body\n"))
        .await
        .expect("send succeeds");

    sink.stop().await;
    let err = transport
        .send(plain_message("during", "body\n"))
        .await
        .expect_err("server is down");
    assert!(
        !err.is_transient() && !err.is_permanent(),
        "expected a network error, got {err:?}"
    );
    assert_eq!(io_error_kind(&err), Some(io::ErrorKind::ConnectionRefused));
    sink.stop().await; // idempotent

    sink.restart().await;
    assert_eq!(sink.port(), port);
    transport
        .send(plain_message("after", "body\n"))
        .await
        .expect("send succeeds after restart");

    let subjects: Vec<_> = sink.messages().await.iter().filter_map(ReceivedMail::subject).collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[tokio::test]
async fn wait_for_times_out_with_fewer_messages() {
    let sink = SmtpSink::start().await;
    transport(&sink)
        .send(plain_message("one", "body\n"))
        .await
        .expect("send succeeds");

    let started = Instant::now();
    let mail = sink.wait_for(2, Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert_eq!(mail.len(), 1);
    assert!(waited >= Duration::from_millis(300), "returned early after {waited:?}");
    assert!(waited < Duration::from_secs(3), "overslept: {waited:?}");
}

#[tokio::test]
async fn wait_for_wakes_on_arrival() {
    let sink = SmtpSink::start().await;
    let transport = transport(&sink);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        transport.send(plain_message("late", "body\n")).await
    });

    let started = Instant::now();
    let mail = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mail.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    sender.await.expect("sender task").expect("send succeeds");
}

fn message_to(to: &str, subject: &str) -> Message {
    Message::builder()
        .from(mailbox("MagicAuth <noreply@example.com>"))
        .to(mailbox(to))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body("body\n".to_owned())
        .expect("valid message")
}

#[tokio::test]
async fn wait_for_recipient_counts_that_recipients_mail_only() {
    let sink = SmtpSink::start().await;
    let transport = transport(&sink);
    // Waiting from before the first arrival: each arrival is looked at once.
    let second = sink.wait_for_recipient("Ann@Example.com", 2, Duration::from_secs(10));
    let third = sink.wait_for_recipient("ann@example.com", 3, Duration::from_millis(300));
    for (to, subject) in [
        ("bob@example.com", "bob 1"),
        ("ann@example.com", "ann 1"),
        ("annie@example.com", "annie 1"),
        ("ANN@example.com", "ann 2"),
        ("bob@example.com", "bob 2"),
    ] {
        transport.send(message_to(to, subject)).await.expect("send succeeds");
    }
    let (count, mail) = second.await.expect("two messages to ann");
    assert_eq!(count, 2);
    assert_eq!(mail.subject().as_deref(), Some("ann 2"));
    assert!(third.await.is_none(), "ann has only two messages");
    // Waiting after the arrivals finds them in what is there.
    let (count, mail) = sink
        .wait_for_recipient("bob@example.com", 1, Duration::from_secs(1))
        .await
        .expect("bob's messages");
    assert_eq!(count, 2);
    assert_eq!(mail.subject().as_deref(), Some("bob 2"));
}

#[tokio::test]
async fn dropping_the_sink_closes_the_port() {
    let sink = SmtpSink::start().await;
    let port = sink.port();
    drop(sink);
    // Abort is asynchronous; give the runtime a moment to drop the listener.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            _ if Instant::now() > deadline => panic!("port {port} still accepting after drop"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A line-oriented client for driving the protocol by hand.
struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    async fn connect(sink: &SmtpSink) -> (Self, String) {
        let stream = TcpStream::connect(("127.0.0.1", sink.port())).await.expect("connect");
        let (reader, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(reader),
            writer,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Reads a full (possibly multi-line) reply; empty string on EOF.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.expect("read reply") == 0 {
                return all;
            }
            all.push_str(&line);
            // The last line of a reply has a space after the code.
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    async fn command(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

#[tokio::test]
async fn protocol_errors_and_limits() {
    let sink = SmtpSink::start().await;
    let (mut c, greeting) = RawClient::connect(&sink).await;
    assert!(greeting.starts_with("220 "), "{greeting}");

    assert!(c.command("MAIL FROM:<a@example.com>").await.starts_with("503 "));
    assert!(c.command("EHLO").await.starts_with("501 "));

    let ehlo = c.command("ehlo client.example").await;
    assert!(ehlo.starts_with("250-"), "{ehlo}");
    for ext in ["8BITMIME", "SMTPUTF8", "PIPELINING"] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");

    assert!(c.command("STARTTLS").await.starts_with("502 "));
    assert!(c.command("XYZZY plugh").await.starts_with("502 "));
    assert!(c.command("").await.starts_with("500 "));
    assert!(c.command("NOOP").await.starts_with("250 "));
    assert!(c.command("RCPT TO:<b@example.com>").await.starts_with("503 "));
    assert!(c.command("DATA").await.starts_with("503 "));
    assert!(c.command("MAIL FROM:garbage").await.starts_with("501 "));
    assert!(c.command("MAIL FROM:<>").await.starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@example.com>").await.starts_with("503 "));
    assert!(c.command("DATA").await.starts_with("503 "));
    assert!(c.command("RCPT TO:<>").await.starts_with("501 "));
    assert!(c.command("RSET").await.starts_with("250 "));
    assert!(c.command("RCPT TO:<b@example.com>").await.starts_with("503 "));

    // Invalid UTF-8 and NUL bytes are answered, not fatal.
    c.send_raw(b"\xff\xfe\x00\r\n").await;
    assert!(c.reply().await.starts_with("500 "));

    // Pipelined transaction in one write; bare LF line endings are tolerated.
    c.send_raw(
        b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\nDATA\r\n",
    )
    .await;
    for expected in ["250 ", "250 ", "250 ", "354 "] {
        assert!(c.reply().await.starts_with(expected));
    }
    c.send_raw(b"Subject: raw\r\n\r\n..dot\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 "));

    let mail = sink.messages().await.pop().expect("stored");
    assert_eq!(mail.from, "a@example.com");
    assert_eq!(mail.to, ["b@example.com", "c@example.com"]);
    assert_eq!(mail.data, "Subject: raw\r\n\r\n.dot\r\n");
    assert_eq!(mail.text_body().as_deref(), Some(".dot\n"));

    // An over-long line is rejected and the connection dropped.
    c.send_raw(&vec![b'A'; 70 * 1024]).await;
    c.send_raw(b"\r\n").await;
    assert!(c.reply().await.starts_with("500 "));
    assert_eq!(c.reply().await, "", "connection should be closed");

    // The sink keeps serving other clients.
    let (mut c, _) = RawClient::connect(&sink).await;
    assert!(c.command("HELO x").await.starts_with("250 "));
    assert!(c.command("QUIT").await.starts_with("221 "));
    assert_eq!(c.reply().await, "");
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn oversized_message_is_rejected_but_session_continues() {
    let sink = SmtpSink::start().await;
    let (mut c, _) = RawClient::connect(&sink).await;
    c.command("EHLO x").await;
    c.command("MAIL FROM:<a@example.com>").await;
    c.command("RCPT TO:<b@example.com>").await;
    assert!(c.command("DATA").await.starts_with("354 "));
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(1024); // ~1 MiB
    for _ in 0..11 {
        c.send_raw(chunk.as_bytes()).await;
    }
    assert!(c.command(".").await.starts_with("552 "));
    assert!(c.command("NOOP").await.starts_with("250 "));
    assert!(sink.messages().await.is_empty());
    assert_eq!(sink.data_attempts(), 1);
}
