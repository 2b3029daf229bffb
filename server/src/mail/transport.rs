//! Mail transports: SMTP via lettre, or `.eml` files in a directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use url::Url;

use super::smtp::{MAX_IDLE, SmtpError, SmtpRelay, SmtpServer, SmtpTransaction};

/// `MAGICAUTH_SMTP_URL`: `smtp://` (STARTTLS when offered), `smtps://` (TLS),
/// `smtp+plain://` (no TLS). Its password never shows in `Debug` or `Display`.
#[derive(Clone)]
pub struct SmtpUrl(Url);

impl FromStr for SmtpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Errors never repeat the input: it may hold a password.
        let url = Url::parse(s).map_err(|e| format!("not a valid SMTP URL ({e})"))?;
        if !matches!(url.scheme(), "smtp" | "smtps" | "smtp+plain") {
            return Err("SMTP URL must start with smtp://, smtps:// or smtp+plain://".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("SMTP URL has no host".into());
        }
        Ok(Self(url))
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("****"));
        }
        write!(f, "{shown}")
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

impl SmtpUrl {
    fn host(&self) -> String {
        // IPv6 literals come bracketed from the URL; lettre wants them bare.
        self.0
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    }

    fn credentials(&self) -> Option<Credentials> {
        if self.0.username().is_empty() {
            return None;
        }
        let decode = |s: &str| percent_decode(s);
        Some(Credentials::new(
            decode(self.0.username()),
            decode(self.0.password().unwrap_or_default()),
        ))
    }

    /// The relay this URL describes.
    pub fn relay(&self) -> Result<SmtpRelay, String> {
        let host = self.host();
        let tls = || TlsParameters::new(host.clone()).map_err(|e| format!("TLS setup failed: {e}"));
        let (tls, default_port) = match self.0.scheme() {
            "smtps" => (Tls::Wrapper(tls()?), 465),
            "smtp" => (Tls::Opportunistic(tls()?), 587),
            _ => (Tls::None, 25),
        };
        Ok(SmtpRelay::new(SmtpServer {
            port: self.0.port().unwrap_or(default_port),
            host,
            tls,
            credentials: self.credentials(),
        }))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a delivery failed. `permanent` failures are not retried.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub permanent: bool,
    pub message: String,
}

/// Where emails go.
pub enum MailTransport {
    Smtp { url: SmtpUrl, relay: Box<SmtpRelay> },
    Directory(PathBuf),
}

impl fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailTransport::Smtp { url, .. } => write!(f, "Smtp({url})"),
            MailTransport::Directory(dir) => write!(f, "Directory({})", dir.display()),
        }
    }
}

impl MailTransport {
    pub fn smtp(url: SmtpUrl) -> Result<Self, String> {
        let relay = Box::new(url.relay()?);
        Ok(Self::Smtp { url, relay })
    }

    /// Closes the SMTP connections idle for too long to be reused.
    pub async fn close_stale(&self) {
        if let MailTransport::Smtp { relay, .. } = self {
            relay.close_idle(MAX_IDLE).await;
        }
    }

    /// Closes every idle SMTP connection (at shutdown).
    pub async fn close_all(&self) {
        if let MailTransport::Smtp { relay, .. } = self {
            relay.close_idle(Duration::ZERO).await;
        }
    }

    /// Takes a delivery up to its last step: for SMTP, a connection with the
    /// sender and recipient accepted. `file_stem` names the `.eml` file in
    /// directory mode; it is stable per outbox row, so a repeated delivery
    /// overwrites rather than duplicates.
    pub async fn prepare(&self, message: &Message, file_stem: &str) -> Result<ReadyDelivery<'_>, DeliveryError> {
        let email = message.formatted();
        match self {
            MailTransport::Smtp { relay, .. } => {
                let transaction = Box::new(relay.begin(message.envelope(), &email).await.map_err(smtp_failure)?);
                Ok(ReadyDelivery::Smtp { transaction, email })
            }
            MailTransport::Directory(dir) => Ok(ReadyDelivery::File {
                dir,
                file_stem: file_stem.to_owned(),
                email,
            }),
        }
    }
}

fn smtp_failure(e: SmtpError) -> DeliveryError {
    DeliveryError {
        permanent: e.is_permanent(),
        message: format!("SMTP: {e}"),
    }
}

/// A delivery ready for its last step.
pub enum ReadyDelivery<'a> {
    Smtp {
        transaction: Box<SmtpTransaction<'a>>,
        email: Vec<u8>,
    },
    File {
        dir: &'a Path,
        file_stem: String,
        email: Vec<u8>,
    },
}

impl ReadyDelivery<'_> {
    /// Whether the last step may hand the email over for good: then a crash
    /// before its outcome is recorded means it is sent again. A file is not:
    /// writing it again replaces it.
    pub fn is_irrevocable(&self) -> bool {
        matches!(self, ReadyDelivery::Smtp { .. })
    }

    /// The last step: the content to the relay, or the file to its directory.
    pub async fn complete(self) -> Result<(), DeliveryError> {
        match self {
            ReadyDelivery::Smtp { transaction, email } => transaction.send(&email).await.map_err(smtp_failure),
            ReadyDelivery::File { dir, file_stem, email } => {
                let transient = |e: std::io::Error| DeliveryError {
                    permanent: false,
                    message: format!("writing to {}: {e}", dir.display()),
                };
                tokio::fs::create_dir_all(dir).await.map_err(transient)?;
                let final_path = dir.join(format!("{file_stem}.eml"));
                let temp_path = dir.join(format!(".{file_stem}.eml.tmp"));
                // Write then rename, so a reader never sees half a message.
                let file = async {
                    let mut f = tokio::fs::File::create(&temp_path).await?;
                    tokio::io::AsyncWriteExt::write_all(&mut f, &email).await?;
                    f.sync_all().await?;
                    tokio::fs::rename(&temp_path, &final_path).await
                };
                file.await.map_err(transient)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_hide_passwords() {
        let url: SmtpUrl = "smtp://user:s3cret@mail.example.com:587".parse().unwrap();
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!url.to_string().contains("s3cret"));
        assert!(url.to_string().contains("user"));
    }

    #[test]
    fn smtp_url_schemes_are_checked() {
        assert!("smtps://mail.example.com".parse::<SmtpUrl>().is_ok());
        assert!("smtp+plain://127.0.0.1:2525".parse::<SmtpUrl>().is_ok());
        assert!("http://mail.example.com".parse::<SmtpUrl>().is_err());
        assert!("not a url".parse::<SmtpUrl>().is_err());
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let url: SmtpUrl = "smtp://us%40er:p%3Ass@mail.example.com".parse().unwrap();
        assert!(url.credentials().is_some());
        assert_eq!(percent_decode("p%3Ass"), "p:ss");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn every_scheme_builds_a_relay() {
        for url in [
            "smtp://u:p@mail.example.com",
            "smtps://mail.example.com",
            "smtp+plain://[::1]:2525",
        ] {
            assert!(url.parse::<SmtpUrl>().unwrap().relay().is_ok(), "{url}");
        }
    }
}
