//! Counts of API requests by kind and outcome, kept by the server and read by the VMM's
//! metrics writer.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Requests seen, by kind (`PUT /drives/{id}`) and by outcome (`ok` for 2xx, else the
/// status code). Safe to share between the server's threads.
#[derive(Debug, Default)]
pub struct ApiCounters {
    counts: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl ApiCounters {
    /// Counts one request of `kind` answered with `status`.
    pub fn count(&self, kind: &str, status: u16) {
        let outcome = if (200..300).contains(&status) {
            "ok".to_string()
        } else {
            status.to_string()
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry(kind.to_string())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    /// Every count so far, as JSON: `{"PUT /drives/{id}": {"ok": 2, "400": 1}, ...}`.
    pub fn snapshot(&self) -> serde_json::Value {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_value(&*counts).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_outcome() {
        let c = ApiCounters::default();
        c.count("GET /", 200);
        c.count("GET /", 204);
        c.count("PUT /vsock", 400);
        assert_eq!(
            c.snapshot(),
            serde_json::json!({"GET /": {"ok": 2}, "PUT /vsock": {"400": 1}})
        );
    }
}
