//! The outbox worker: claims due emails with a lease, delivers them, and
//! reschedules failures with exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::transport::{DeliveryError, MailTransport};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{DynStore, Millis, OutboxMail};

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
    /// Deliveries in flight at once, each on its own SMTP connection. Emails
    /// are claimed only into free slots, so none waits under a lease. Their
    /// last steps take turns (see `InFlight::hand_off`), so a few suffice.
    pub concurrency: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            concurrency: 4,
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

    /// How long one delivery attempt may take: it ends within half the
    /// lease, so its outcome is recorded while this worker still holds it.
    pub fn attempt_timeout(&self) -> Duration {
        (self.lease / 2).min(MAX_ATTEMPT_TIME)
    }
}

/// Upper bound of one delivery attempt (connecting included).
const MAX_ATTEMPT_TIME: Duration = Duration::from_secs(30);

/// What a worker's deliveries in flight share.
#[derive(Default)]
struct InFlight {
    /// The emails being delivered and the lease each is held under. When the
    /// clock jumps past a lease, the worker's own next claim can return an
    /// email it is still sending: that email is not sent a second time, the
    /// worker just holds it under the newer lease (the one that counts when
    /// the outcome is recorded).
    leases: Mutex<HashMap<i64, Millis>>,
    /// Deliveries run side by side up to their irrevocable step (for SMTP,
    /// `DATA`); from there until the outcome is recorded, one at a time. So,
    /// as with one delivery at a time, a worker that dies leaves at most one
    /// email that may have gone out without being recorded, and that another
    /// replica would send again.
    hand_off: tokio::sync::Mutex<()>,
}

impl InFlight {
    /// Notes a claimed email; false when it was already being delivered here.
    fn hold(&self, id: i64, lease_until: Millis) -> bool {
        let mut held = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id, lease_until).is_none()
    }

    fn lease(&self, id: i64) -> Option<Millis> {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    fn forget(&self, id: i64) {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }
}

/// Forgets a held email when its delivery ends, however it ends, so that a
/// later claim of it is not mistaken for a renewal.
struct Holding<'a> {
    in_flight: &'a InFlight,
    id: i64,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.in_flight.forget(self.id);
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
    /// Runs until `shutdown` is cancelled, then, for at most [`DRAIN_TIME`],
    /// keeps sending what is due, so mail accepted just before a graceful
    /// shutdown goes out at once: cancel `shutdown` after the HTTP server has
    /// drained its requests. Deliveries in progress are always finished.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(transport = ?self.transport, concurrency = self.policy.concurrency, "outbox worker started");
        let worker = Arc::new(self);
        let slots = worker.policy.concurrency.max(1) as usize;
        let poll = worker.policy.poll_interval;
        let mut in_flight = JoinSet::new();
        let shared = Arc::new(InFlight::default());
        // Whether due emails may be waiting: false once a claim comes back
        // short, until a wake-up or the next poll.
        let mut look = true;
        let mut next_poll = Instant::now() + poll;
        let mut drain_until = None;
        loop {
            if drain_until.is_none() && shutdown.is_cancelled() {
                drain_until = Some(Instant::now() + DRAIN_TIME);
                look = true;
            }
            let drain_over = drain_until.is_some_and(|d| Instant::now() >= d);
            let free = slots.saturating_sub(in_flight.len());
            // Top up once half the slots are free: fewer, larger claims.
            if look && !drain_over && (in_flight.is_empty() || free * 2 >= slots) {
                let claimed = worker.claim(free).await;
                look = claimed.len() >= free;
                next_poll = Instant::now() + poll;
                // A claim may return more rows than asked for: those are
                // handed back rather than kept waiting under a lease.
                let mut surplus = Vec::new();
                for mail in claimed {
                    if !shared.hold(mail.id, mail.lease_until) {
                        continue;
                    }
                    if in_flight.len() < slots {
                        let (worker, shared) = (Arc::clone(&worker), Arc::clone(&shared));
                        in_flight.spawn(async move { worker.deliver(mail, &shared).await });
                    } else {
                        shared.forget(mail.id);
                        surplus.push(mail);
                    }
                }
                worker.release(surplus).await;
            }
            if in_flight.is_empty() {
                // Failed deliveries are rescheduled, not due: the drain ends
                // when nothing is (or at its deadline).
                if drain_until.is_some() && (!look || drain_over) {
                    break;
                }
                worker.transport.close_stale().await;
            }
            tokio::select! {
                Some(done) = in_flight.join_next() => {
                    if let Err(error) = done {
                        // Its lease runs out and the email is tried again.
                        tracing::error!(%error, "an email delivery task failed");
                    }
                }
                _ = worker.wake.notified(), if drain_until.is_none() => look = true,
                _ = tokio::time::sleep_until(next_poll) => {
                    look = true;
                    next_poll = Instant::now() + poll;
                }
                _ = shutdown.cancelled(), if drain_until.is_none() => {}
            }
        }
        worker.transport.close_all().await;
        tracing::info!("outbox worker stopped");
    }

    /// Hands back claimed emails that will not be attempted, so that any
    /// worker can take them at once instead of waiting for the lease to lapse.
    async fn release(&self, mails: Vec<OutboxMail>) {
        for mail in mails {
            if let Err(error) = self.store.outbox_release(mail.id, mail.lease_until).await {
                tracing::warn!(%error, id = mail.id, "could not release an outbox row");
            }
        }
    }

    /// Leases up to `limit` due emails.
    async fn claim(&self, limit: usize) -> Vec<OutboxMail> {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.policy.lease.as_millis()).unwrap_or(i64::MAX / 4);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        match self.store.claim_outbox(now, now + lease_ms, limit).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not read the outbox");
                Vec::new()
            }
        }
    }

    async fn deliver(&self, mail: OutboxMail, in_flight: &InFlight) {
        let _holding = Holding { in_flight, id: mail.id };
        self.metrics.mail_attempt();
        // Held, once taken, until the outcome is recorded.
        let mut turn = None;
        let result = self.attempt(&mail, &in_flight.hand_off, &mut turn).await;
        let now = self.clock.now_ms();
        let lease_until = in_flight.lease(mail.id).unwrap_or(mail.lease_until);
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
                        .outbox_given_up(mail.id, lease_until, now, &error.message)
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
                        .outbox_retry(mail.id, lease_until, next, &error.message)
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
        drop(turn);
    }

    /// One delivery attempt, ended within [`RetryPolicy::attempt_timeout`].
    /// Before an irrevocable step it takes the hand-off turn into `turn`.
    async fn attempt<'h>(
        &self,
        mail: &OutboxMail,
        hand_off: &'h tokio::sync::Mutex<()>,
        turn: &mut Option<tokio::sync::MutexGuard<'h, ()>>,
    ) -> Result<(), DeliveryError> {
        let limit = self.policy.attempt_timeout();
        let deadline = Instant::now() + limit;
        // It may still arrive: at worst a duplicate, never a lost email.
        let timed_out = |_| DeliveryError {
            permanent: false,
            message: format!("no answer within {} ms", limit.as_millis()),
        };
        let message = self.build_message(mail)?;
        let file_stem = format!("{}-{}", mail.created_at, mail.id);
        let prepare = self.transport.prepare(&message, &file_stem);
        let ready = timeout_at(deadline, prepare).await.map_err(timed_out)??;
        if ready.is_irrevocable() {
            *turn = Some(timeout_at(deadline, hand_off.lock()).await.map_err(timed_out)?);
        }
        timeout_at(deadline, ready.complete()).await.map_err(timed_out)?
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
