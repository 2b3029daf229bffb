//! A small but real SMTP server (RFC 5321 subset) for integration tests.
//!
//! It listens on 127.0.0.1 with an OS-assigned port, speaks plain SMTP without
//! STARTTLS or AUTH, and records every accepted message so tests can inspect
//! what the code under test actually put on the wire. Outages are simulated at
//! the network level (421 greetings, 451 after DATA, a closed listener) so the
//! client's real error handling is exercised.

#![allow(dead_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Longest accepted line (command or DATA line), including the CRLF.
/// RFC 5321 only requires 1000 octets; we are generous but bounded.
const MAX_LINE: usize = 64 * 1024;
/// Largest accepted message (after dot-unstuffing); advertised via SIZE.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Upper bound on RCPT TO per transaction (RFC 5321 requires at least 100).
const MAX_RECIPIENTS: usize = 100;
/// Nesting limit when walking multipart bodies, so hostile input cannot recurse deeply.
const MAX_MIME_DEPTH: usize = 8;

/// How the sink treats new connections and transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkMode {
    /// Behave like a healthy server and store every message.
    #[default]
    Accept,
    /// Greet with `421` and close the connection immediately.
    Unavailable,
    /// Run the transaction normally but answer `451` at the end of DATA; nothing is stored.
    TempFail,
}

impl SinkMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Unavailable,
            2 => Self::TempFail,
            _ => Self::Accept,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Accept => 0,
            Self::Unavailable => 1,
            Self::TempFail => 2,
        }
    }
}

/// One message accepted by the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`), without angle brackets; empty for the null sender.
    pub from: String,
    /// Envelope recipients (`RCPT TO`), in order, without angle brackets.
    pub to: Vec<String>,
    /// The raw RFC 5322 message after dot-unstuffing, with CRLF line endings.
    pub data: String,
}

impl ReceivedMail {
    /// The first top-level header with this name (case-insensitive), unfolded but not decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_entity(&self.data);
        find_header(&headers, name).map(str::to_owned)
    }

    /// The `Subject` header with RFC 2047 encoded-words decoded.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject").map(|v| decode_encoded_words(&v))
    }

    /// The decoded `text/plain` body (first such part of a multipart message).
    /// Line endings are normalised to `\n`.
    pub fn text_body(&self) -> Option<String> {
        find_text_part(&self.data, "plain", 0)
    }

    /// The decoded `text/html` body (first such part of a multipart message).
    /// Line endings are normalised to `\n`.
    pub fn html_body(&self) -> Option<String> {
        find_text_part(&self.data, "html", 0)
    }

    /// The first URL in the text body that starts with `prefix`.
    /// A URL ends at whitespace, `"`, `<` or `>`.
    pub fn find_link(&self, prefix: &str) -> Option<String> {
        let text = self.text_body()?;
        text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>'))
            .find(|token| token.starts_with(prefix))
            .map(str::to_owned)
    }
}

/// State shared between the handle and the server tasks; survives stop/restart.
struct Shared {
    mode: AtomicU8,
    /// Accepted messages; a watch channel so `wait_for` can sleep until a change.
    mail: watch::Sender<Vec<ReceivedMail>>,
    connections: AtomicUsize,
    data_attempts: AtomicUsize,
}

impl Shared {
    fn mode(&self) -> SinkMode {
        SinkMode::from_u8(self.mode.load(Ordering::SeqCst))
    }
}

