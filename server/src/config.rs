//! Command line and environment: every subcommand reads the same configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::parse_duration;
use crate::store::{self, DatabaseOptions, Plan};

#[derive(Debug, Parser)]
#[command(
    name = "magicauth-server",
    version,
    about = "MagicAuth reference server: emails single-use magic links and verifies them.",
    long_about = "MagicAuth reference server: emails single-use magic links and verifies them.\n\n\
                  Without a subcommand it runs `serve`. Every option can also be set by its \
                  environment variable; flags win."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASS@HOST:PORT/DB` (`postgresql://` too; the database must exist).
    #[arg(
        long,
        env = "MAGICAUTH_DATABASE_URL",
        default_value = "sqlite://magicauth.db",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Database connections each process keeps open at most.
    #[arg(
        long,
        env = "MAGICAUTH_DATABASE_MAX_CONNECTIONS",
        default_value_t = store::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub database_max_connections: u32,

    /// How long a request waits for a free database connection before it fails
    /// with 500 (and /readyz with 503), e.g. 5s.
    #[arg(
        long,
        env = "MAGICAUTH_DATABASE_ACQUIRE_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration_arg,
        global = true
    )]
    pub database_acquire_timeout: Duration,

    /// Address to bind.
    #[arg(long, env = "MAGICAUTH_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// Public base URL (JWT `iss`, links in emails); default `http://<listen>`.
    #[arg(long, env = "MAGICAUTH_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// SMTP relay: `smtp://user:pass@host:port` (STARTTLS when offered),
    /// `smtps://…` (TLS) or `smtp+plain://host:port` (no TLS). Unset: write `.eml` files.
    #[arg(long, env = "MAGICAUTH_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<SecretArg>,

    /// Without SMTP, each email is written here as an `.eml` file.
    #[arg(long, env = "MAGICAUTH_MAIL_DIR", default_value = "./mail", global = true)]
    pub mail_dir: PathBuf,

    /// Sender of the emails.
    #[arg(
        long,
        env = "MAGICAUTH_MAIL_FROM",
        default_value = "MagicAuth <no-reply@localhost>",
        global = true
    )]
    pub mail_from: String,

    /// Footer text added to emails of free-plan apps.
    #[arg(long, env = "MAGICAUTH_SPONSOR_FOOTER", global = true)]
    pub sponsor_footer: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "MAGICAUTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// How long a claimed email stays reserved for one mail worker: after a
    /// crash, another replica delivers it once this has passed. Undocumented;
    /// tests shorten it.
    #[arg(long, env = "MAGICAUTH_MAIL_LEASE", value_parser = positive_duration_arg, global = true, hide = true)]
    pub mail_lease: Option<Duration>,

    /// Emails a mail worker sends at once, each on its own SMTP connection
    /// (default 4). Undocumented; for relays that limit connections.
    #[arg(long, env = "MAGICAUTH_MAIL_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=64), global = true, hide = true)]
    pub mail_concurrency: Option<u32>,
}

impl Config {
    /// The database URL and pool settings.
    pub fn database(&self) -> DatabaseOptions {
        DatabaseOptions {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_acquire_timeout,
        }
    }

