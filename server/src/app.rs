//! Wiring: the store, the signer, the mail worker and the HTTP server, built
//! from the configuration and run until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthService, AuthSettings};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{AppState, router};
use crate::mail::{MailTransport, OutboxWorker, RetryPolicy, SmtpUrl};
use crate::metrics::Metrics;
use crate::session::SessionSigner;
use crate::store::{self, DatabaseOptions, DynStore, Retention};

/// Knobs that tests turn; production uses the defaults.
#[derive(Clone)]
pub struct BuildOptions {
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            retry: RetryPolicy::default(),
        }
    }
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: OutboxWorker,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with(config, BuildOptions::default()).await
    }

    pub async fn build_with(config: &Config, options: BuildOptions) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .mail_from
            .parse()
            .with_context(|| format!("MAGICAUTH_MAIL_FROM is not a valid sender: {:?}", config.mail_from))?;
        let transport = match &config.smtp_url {
            Some(raw) => {
                let url: SmtpUrl = raw.0.parse().map_err(|e| anyhow::anyhow!("MAGICAUTH_SMTP_URL: {e}"))?;
                MailTransport::smtp(url).map_err(anyhow::Error::msg)?
            }
            None => MailTransport::Directory(config.mail_dir.clone()),
        };
        let store = open_store(&config.database()).await?;
        let signer = SessionSigner::load_or_create(store.as_ref(), options.clock.now_ms())
            .await
            .context("could not load the signing key")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        let bound = listener.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(Notify::new());
        let auth = Arc::new(AuthService {
            store: store.clone(),
            clock: options.clock.clone(),
            signer: Arc::new(signer),
            metrics: metrics.clone(),
            mail_wake: wake.clone(),
            settings: AuthSettings {
                issuer: config.public_url(bound),
                sponsor_footer: config.sponsor_footer.clone(),
                message_id_domain: from.email.domain().to_owned(),
            },
        });
        let worker = OutboxWorker {
            store: store.clone(),
            transport: Arc::new(transport),
            from,
            metrics: metrics.clone(),
            wake,
            clock: options.clock.clone(),
            policy: RetryPolicy {
                lease: config.mail_lease.unwrap_or(options.retry.lease),
                concurrency: config.mail_concurrency.unwrap_or(options.retry.concurrency),
                ..options.retry
            },
        };
        Ok(Self {
            listener,
            state: AppState { auth, store, metrics },
            worker,
            shutdown: CancellationToken::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Cancel it to shut down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled, then stops accepting,
    /// drains the requests in flight and lets the worker finish its delivery.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            worker,
            shutdown,
        } = self;
        tracing::info!(address = %listener.local_addr()?, backend = state.store.backend(), "listening");
        // The worker stops after the HTTP server has drained, so it can still
        // send the mail of the last requests.
        let worker_stop = CancellationToken::new();
        let worker = tokio::spawn(worker.run(worker_stop.clone()));
        let housekeeping = spawn_housekeeping(state.store.clone(), state.auth.clock.clone(), shutdown.clone());
        let app = router(state);
        let stop = shutdown.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        shutdown.cancel();
        worker_stop.cancel();
        let _ = worker.await;
        let _ = housekeeping.await;
        tracing::info!("stopped");
        served.context("server error")
    }
}

/// Opens the database and applies pending migrations.
pub async fn open_store(database: &DatabaseOptions) -> anyhow::Result<DynStore> {
    let store = store::connect(database)
        .await
        .with_context(|| format!("could not open the database {}", store::redact_url(&database.url)))?;
    store.migrate().await.context("could not apply migrations")?;
    Ok(store)
}

/// Deletes expired rate-limit hits, idempotency records, old links and
/// delivered outbox rows once a minute.
fn spawn_housekeeping(store: DynStore, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let retention = Retention {
                now: clock.now_ms(),
                rate_hits_ms: 16 * 60 * 1000,
                idempotency_ms: 24 * 3600 * 1000,
                links_after_expiry_ms: 7 * 24 * 3600 * 1000,
                outbox_done_ms: 7 * 24 * 3600 * 1000,
            };
            if let Err(error) = store.purge(&retention).await {
                tracing::warn!(%error, "housekeeping failed");
            }
        }
    })
}