/// The accept loop of a started sink.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// An in-process SMTP server that records what it receives.
pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl SmtpSink {
    /// Binds 127.0.0.1 on an OS-assigned port and starts serving.
    pub async fn start() -> Self {
        let listener = bind(0).expect("bind SMTP sink on 127.0.0.1");
        let port = listener.local_addr().expect("SMTP sink local address").port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(SinkMode::Accept.as_u8()),
            mail: watch::Sender::new(Vec::new()),
            connections: AtomicUsize::new(0),
            data_attempts: AtomicUsize::new(0),
        });
        let running = Some(spawn_server(listener, Arc::clone(&shared)));
        Self { port, shared, running }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL in the server's configuration syntax.
    pub fn url(&self) -> String {
        format!("smtp+plain://127.0.0.1:{}", self.port)
    }

    /// Changes behaviour for subsequent connections (and, for `TempFail`, for
    /// every DATA that completes from now on, even on open connections).
    pub fn set_mode(&self, mode: SinkMode) {
        self.shared.mode.store(mode.as_u8(), Ordering::SeqCst);
    }

    /// Number of TCP connections accepted so far (across restarts).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Number of transactions that got a `354` for DATA (stored or not).
    pub fn data_attempts(&self) -> usize {
        self.shared.data_attempts.load(Ordering::SeqCst)
    }

    /// Snapshot of all messages accepted so far.
    pub async fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.mail.borrow().clone()
    }

    /// Waits until at least `n` messages to `to` (case-insensitive) have
    /// arrived, then gives their count and the last of them; `None` at the
    /// timeout. The future does not borrow the sink, so it can be stopped or
    /// restarted meanwhile. It wakes on each new message and copies only the
    /// one it returns.
    pub fn wait_for_recipient(
        &self,
        to: &str,
        n: usize,
        timeout: Duration,
    ) -> impl Future<Output = Option<(usize, ReceivedMail)>> + Send + 'static {
        let mut rx = self.shared.mail.subscribe();
        let to = to.to_lowercase();
        async move {
            // An ASCII address matches an ASCII one case-insensitively, and
            // never a lowercased one that is not ASCII: no allocation then.
            let is_to = |m: &ReceivedMail| {
                m.to.iter()
                    .any(|t| t.eq_ignore_ascii_case(&to) || (!t.is_ascii() && t.to_lowercase() == to))
            };
            let n = n.max(1);
            // Messages are only ever appended: each change scans only the
            // new ones, so many waiters on a long mailbox stay cheap.
            let (mut scanned, mut count, mut last) = (0, 0, 0);
            let mail = tokio::time::timeout(
                timeout,
                rx.wait_for(|mail| {
                    for (at, m) in mail.iter().enumerate().skip(scanned) {
                        if is_to(m) {
                            count += 1;
                            last = at;
                        }
                    }
                    scanned = mail.len();
                    count >= n
                }),
            )
            .await
            .ok()?
            .ok()?;
            mail.get(last).map(|m| (count, m.clone()))
        }
    }

    /// Waits until at least `n` messages have arrived or `timeout` elapses,
    /// then returns the snapshot (which may hold fewer than `n` messages).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut rx = self.shared.mail.subscribe();
        // Only a timeout can end this early: the sender lives in `self.shared`.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|mail| mail.len() >= n)).await;
        self.messages().await
    }

    /// Takes SMTP fully down: closes the listener (new connections are refused)
    /// and drops every open connection. Returns once the sockets are closed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            let _ = running.task.await;
        }
    }

    /// Brings SMTP back on the same port (stopping first if still running).
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind(self.port).unwrap_or_else(|e| panic!("rebind SMTP sink on port {}: {e}", self.port));
        self.running = Some(spawn_server(listener, Arc::clone(&self.shared)));
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Aborting the accept task drops the listener and its JoinSet, which
        // aborts every connection task.
        if let Some(running) = &self.running {
            running.task.abort();
        }
    }
}

/// Binds with `SO_REUSEADDR` so `restart` can reclaim the port while old
/// connections linger in `TIME_WAIT`.
fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(128)
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (shutdown, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    Running { shutdown, task }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped sender both mean "stop".
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    // I/O errors just mean the client went away.
                    conns.spawn(async move { let _ = serve(stream, &shared).await; });
                }
                // E.g. EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Envelope state of one SMTP session.
#[derive(Default)]
struct Session {
    greeted: bool,
    from: Option<String>,
    to: Vec<String>,
}

impl Session {
    fn reset_transaction(&mut self) {
        self.from = None;
        self.to.clear();
    }
}

/// What the connection loop must do after answering a command.
enum Next {
    Continue,
    Data,
    Close,
}

async fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);

    if shared.mode() == SinkMode::Unavailable {
        reply(
            &mut writer,
            "421 4.3.2 Service not available, closing transmission channel",
        )
        .await?;
        return Ok(());
    }
    reply(&mut writer, "220 127.0.0.1 ESMTP test sink ready").await?;

    let mut session = Session::default();
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                // We cannot find the next command boundary reliably; hang up.
                reply(&mut writer, "500 5.5.2 Line too long").await?;
                return hang_up(reader, writer).await;
            }
            Line::Complete => {}
        }
        let Ok(command) = std::str::from_utf8(&line) else {
            reply(&mut writer, "500 5.5.2 Syntax error, command not UTF-8").await?;
            continue;
        };
        let (response, next) = handle_command(&mut session, command);
        reply(&mut writer, &response).await?;
        match next {
            Next::Continue => {}
            Next::Close => return Ok(()),
            Next::Data => {
                shared.data_attempts.fetch_add(1, Ordering::SeqCst);
                let response = match read_data(&mut reader).await? {
                    Data::Eof => return Ok(()),
                    Data::LineTooLong => {
                        reply(&mut writer, "500 5.5.2 Line too long").await?;
                        return hang_up(reader, writer).await;
                    }
                    Data::TooBig => "552 5.3.4 Message size exceeds fixed limit".to_owned(),
                    Data::Message(_) if shared.mode() == SinkMode::TempFail => {
                        "451 4.3.0 Temporary failure, try again later".to_owned()
                    }
                    Data::Message(data) => {
                        let mail = ReceivedMail {
                            from: session.from.take().unwrap_or_default(),
                            to: std::mem::take(&mut session.to),
                            data,
                        };
                        // Store before replying so a successful send is visible at once.
                        let mut id = 0;
                        shared.mail.send_modify(|all| {
                            all.push(mail);
                            id = all.len();
                        });
                        format!("250 2.0.0 Ok: queued as {id}")
                    }
                };
                // The transaction ends with DATA whatever the outcome.
                session.reset_transaction();
                reply(&mut writer, &response).await?;
            }
        }
    }
}

/// Closes after an error while the client may still be sending: closing a
/// socket with unread input makes the kernel send RST, which can destroy our
/// final reply before the client reads it. So send FIN first, then briefly
/// discard whatever is still in flight.
async fn hang_up(reader: BufReader<OwnedReadHalf>, mut writer: OwnedWriteHalf) -> io::Result<()> {
    writer.shutdown().await?;
    let (mut rest, mut discard) = (reader.take(MAX_MESSAGE as u64), tokio::io::sink());
    let drain = tokio::io::copy(&mut rest, &mut discard);
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

/// Answers one command line (without CRLF) and updates the session.
fn handle_command(session: &mut Session, line: &str) -> (String, Next) {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let arg = arg.trim();
    let ok = |text: &str| (text.to_owned(), Next::Continue);

    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if arg.is_empty() => ok("501 5.5.4 Syntax: EHLO domain"),
        "EHLO" => {
            session.greeted = true;
            session.reset_transaction();
            // Deliberately no STARTTLS and no AUTH: this is a plain, open relay.
            let text = format!(
                "250-127.0.0.1 greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                 250-PIPELINING\r\n250 SIZE {MAX_MESSAGE}"
            );
            (text, Next::Continue)
        }
        "HELO" => {
            session.greeted = true;
            session.reset_transaction();
            (format!("250 127.0.0.1 greets {arg}"), Next::Continue)
        }
        "MAIL" if !session.greeted => ok("503 5.5.1 Send EHLO/HELO first"),
        "MAIL" if session.from.is_some() => ok("503 5.5.1 Nested MAIL command"),
        "MAIL" => match parse_path(arg, "FROM:") {
            Some(from) => {
                session.from = Some(from);
                ok("250 2.1.0 Ok")
            }
            None => ok("501 5.5.4 Syntax: MAIL FROM:<address>"),
        },
        "RCPT" if session.from.is_none() => ok("503 5.5.1 Need MAIL before RCPT"),
        "RCPT" => match parse_path(arg, "TO:") {
            Some(to) if to.is_empty() => ok("501 5.1.3 Empty recipient"),
            Some(_) if session.to.len() >= MAX_RECIPIENTS => ok("452 4.5.3 Too many recipients"),
            Some(to) => {
                session.to.push(to);
                ok("250 2.1.5 Ok")
            }
            None => ok("501 5.5.4 Syntax: RCPT TO:<address>"),
        },
        "DATA" if !arg.is_empty() => ok("501 5.5.4 DATA takes no arguments"),
        "DATA" if session.to.is_empty() => ok("503 5.5.1 Need RCPT before DATA"),
        "DATA" => ("354 End data with <CR><LF>.<CR><LF>".to_owned(), Next::Data),
        "RSET" => {
            session.reset_transaction();
            ok("250 2.0.0 Ok")
        }
        "NOOP" => ok("250 2.0.0 Ok"),
        // RFC 5321 §4.5.1 lists VRFY as mandatory; 252 is the polite non-answer.
        "VRFY" => ok("252 2.5.0 Cannot VRFY user, but will accept message"),
        "QUIT" => ("221 2.0.0 Bye".to_owned(), Next::Close),
        "" => ok("500 5.5.2 Syntax error, empty command"),
        _ => ok("502 5.5.1 Command not implemented"),
    }
}

