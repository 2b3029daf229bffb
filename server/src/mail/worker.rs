//! The outbox worker: claims due emails with a lease, delivers them, and
//! reschedules failures with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::transport::{DeliveryError, MailTransport};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{DynStore, OutboxMail};

/// How long a stopping worker keeps sending what is due.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// When to retry and when to give up.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Duration,
    /// How long a claimed email stays reserved for one worker.
    pub lease: Duration,
    /// How often to look for due emails when not woken up.
    pub poll_interval: Duration,
    pub batch: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            batch: 8,
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after `attempts` failed ones: doubling from
    /// `first_delay`, capped, with jitter so a recovering relay isn't hit by every
    /// queued message at the same instant.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let base = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max_delay);
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        // Between 75% and 100% of the base delay.
        base.mul_f64(0.75 + f64::from(byte[0]) / 1020.0)
    }
}

pub struct OutboxWorker {
    pub store: DynStore,
    pub transport: Arc<MailTransport>,
    pub from: Mailbox,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    pub clock: Arc<dyn Clock>,
    pub policy: RetryPolicy,
}

impl OutboxWorker {
    /// Runs until `shutdown` is cancelled, finishing the delivery in progress.
    /// Runs until `shutdown` is cancelled, finishing the delivery in progress.
    /// Then, for at most [`DRAIN_TIME`], it sends what is due, so mail
    /// accepted just before a graceful shutdown goes out at once: cancel
    /// `shutdown` after the HTTP server has drained its requests.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(transport = ?self.transport, "outbox worker started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let claimed = self.deliver_due(&shutdown, None).await;
            if claimed == self.policy.batch as usize {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.policy.poll_interval) => {}
            }
        }
        // Failed deliveries are rescheduled, not due: the drain ends when nothing is.
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        let running = CancellationToken::new();
        while tokio::time::Instant::now() < deadline && self.deliver_due(&running, Some(deadline)).await > 0 {}
        tracing::info!("outbox worker stopped");
    }

    /// Claims a batch of due emails and delivers them; returns how many were claimed.
    async fn deliver_due(&self, shutdown: &CancellationToken, deadline: Option<tokio::time::Instant>) -> usize {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.policy.lease.as_millis()).unwrap_or(i64::MAX / 4);
        let lease_until = now + lease_ms;
        let batch = match self.store.claim_outbox(now, lease_until, self.policy.batch).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not read the outbox");
                Vec::new()
            }
        };
        let claimed = batch.len();
        let mut pending = batch.into_iter();
        for mail in pending.by_ref() {
            self.deliver(mail).await;
            // Once half the lease is spent, hand back the rest of the batch
            // instead of starting deliveries that could outlast the lease
            // and overlap another replica's claim of the same rows.
            let past_deadline = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if shutdown.is_cancelled() || past_deadline || self.clock.now_ms() >= now + lease_ms / 2 {
                break;
            }
        }
        // Hand back what this worker claimed but will not send, so it goes out
        // at once (here, on another replica or after a restart) instead of
        // waiting for the lease to lapse.
        for mail in pending {
            if let Err(error) = self.store.outbox_release(mail.id, mail.lease_until).await {
                tracing::warn!(%error, id = mail.id, "could not release an outbox row");
            }
        }
        claimed
    }

    async fn deliver(&self, mail: OutboxMail) {
        self.metrics.mail_attempt();
        let result = match self.build_message(&mail) {
            Ok(message) => {
                self.transport
                    .deliver(&message, &format!("{}-{}", mail.created_at, mail.id))
                    .await
            }
            Err(error) => Err(error),
        };
        let now = self.clock.now_ms();
        let outcome = match result {
            Ok(()) => {
                self.metrics.mail_delivered();
                tracing::info!(id = mail.id, attempts = mail.attempts, "email delivered");
                self.store.outbox_sent(mail.id, now).await.map(|()| true)
            }
            Err(error) => {
                self.metrics.mail_failure();
                let age = Duration::from_millis(u64::try_from(now - mail.created_at).unwrap_or(0));
                if error.permanent || age >= self.policy.give_up_after {
                    self.metrics.mail_given_up();
                    tracing::error!(id = mail.id, attempts = mail.attempts, error = %error.message, "email given up");
                    self.store
                        .outbox_given_up(mail.id, mail.lease_until, now, &error.message)
                        .await
                } else {
                    let delay = self.policy.backoff(mail.attempts);
                    tracing::warn!(
                        id = mail.id,
                        attempts = mail.attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %error.message,
                        "email delivery failed; will retry"
                    );
                    let next = now + i64::try_from(delay.as_millis()).unwrap_or(60_000);
                    self.store
                        .outbox_retry(mail.id, mail.lease_until, next, &error.message)
                        .await
                }
            }
        };
        match outcome {
            Ok(true) => {}
            // The attempt outlasted the lease and another worker has the row now.
            Ok(false) => tracing::warn!(id = mail.id, "lease lost during the attempt; the new holder retries"),
            // The lease runs out and the row is tried again: at worst a duplicate,
            // never a lost email.
            Err(error) => tracing::error!(%error, id = mail.id, "could not record the delivery outcome"),
        }
    }

    fn build_message(&self, mail: &OutboxMail) -> Result<Message, DeliveryError> {
        let permanent = |message: String| DeliveryError {
            permanent: true,
            message,
        };
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| permanent(format!("invalid recipient: {e}")))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                mail.text_body.clone(),
                mail.html_body.clone(),
            ))
            .map_err(|e| permanent(format!("could not build the message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        let b1 = p.backoff(1);
        assert!(
            b1 >= Duration::from_millis(750) && b1 <= Duration::from_secs(1),
            "{b1:?}"
        );
        let b3 = p.backoff(3);
        assert!(b3 >= Duration::from_secs(3) && b3 <= Duration::from_secs(4), "{b3:?}");
        for attempts in [7, 20, 1000] {
            let b = p.backoff(attempts);
            assert!(b >= Duration::from_secs(45) && b <= Duration::from_secs(60), "{b:?}");
        }
    }
}
