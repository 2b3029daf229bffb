//! SMTP delivery over reused connections.
//!
//! lettre's `AsyncSmtpTransport` writes a message and its closing `.` line
//! with two separate socket writes. Without `TCP_NODELAY` (which lettre does
//! not set), Nagle's algorithm holds the small second write back until the
//! relay acknowledges the first, and relays delay that acknowledgement (40 ms
//! on Linux): every email then costs at least one delayed-ACK timeout, whatever
//! the relay's speed. So sessions are driven here with lettre's connection API
//! and the message goes out in one write with its terminator. Connections are
//! kept for the next email: one per delivery in flight, opened on demand, and
//! checked with `NOOP` only after an idle spell (lettre's pool does it before
//! every reuse, one more round trip per email).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

/// Time allowed to open a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle for longer is checked with `NOOP` before it is reused,
/// in case the relay has hung up on it meanwhile.
const PROBE_AFTER_IDLE: Duration = Duration::from_secs(5);
/// A connection idle for longer is closed rather than reused.
pub(super) const MAX_IDLE: Duration = Duration::from_secs(60);
/// Time allowed for a polite `QUIT` when closing idle connections.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an email could not be handed to the relay.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("the relay does not support {0}, which this email needs")]
    Unsupported(&'static str),
}

impl SmtpError {
    /// Whether retrying cannot help (a 5xx answer).
    pub fn is_permanent(&self) -> bool {
        match self {
            SmtpError::Smtp(e) => e.is_permanent(),
            // The relay's configuration may change: retried like lettre did.
            SmtpError::Unsupported(_) => false,
        }
    }
}

/// How to open and log in to an SMTP session.
pub(super) struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<Credentials>,
}

/// The relay and its idle connections.
pub struct SmtpRelay {
    server: SmtpServer,
    hello: ClientId,
    /// Most recently used last: reuse takes the warmest connection.
    idle: Mutex<Vec<IdleConnection>>,
}

struct IdleConnection {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpRelay({}:{})", self.server.host, self.server.port)
    }
}

impl SmtpRelay {
    pub(super) fn new(server: SmtpServer) -> Self {
        Self {
            server,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a mail transaction for `email` (`MAIL FROM`, `RCPT TO`) on an
    /// idle connection, or a new one.
    pub async fn begin(&self, envelope: &Envelope, email: &[u8]) -> Result<SmtpTransaction<'_>, SmtpError> {
        let mut connection = self.checkout().await?;
        start_transaction(&mut connection, envelope, email).await?;
        Ok(SmtpTransaction {
            relay: self,
            connection,
        })
    }

    /// Closes (with `QUIT`) the connections idle for at least `min_idle`.
    pub async fn close_idle(&self, min_idle: Duration) {
        let stale: Vec<IdleConnection> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (stale, fresh) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.since.elapsed() >= min_idle);
            *idle = fresh;
            stale
        };
        let mut quits = tokio::task::JoinSet::new();
        for mut idle in stale {
            quits.spawn(async move {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, idle.connection.quit()).await;
            });
        }
        quits.join_all().await;
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(IdleConnection { mut connection, since }) = idle else {
                return self.connect().await;
            };
            let idle_for = since.elapsed();
            if idle_for < PROBE_AFTER_IDLE || (idle_for < MAX_IDLE && connection.test_connected().await) {
                return Ok(connection);
            }
            // Too old or hung up: dropping it closes the socket.
        }
    }

    fn check_in(&self, connection: AsyncSmtpConnection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(IdleConnection {
                connection,
                since: Instant::now(),
            });
    }

    /// What lettre's transport does to open a session: TLS from the start or
    /// STARTTLS when offered, then AUTH if credentials are set.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let server = &self.server;
        let implicit_tls = match &server.tls {
            Tls::Wrapper(parameters) => Some(parameters.clone()),
            _ => None,
        };
        let mut connection = AsyncSmtpConnection::connect_tokio1(
            (server.host.as_str(), server.port),
            Some(CONNECT_TIMEOUT),
            &self.hello,
            implicit_tls,
            None,
        )
        .await?;
        match &server.tls {
            Tls::Opportunistic(parameters) if connection.can_starttls() => {
                connection.starttls(parameters.clone(), &self.hello).await?;
            }
            Tls::Required(parameters) => connection.starttls(parameters.clone(), &self.hello).await?,
            _ => {}
        }
        if let Some(credentials) = &server.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }
}

/// A mail transaction with its recipients accepted, waiting for its content.
/// A connection goes back to the pool only after a successful send: after a
/// failure, or if this is dropped unsent, the session may be mid-transaction
/// or broken, and its connection is closed.
pub struct SmtpTransaction<'a> {
    relay: &'a SmtpRelay,
    connection: AsyncSmtpConnection,
}

impl SmtpTransaction<'_> {
    /// `DATA`, then the content and its terminator in a single write.
    pub async fn send(mut self, email: &[u8]) -> Result<(), SmtpError> {
        let connection = &mut self.connection;
        connection.command(Data).await?;
        match std::str::from_utf8(email) {
            // `command` writes its argument in one go and reads the reply.
            Ok(text) => connection.command(DataBlock(text)).await?,
            // Not reached with messages built from `String`s; lettre's own (slower) path.
            Err(_) => connection.message(email).await?,
        };
        self.relay.check_in(self.connection);
        Ok(())
    }
}

/// The start of a mail transaction, as in lettre's `AsyncSmtpConnection::send`.
async fn start_transaction(
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<(), SmtpError> {
    let mut parameters = Vec::new();
    let ascii_addresses = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .all(|a| AsRef::<str>::as_ref(a).is_ascii());
    if !ascii_addresses {
        if !connection.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(SmtpError::Unsupported("SMTPUTF8"));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() {
        if !connection.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SmtpError::Unsupported("8BITMIME"));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    connection
        .command(Mail::new(envelope.from().cloned(), parameters))
        .await?;
    for recipient in envelope.to() {
        connection.command(Rcpt::new(recipient.clone(), Vec::new())).await?;
    }
    Ok(())
}

/// The DATA content: dot-stuffed (RFC 5321 §4.5.2), then `CRLF . CRLF`.
struct DataBlock<'a>(&'a str);

impl fmt::Display for DataBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every piece after the first starts right after an LF: a bare LF
        // counts as a line end too, since lenient relays treat it as one.
        for line in self.0.split_inclusive('\n') {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
        }
        f.write_str("\r\n.\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_blocks_are_dot_stuffed_and_terminated() {
        let block = DataBlock(".hidden\r\nline\r\n..two\r\nmid.dle\r\n.").to_string();
        assert_eq!(block, "..hidden\r\nline\r\n...two\r\nmid.dle\r\n..\r\n.\r\n");
        assert_eq!(DataBlock("a\r\n").to_string(), "a\r\n\r\n.\r\n");
    }
}