/// Parses `FROM:<addr> [params]` / `TO:<addr> [params]`, returning the address
/// without brackets. Parameters (BODY=8BITMIME, SMTPUTF8, SIZE=…) are ignored.
fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let (addr, _params) = rest.split_once('>')?;
    if addr.contains(['<', ' ']) {
        return None;
    }
    Some(addr.to_owned())
}

async fn reply<W: AsyncWrite + Unpin>(writer: &mut W, text: &str) -> io::Result<()> {
    writer.write_all(format!("{text}\r\n").as_bytes()).await
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `buf` without its terminator (CRLF, or a lenient bare
/// LF), never buffering more than `MAX_LINE` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let limit = MAX_LINE as u64 + 1;
    let n = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        // Either the limit cut the line or the peer closed mid-line.
        return Ok(if buf.len() > MAX_LINE { Line::TooLong } else { Line::Eof });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Complete)
}

enum Data {
    Message(String),
    TooBig,
    LineTooLong,
    Eof,
}

/// Reads DATA content up to the lone `.` line, undoing dot-stuffing.
/// An oversized message is read to the end but discarded, so the session can continue.
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Data> {
    let mut data = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        match read_line(reader, &mut line).await? {
            Line::Eof => return Ok(Data::Eof),
            Line::TooLong => return Ok(Data::LineTooLong),
            Line::Complete => {}
        }
        if line == b"." {
            break;
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + content.len() + 2 > MAX_MESSAGE {
            too_big = true;
            data = Vec::new();
        }
        if !too_big {
            data.extend_from_slice(content);
            data.extend_from_slice(b"\r\n");
        }
    }
    Ok(if too_big {
        Data::TooBig
    } else {
        Data::Message(String::from_utf8_lossy(&data).into_owned())
    })
}

// ---------------------------------------------------------------------------
// Minimal MIME reading: just enough to look inside what lettre produces.
// ---------------------------------------------------------------------------

type Headers = Vec<(String, String)>;

/// Splits an entity into unfolded headers and the (still encoded) body.
fn split_entity(raw: &str) -> (Headers, &str) {
    let mut headers: Headers = Vec::new();
    let mut offset = 0;
    for line in raw.split_inclusive('\n') {
        offset += line.len();
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return (headers, &raw[offset..]);
        }
        if line.starts_with([' ', '\t']) {
            // Continuation: unfolding removes only the line break (RFC 5322 §2.2.3).
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    // No blank line: everything was header.
    (headers, "")
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a `Content-Type`-like value into a lowercase type and its parameters.
fn parse_header_params(value: &str) -> (String, Vec<(String, String)>) {
    // Split on `;` outside quoted strings.
    let mut segments = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                segments.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    segments.push(current);

    let mut segments = segments.into_iter();
    let kind = segments.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = segments
        .filter_map(|segment| {
            let (key, value) = segment.split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => unescape_quoted(inner),
                None => value.to_owned(),
            };
            Some((key.trim().to_ascii_lowercase(), value))
        })
        .collect();
    (kind, params)
}

fn unescape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or(c) } else { c });
    }
    out
}

fn param<'p>(params: &'p [(String, String)], key: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Depth-first search for the first non-attachment `text/<subtype>` part.
fn find_text_part(raw: &str, subtype: &str, depth: usize) -> Option<String> {
    let (headers, body) = split_entity(raw);
    // RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii.
    let (kind, params) = parse_header_params(find_header(&headers, "Content-Type").unwrap_or("text/plain"));

    if kind.starts_with("multipart/") {
        if depth >= MAX_MIME_DEPTH {
            return None;
        }
        let boundary = param(&params, "boundary")?;
        return multipart_parts(body, boundary)
            .into_iter()
            .find_map(|part| find_text_part(part, subtype, depth + 1));
    }

    let is_attachment =
        find_header(&headers, "Content-Disposition").is_some_and(|d| parse_header_params(d).0 == "attachment");
    if kind.strip_prefix("text/") != Some(subtype) || is_attachment {
        return None;
    }

    let encoding = find_header(&headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            lenient_base64()
                .decode(compact)
                .unwrap_or_else(|_| body.as_bytes().to_vec())
        }
        "quoted-printable" => decode_quoted_printable(body.as_bytes(), false),
        _ => body.as_bytes().to_vec(),
    };
    let text = decode_charset(&bytes, param(&params, "charset").unwrap_or("us-ascii"));
    Some(text.replace("\r\n", "\n"))
}

