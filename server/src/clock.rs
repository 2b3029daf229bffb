//! Time, injectable so the domain rules can be tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::store::Millis;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        Utc::now().timestamp_millis()
    }
}

/// The real clock plus an offset that tests move forward, so expiry and
/// windows can be tested without sleeping while timers still run in real time.
#[derive(Debug, Default)]
pub struct OffsetClock(AtomicI64);

impl OffsetClock {
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> Millis {
        SystemClock.now_ms() + self.0.load(Ordering::SeqCst)
    }
}

/// UTC timestamp of epoch milliseconds.
pub fn to_datetime(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Calendar month (`YYYY-MM`, UTC) of a time: the monthly quota's bucket.
pub fn month_of(ms: Millis) -> String {
    let t = to_datetime(ms);
    format!("{:04}-{:02}", t.year(), t.month())
}

/// Milliseconds from `ms` to the start of the next UTC month.
pub fn ms_until_next_month(ms: Millis) -> i64 {
    let t = to_datetime(ms);
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map_or(0, |next| next.timestamp_millis() - ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_in_utc() {
        let dec31 = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(month_of(dec31), "2026-12");
        assert_eq!(ms_until_next_month(dec31), 60_000);
        assert_eq!(month_of(dec31 + 60_000), "2027-01");
    }
}
