//! Settings from the environment: the app's own public URL, where to listen,
//! and the key that signs session cookies. (The MagicAuth client reads its own
//! `MAGICAUTH_APP_KEY` and `MAGICAUTH_BASE_URL`.)

use std::fmt;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use url::{Host, Url};

const DEFAULT_APP_URL: &str = "http://localhost:3000";
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// HMAC-SHA256 wants a key at least as long as its output.
const MIN_SECRET_LEN: usize = 32;

/// Everything `main` needs besides the MagicAuth client.
#[derive(Debug)]
pub struct Settings {
    pub app_url: AppUrl,
    pub listen: SocketAddr,
    pub session_secret: SessionSecret,
}

impl Settings {
    /// Reads `APP_URL`, `LISTEN` and `SESSION_SECRET`. Without a secret a random
    /// one is made, with a warning: sessions then end when the process does.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let app_url = AppUrl::parse(var("APP_URL").as_deref().unwrap_or(DEFAULT_APP_URL)).context("APP_URL")?;
        let listen = var("LISTEN")
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .trim()
            .parse()
            .context("LISTEN must be an address such as 127.0.0.1:3000")?;
        let session_secret = match var("SESSION_SECRET") {
            Some(secret) => SessionSecret::new(secret.into_bytes()).context("SESSION_SECRET")?,
            None => {
                tracing::warn!(
                    "SESSION_SECRET is not set: using a random one, so sessions end when this process stops \
                     (set it to 32 or more random bytes, e.g. `openssl rand -base64 32`)"
                );
                SessionSecret::random()
            }
        };
        Ok(Self {
            app_url,
            listen,
            session_secret,
        })
    }
}

/// The app's public origin, e.g. `https://app.example.com`. MagicAuth's links
/// lead to its `/auth/callback`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppUrl(Url);

impl AppUrl {
    /// Accepts what the MagicAuth server accepts as a redirect URL: `https`, or
    /// `http` on a loopback host. Checking here turns a misconfiguration into a
    /// startup error instead of every sign-in failing.
    pub fn parse(input: &str) -> anyhow::Result<Self> {
        let url = Url::parse(input.trim()).with_context(|| format!("not a URL: {input:?}"))?;
        let loopback = match url.host() {
            Some(Host::Domain(name)) => name == "localhost",
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => bail!("must be https (http is only allowed for localhost and 127.0.0.1)"),
            other => bail!("unsupported scheme {other:?}: use https"),
        }
        if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
            bail!("must be an origin such as https://app.example.com");
        }
        // Routes are mounted at the root; a path prefix would need every link rewritten.
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            bail!("must be an origin such as https://app.example.com, without a path, query or fragment");
        }
        Ok(Self(url))
    }

    /// Where MagicAuth's emailed links lead: `{APP_URL}/auth/callback`.
    pub fn callback_url(&self) -> String {
        format!("{}/auth/callback", self.0.as_str().trim_end_matches('/'))
    }

    /// Cookies get `Secure` when the app is served over https.
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }
}

impl fmt::Display for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

/// The key that signs session cookies; kept out of `Debug`.
#[derive(Clone)]
pub struct SessionSecret(Vec<u8>);

impl SessionSecret {
    pub fn new(bytes: Vec<u8>) -> anyhow::Result<Self> {
        if bytes.len() < MIN_SECRET_LEN {
            bail!("must be at least {MIN_SECRET_LEN} bytes long (got {})", bytes.len());
        }
        Ok(Self(bytes))
    }

    /// 32 bytes from the OS's random source.
    pub fn random() -> Self {
        Self(crate::random_bytes::<MIN_SECRET_LEN>().to_vec())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(**redacted**)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_url_builds_the_callback_url() {
        let url = AppUrl::parse("http://localhost:3000").unwrap();
        assert_eq!(url.callback_url(), "http://localhost:3000/auth/callback");
        assert!(!url.is_https());
        let url = AppUrl::parse("https://app.example.com/").unwrap();
        assert_eq!(url.callback_url(), "https://app.example.com/auth/callback");
        assert!(url.is_https());
        assert!(AppUrl::parse("http://127.0.0.1:41234").is_ok());
        assert!(AppUrl::parse("http://[::1]:3000").is_ok());
    }

    #[test]
    fn app_url_rejects_what_the_server_would() {
        for bad in [
            "http://app.example.com",
            "ftp://localhost",
            "https://app.example.com/prefix",
            "https://user:pw@app.example.com",
            "https://app.example.com/?x=1",
            "localhost:3000",
        ] {
            assert!(AppUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_long_enough_and_never_shown() {
        assert!(SessionSecret::new(b"short".to_vec()).is_err());
        let secret = SessionSecret::new(vec![b'k'; 32]).unwrap();
        assert_eq!(format!("{secret:?}"), "SessionSecret(**redacted**)");
        assert_ne!(SessionSecret::random().as_bytes(), SessionSecret::random().as_bytes());
    }
}