/// Slices a multipart body into its parts (RFC 2046 §5.1.1), dropping the
/// preamble, the epilogue and the CRLF that belongs to each delimiter.
fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut part_start = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let Some(rest) = line.trim_end().strip_prefix(delimiter.as_str()) else {
            continue;
        };
        let closing = match rest {
            "" => false,
            "--" => true,
            _ => continue, // merely starts like a delimiter
        };
        if let Some(start) = part_start {
            let part = &body[start..line_start];
            let part = part.strip_suffix('\n').unwrap_or(part);
            parts.push(part.strip_suffix('\r').unwrap_or(part));
        }
        if closing {
            break;
        }
        part_start = Some(offset);
    }
    parts
}

/// Base64 decoder that tolerates missing padding (seen in some encoded-words).
fn lenient_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// Decodes quoted-printable (RFC 2045 §6.7); with `header` set, applies the
/// RFC 2047 "Q" rule that `_` stands for a space.
fn decode_quoted_printable(input: &[u8], header: bool) -> Vec<u8> {
    let hex = |b: Option<&u8>| {
        b.and_then(|&b| char::from(b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'=' => {
                if let (Some(hi), Some(lo)) = (hex(input.get(i + 1)), hex(input.get(i + 2))) {
                    out.push(hi * 16 + lo);
                    i += 3;
                    continue;
                }
                // Soft line break: `=` plus optional trailing whitespace, then a line break.
                let rest = &input[i + 1..];
                let ws = rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
                let after = &rest[ws..];
                if after.starts_with(b"\r\n") {
                    i += 1 + ws + 2;
                } else if after.starts_with(b"\n") || after.is_empty() {
                    i += 1 + ws + 1;
                } else {
                    // Malformed escape: keep it literally.
                    out.push(b'=');
                    i += 1;
                }
            }
            b'_' if header => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn decode_charset(bytes: &[u8], charset: &str) -> String {
    let charset = charset.trim().to_ascii_lowercase();
    match charset.as_str() {
        // Latin-1 maps bytes 1:1 to the first 256 code points.
        "iso-8859-1" | "latin1" | "iso_8859-1" => bytes.iter().map(|&b| b as char).collect(),
        // UTF-8, US-ASCII and anything unknown.
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Decodes RFC 2047 encoded-words in a header value. Adjacent encoded-words
/// are joined (whitespace between them is not text, §6.2) and their bytes
/// concatenated before charset decoding, in case a character was split.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut pending: Option<(String, Vec<u8>)> = None;
    let flush = |out: &mut String, pending: &mut Option<(String, Vec<u8>)>| {
        if let Some((charset, bytes)) = pending.take() {
            out.push_str(&decode_charset(&bytes, &charset));
        }
    };

    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        if let Some((charset, bytes, after)) = parse_encoded_word(rest) {
            match &mut pending {
                Some((cs, buf)) if cs.eq_ignore_ascii_case(charset) => buf.extend(bytes),
                _ => {
                    flush(&mut out, &mut pending);
                    pending = Some((charset.to_owned(), bytes));
                }
            }
            let trimmed = after.trim_start_matches([' ', '\t', '\r', '\n']);
            rest = if parse_encoded_word(trimmed).is_some() {
                trimmed
            } else {
                after
            };
            continue;
        }
        flush(&mut out, &mut pending);
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut out, &mut pending);
    out
}

/// Parses `=?charset?B|Q?text?=` at the start of `s`: (charset, bytes, rest).
fn parse_encoded_word(s: &str) -> Option<(&str, Vec<u8>, &str)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let (text, rest) = inner.split_once("?=")?;
    if charset.is_empty()
        || [charset, encoding, text]
            .iter()
            .any(|p| p.contains(char::is_whitespace))
    {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => lenient_base64().decode(text).ok()?,
        "Q" | "q" => decode_quoted_printable(text.as_bytes(), true),
        _ => return None,
    };
    // RFC 2231 allows a language suffix: `utf-8*en`.
    let charset = charset.split('*').next().unwrap_or(charset);
    Some((charset, bytes, rest))
}