    /// The configured public URL without a trailing slash, or `http://<listen>`.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

/// A setting that may hold a password (the SMTP URL). Kept unparsed here so
/// that clap's "invalid value" errors can never echo it; it is validated when
/// used, with a message that masks the password.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg(**redacted**)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and the mail worker (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage apps.
    #[command(subcommand)]
    Apps(AppsCommand),
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints its id and its app_key (shown only here).
    Create(CreateApp),
    /// List apps.
    List {
        /// One line of JSON (an array of apps).
        #[arg(long)]
        json: bool,
    },
    /// Disable an app: its requests get 403 app_disabled.
    Disable {
        /// App id (`app_…`).
        id: String,
    },
    /// Enable a disabled app.
    Enable {
        /// App id (`app_…`).
        id: String,
    },
    /// Replace the app_key; the old key stops working within a second. Prints the new key.
    RotateKey {
        /// App id (`app_…`).
        id: String,
        /// One line of JSON: {"app_id": …, "app_key": …}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateApp {
    /// Display name, used in email subjects.
    #[arg(long)]
    pub name: String,
    /// Allowed redirect URL (repeatable); the first is the default.
    #[arg(long = "redirect-url", required = true)]
    pub redirect_urls: Vec<String>,
    /// Plan: `free` emails carry the sponsor footer, `custom` never.
    #[arg(long, value_enum, default_value = "free")]
    pub plan: Plan,
    /// Links per rolling minute (default 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: Option<u32>,
    /// Links per calendar month (UTC); unlimited when unset.
    #[arg(long)]
    pub monthly_limit: Option<u32>,
    /// Lifetime of a link, e.g. 90s, 15m, 24h (default 15m; 1s to 30d).
    #[arg(long, value_parser = token_ttl_arg)]
    pub token_ttl: Option<Duration>,
    /// Lifetime of the session JWT (default 24h; 1s to 366d).
    #[arg(long, value_parser = session_ttl_arg)]
    pub session_ttl: Option<Duration>,
    /// One line of JSON: {"app_id": …, "app_key": …}.
    #[arg(long)]
    pub json: bool,
}

/// The longest a link may live: a link in an inbox is a standing way in.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The longest a session JWT may live.
const MAX_SESSION_TTL: Duration = Duration::from_secs(366 * 86_400);

fn token_ttl_arg(s: &str) -> Result<Duration, String> {
    bounded_duration_arg(s, MAX_TOKEN_TTL, "30d")
}

fn session_ttl_arg(s: &str) -> Result<Duration, String> {
    bounded_duration_arg(s, MAX_SESSION_TTL, "366d")
}

/// A duration from 1 s to `max` (so that a lifetime added to a timestamp
/// can never overflow).
fn bounded_duration_arg(s: &str, max: Duration, max_text: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(1) => Err(format!("invalid duration `{s}`: must be at least 1s")),
        d if d > max => Err(format!("invalid duration `{s}`: must be at most {max_text}")),
        d => Ok(d),
    }
}

fn positive_duration_arg(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("invalid duration `{s}`: must be more than 0s")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_after_subcommands() {
        let cli = Cli::try_parse_from([
            "magicauth-server",
            "apps",
            "create",
            "--name",
            "Demo",
            "--redirect-url",
            "https://a.com/cb",
            "--redirect-url",
            "http://localhost:3000/cb",
            "--token-ttl",
            "90s",
            "--database-url",
            "sqlite://x.db",
        ])
        .unwrap();
        assert_eq!(cli.config.database_url, "sqlite://x.db");
        let Some(Command::Apps(AppsCommand::Create(create))) = cli.command else {
            panic!("expected apps create")
        };
        assert_eq!(create.redirect_urls.len(), 2);
        assert_eq!(create.token_ttl, Some(Duration::from_secs(90)));
    }

    #[test]
    fn pool_settings_have_defaults_and_flags() {
        let cli = Cli::try_parse_from(["magicauth-server", "migrate"]).unwrap();
        let db = cli.config.database();
        assert_eq!(db.max_connections, store::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(db.acquire_timeout, store::DEFAULT_ACQUIRE_TIMEOUT);
        let cli = Cli::try_parse_from([
            "magicauth-server",
            "serve",
            "--database-max-connections",
            "32",
            "--database-acquire-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(cli.config.database().max_connections, 32);
        assert_eq!(cli.config.database().acquire_timeout, Duration::from_secs(3));
        assert!(Cli::try_parse_from(["magicauth-server", "--database-max-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["magicauth-server", "--database-acquire-timeout", "0s"]).is_err());
        let cli = Cli::try_parse_from(["magicauth-server", "--mail-lease", "3s"]).unwrap();
        assert_eq!(cli.config.mail_lease, Some(Duration::from_secs(3)));
        let cli = Cli::try_parse_from(["magicauth-server", "--mail-concurrency", "2"]).unwrap();
        assert_eq!(cli.config.mail_concurrency, Some(2));
        assert!(Cli::try_parse_from(["magicauth-server", "--mail-concurrency", "0"]).is_err());
    }

    /// `apps create` with one more flag.
    fn create_with(flag: &str, value: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "magicauth-server",
            "apps",
            "create",
            "--name",
            "x",
            "--redirect-url",
            "https://a.com",
            flag,
            value,
        ])
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(create_with("--token-ttl", "soon").is_err());
    }

    #[test]
    fn lifetimes_are_bounded() {
        for (flag, longest) in [("--token-ttl", "30d"), ("--session-ttl", "366d")] {
            assert!(create_with(flag, "1s").is_ok(), "{flag} 1s");
            assert!(create_with(flag, longest).is_ok(), "{flag} {longest}");
            for bad in ["0s", "200000000000d"] {
                let error = create_with(flag, bad).expect_err(bad).to_string();
                assert!(error.contains(flag), "{flag} {bad}: {error}");
            }
        }
        let error = create_with("--token-ttl", "31d").expect_err("31d").to_string();
        assert!(error.contains("at most 30d"), "{error}");
    }
}
