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

/// Crockford's base32 alphabet, in ASCII order: text order is number order.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new `Idempotency-Key`: a ULID, the milliseconds since the Unix epoch
/// and 80 random bits from the OS. Keys made later sort later, so a server's
/// index of keys grows at its end, on the pages it wrote last, instead of on
/// a random page per request; the random bits keep the keys of one
/// millisecond apart.
pub(crate) fn request_key() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut random = [0u8; 10];
    // Without OS randomness the key is still unique per call thanks to the
    // clock's nanoseconds.
    if getrandom::fill(&mut random).is_err() {
        random.copy_from_slice(&since_epoch.as_nanos().to_be_bytes()[6..]);
    }
    ulid(since_epoch.as_millis(), random)
}

/// The ULID of a time (its low 48 bits) and 80 random bits: 26 characters of
/// Crockford's base32, the first of which carries 3 bits.
fn ulid(millis: u128, random: [u8; 10]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[10..]);
    bytes[6..].copy_from_slice(&random);
    let bits = u128::from_be_bytes(bytes);
    (0..26)
        .map(|i| char::from(CROCKFORD[((bits >> (125 - 5 * i)) & 31) as usize]))
        .collect()
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

    #[test]
    fn request_keys_are_ulids() {
        // The ULID specification's example time.
        assert!(ulid(1_469_918_176_385, [0; 10]).starts_with("01ARYZ6S41"));
        assert_eq!(ulid(0, [0; 10]), "00000000000000000000000000");
        assert_eq!(ulid(u128::MAX, [0xff; 10]), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(ulid(0, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), "00000000000000000000000001");
    }

    #[test]
    fn a_later_key_sorts_later_and_keys_of_one_millisecond_differ() {
        assert!(ulid(1_000, [0xff; 10]) < ulid(1_001, [0; 10]));
        assert!(ulid(1_000, [1; 10]) < ulid(1_000, [2; 10]));
        let keys: std::collections::HashSet<String> = (0..1000).map(|_| request_key()).collect();
        assert_eq!(keys.len(), 1000);
        for key in &keys {
            assert_eq!(key.len(), 26);
            assert!(key.bytes().all(|b| CROCKFORD.contains(&b)), "{key}");
        }
    }
}
