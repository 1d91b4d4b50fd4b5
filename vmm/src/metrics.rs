//! The VMM's metrics: counters of vCPU exits by kind, API requests by kind and outcome,
//! each virtio device's counters and errors, written as one JSON line to a file or named
//! pipe every minute, on `FlushMetrics` and when the VMM exits. Counts are totals since the
//! VMM started.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::counters::ApiCounters;
use devices::virtio::Counters;
use serde_json::{json, Value};

/// How often metrics are written on their own.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(60);

/// vCPU exits by kind, over all vCPUs.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port reads.
    pub io_in: AtomicU64,
    /// Port writes.
    pub io_out: AtomicU64,
    /// MMIO reads.
    pub mmio_read: AtomicU64,
    /// MMIO writes.
    pub mmio_write: AtomicU64,
    /// Returns with nothing to serve (kicks, halts, time slices).
    pub interrupted: AtomicU64,
    /// Power-off or reset requests through the hypervisor.
    pub guest: AtomicU64,
    /// Faults that stopped the VM.
    pub fault: AtomicU64,
}

/// The process's vCPU exit counters.
pub static EXITS: ExitCounters = ExitCounters {
    io_in: AtomicU64::new(0),
    io_out: AtomicU64::new(0),
    mmio_read: AtomicU64::new(0),
    mmio_write: AtomicU64::new(0),
    interrupted: AtomicU64::new(0),
    guest: AtomicU64::new(0),
    fault: AtomicU64::new(0),
};

/// Counts one exit.
pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where metrics go and what they are made of.
pub struct Metrics {
    sink: Option<File>,
    api: Arc<ApiCounters>,
    devices: Vec<(String, Arc<Counters>)>,
    write_errors: u64,
    next_flush: Instant,
}

impl Metrics {
    /// Metrics with no sink yet, counting API requests in `api`.
    pub fn new(api: Arc<ApiCounters>) -> Self {
        Metrics {
            sink: None,
            api,
            devices: Vec::new(),
            write_errors: 0,
            next_flush: Instant::now() + FLUSH_PERIOD,
        }
    }

    /// Whether a sink is set.
    pub fn has_sink(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes metrics to `path` from now on: a file (appended to) or a named pipe (opened
    /// without waiting for a reader; lines a full pipe cannot take are counted as errors).
    pub fn set_sink(&mut self, path: &Path) -> Result<(), String> {
        let file = open_sink(path).map_err(|e| format!("metrics_path {}: {e}", path.display()))?;
        self.sink = Some(file);
        self.next_flush = Instant::now() + FLUSH_PERIOD;
        Ok(())
    }

    /// Reports the counters of the VM's devices, by name.
    pub fn set_devices(&mut self, devices: Vec<(String, Arc<Counters>)>) {
        self.devices = devices;
    }

    /// How long until the next periodic flush.
    pub fn until_flush(&self) -> Duration {
        self.next_flush.saturating_duration_since(Instant::now())
    }

    /// Writes a line if the period has passed.
    pub fn flush_if_due(&mut self) {
        if self.sink.is_some() && Instant::now() >= self.next_flush {
            // A failed write is counted in the next line.
            let _ = self.flush();
        }
    }

    /// Writes one line now (if there is a sink). The error names the sink's failure.
    pub fn flush(&mut self) -> Result<(), String> {
        self.next_flush = Instant::now() + FLUSH_PERIOD;
        let line = self.line();
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let mut text = line.to_string();
        text.push('\n');
        sink.write_all(text.as_bytes()).map_err(|e| {
            self.write_errors += 1;
            format!("writing metrics: {e}")
        })
    }

    fn line(&self) -> Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let e = &EXITS;
        let mut devices = serde_json::Map::new();
        let mut device_errors = 0;
        for (name, c) in &self.devices {
            device_errors += load(&c.errors);
            devices.insert(
                name.clone(),
                json!({
                    "bytes_to_guest": load(&c.bytes_to_guest),
                    "bytes_from_guest": load(&c.bytes_from_guest),
                    "ops_to_guest": load(&c.ops_to_guest),
                    "ops_from_guest": load(&c.ops_from_guest),
                    "notifications": load(&c.notifications),
                    "errors": load(&c.errors),
                    "throttled": load(&c.throttled),
                    "connections": load(&c.connections),
                }),
            );
        }
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        json!({
            "utc_timestamp_ms": timestamp_ms,
            "api_requests": self.api.snapshot(),
            "vcpu_exits": {
                "io_in": load(&e.io_in),
                "io_out": load(&e.io_out),
                "mmio_read": load(&e.mmio_read),
                "mmio_write": load(&e.mmio_write),
                "interrupted": load(&e.interrupted),
                "guest": load(&e.guest),
                "fault": load(&e.fault),
            },
            "devices": devices,
            "errors": {
                "vcpu_faults": load(&e.fault),
                "devices": device_errors,
                "metrics_writes": self.write_errors,
            },
        })
    }
}

/// Opens a log or metrics destination: appended to if a file, and, if a named pipe, opened
/// without blocking for a reader.
pub fn open_sink(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_requests_exits_and_devices() {
        let dir = std::env::temp_dir().join(format!("ember-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        let api = Arc::new(ApiCounters::default());
        api.count("GET /", 200);
        let mut m = Metrics::new(api);
        m.flush().unwrap();
        assert!(!path.exists(), "no sink, no file");
        m.set_sink(&path).unwrap();
        let disk = Arc::new(Counters::default());
        Counters::add(&disk.ops_to_guest, 3);
        m.set_devices(vec![("block-root".into(), disk)]);
        count(&EXITS.io_out);
        m.flush().unwrap();
        m.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["api_requests"]["GET /"]["ok"], 1);
        assert_eq!(lines[1]["devices"]["block-root"]["ops_to_guest"], 3);
        assert!(lines[1]["vcpu_exits"]["io_out"].as_u64().unwrap() >= 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_is_due_once_a_period_has_passed() {
        let dir = std::env::temp_dir().join(format!("ember-metrics-due-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        let mut m = Metrics::new(Arc::default());
        m.set_sink(&path).unwrap();
        assert!(m.until_flush() > FLUSH_PERIOD - Duration::from_secs(1));
        m.flush_if_due();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "not yet due");
        m.next_flush = Instant::now();
        m.flush_if_due();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert!(
            m.until_flush() > FLUSH_PERIOD - Duration::from_secs(1),
            "the next period"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
