//! Which failures are retried, and how long to wait before the next attempt.

use std::time::Duration;

use crate::Error;

/// Retry rules (SDK.md): connection errors and timeouts, `429` (honouring
/// `Retry-After` up to a cap) and `500/502/503/504`, with exponential
/// backoff and full jitter. Every attempt of one call carries the same
/// `Idempotency-Key`, so a retry never sends twice or burns a token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retrying after `error` on attempt `attempt`
    /// (0-based), or `None` when the error is final.
    pub fn delay(&self, error: &Error, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_retries {
            return None;
        }
        match error {
            Error::Connection { .. } | Error::Timeout { .. } => Some(self.backoff(attempt)),
            Error::Server(detail) if matches!(detail.status, Some(500 | 502 | 503 | 504)) => {
                Some(self.backoff(attempt))
            }
            // A used-up monthly quota does not come back within a retry.
            Error::RateLimited { detail, .. } if detail.code == "quota_exceeded" => None,
            Error::RateLimited { retry_after, .. } => match retry_after {
                Some(wait) if *wait > self.max_retry_after => None,
                Some(wait) => Some(*wait),
                None => Some(self.backoff(attempt)),
            },
            _ => None,
        }
    }

    /// Full jitter: uniform in `[0, min(max_delay, base_delay * 2^attempt)]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.max_delay);
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorDetail;

    fn server(status: u16) -> Error {
        Error::Server(ErrorDetail::new("server_error", "x", Some(status)))
    }

    #[test]
    fn retries_what_sdk_md_lists_and_nothing_else() {
        let p = RetryPolicy::default();
        for status in [500, 502, 503, 504] {
            assert!(p.delay(&server(status), 0).is_some(), "{status}");
        }
        assert!(p.delay(&server(501), 0).is_none());
        let conn = Error::Connection {
            detail: ErrorDetail::new("connection", "x", None),
            source: None,
        };
        assert!(p.delay(&conn, 1).is_some());
        assert!(p.delay(&conn, 2).is_none(), "gives up after max_retries");
        for code in [
            "invalid_token",
            "token_used",
            "invalid_app_key",
            "app_disabled",
            "invalid_request",
        ] {
            assert!(
                p.delay(&Error::from_api(code, "x".into(), 400, None), 0).is_none(),
                "{code}"
            );
        }
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        let p = RetryPolicy::default();
        let limited = |secs| Error::from_api("rate_limited", "x".into(), 429, Some(Duration::from_secs(secs)));
        assert_eq!(p.delay(&limited(3), 0), Some(Duration::from_secs(3)));
        assert_eq!(p.delay(&limited(30), 0), Some(Duration::from_secs(30)));
        assert_eq!(p.delay(&limited(31), 0), None);
        let quota = Error::from_api("quota_exceeded", "x".into(), 429, Some(Duration::from_secs(1)));
        assert_eq!(p.delay(&quota, 0), None);
    }

    #[test]
    fn backoff_grows_with_full_jitter() {
        let p = RetryPolicy::default();
        for attempt in 0..6 {
            let ceiling = Duration::from_millis(250 * (1 << attempt)).min(Duration::from_secs(8));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= ceiling);
            }
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 1, "jittered");
    }
}
