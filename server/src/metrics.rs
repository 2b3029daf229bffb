//! Prometheus metrics, kept in process and rendered in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one server process. Gauges that describe shared state (the
/// outbox depth) are read from the database when scraped.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    verifications: Mutex<BTreeMap<&'static str, u64>>,
    links_sent: AtomicU64,
    mail_attempts: AtomicU64,
    mail_failures: AtomicU64,
    mail_delivered: AtomicU64,
    mail_given_up: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route.to_owned(), status)).or_default() += 1;
    }

    pub fn record_verification(&self, outcome: &'static str) {
        let mut map = self.verifications.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(outcome).or_default() += 1;
    }

    pub fn link_sent(&self) {
        self.links_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mail_attempt(&self) {
        self.mail_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mail_failure(&self) {
        self.mail_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mail_delivered(&self) {
        self.mail_delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mail_given_up(&self) {
        self.mail_given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric; `outbox_depth` is `None` when the database could not be read.
    pub fn render(&self, outbox_depth: Option<i64>) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let _ = writeln!(
            out,
            "# HELP magicauth_http_requests_total HTTP requests by route and status.\n# TYPE magicauth_http_requests_total counter"
        );
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "magicauth_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP magicauth_verifications_total Token verifications by outcome.\n# TYPE magicauth_verifications_total counter"
        );
        for (outcome, n) in self.verifications.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "magicauth_verifications_total{{outcome=\"{outcome}\"}} {n}");
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "magicauth_links_sent_total",
            "Magic links created and queued for delivery.",
            load(&self.links_sent),
        );
        counter(
            &mut out,
            "magicauth_mail_attempts_total",
            "Email delivery attempts.",
            load(&self.mail_attempts),
        );
        counter(
            &mut out,
            "magicauth_mail_failures_total",
            "Failed email delivery attempts.",
            load(&self.mail_failures),
        );
        counter(
            &mut out,
            "magicauth_mail_delivered_total",
            "Emails delivered.",
            load(&self.mail_delivered),
        );
        counter(
            &mut out,
            "magicauth_mail_given_up_total",
            "Emails given up after permanent failure or 24 h of retries.",
            load(&self.mail_given_up),
        );
        if let Some(depth) = outbox_depth {
            let _ = writeln!(
                out,
                "# HELP magicauth_outbox_depth Emails waiting for delivery.\n# TYPE magicauth_outbox_depth gauge\nmagicauth_outbox_depth {depth}"
            );
        }
        out
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record_request("/api/send-link", 200);
        m.record_request("/api/send-link", 200);
        m.record_verification("success");
        m.link_sent();
        let text = m.render(Some(3));
        assert!(text.contains("magicauth_http_requests_total{route=\"/api/send-link\",status=\"200\"} 2"));
        assert!(text.contains("magicauth_verifications_total{outcome=\"success\"} 1"));
        assert!(text.contains("magicauth_links_sent_total 1"));
        assert!(text.contains("magicauth_outbox_depth 3"));
        assert!(!m.render(None).contains("magicauth_outbox_depth"));
    }
}
