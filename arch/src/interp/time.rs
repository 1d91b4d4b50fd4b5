//! Guest time: a time-stamp counter that runs at a fixed, advertised frequency in step with
//! host time, shared by all vCPUs of a VM so their TSCs agree.

use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Frequency of the guest TSC (and of the local APIC timer's base clock), in kHz. The guest
/// reads it from CPUID leaves 0x15/0x16, so it never calibrates.
pub const TSC_KHZ: u64 = 1_000_000;

/// The VM's time base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            start: Instant::now(),
        }
    }
}

impl Clock {
    /// TSC ticks since the VM started (before any per-vCPU offset).
    #[inline]
    pub fn ticks(&self) -> u64 {
        let ns = self.start.elapsed().as_nanos() as u64;
        ns.wrapping_mul(TSC_KHZ) / 1_000_000
    }

    /// The host instant at which the TSC reaches `ticks`.
    pub fn instant_at(&self, ticks: u64) -> Instant {
        let ns = ticks.saturating_mul(1_000_000) / TSC_KHZ;
        self.start + std::time::Duration::from_nanos(ns)
    }
}

/// 64 random bits from the host's entropy source (for RDRAND).
pub fn host_random() -> u64 {
    static URANDOM: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let source = URANDOM.get_or_init(|| std::fs::File::open("/dev/urandom").ok().map(Mutex::new));
    let mut buf = [0u8; 8];
    if let Some(file) = source {
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        if f.read_exact(&mut buf).is_ok() {
            return u64::from_le_bytes(buf);
        }
    }
    // No entropy device: hash the time with a per-process random key.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_advances_with_host_time() {
        let c = Clock::default();
        let a = c.ticks();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = c.ticks();
        assert!(b - a >= 5 * TSC_KHZ, "{a} {b}");
        assert!(c.instant_at(b) <= Instant::now());
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(host_random(), host_random());
    }
}
