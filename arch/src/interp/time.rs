//! Guest time: a time-stamp counter that runs at a fixed, advertised frequency in step with
//! host time, shared by all vCPUs of a VM so their TSCs agree.

use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Frequency of the guest TSC (and of the local APIC timer's base clock), in kHz. The guest
/// reads it from CPUID leaves 0x15/0x16, so it never calibrates.
pub const TSC_KHZ: u64 = 1_000_000;

/// TSC ticks in one second.
const TICKS_PER_SEC: u64 = TSC_KHZ * 1000;

/// The VM's time base. Guest time counts correctly for as long as a 64-bit TSC can (about
/// 584 years at 1 GHz): no intermediate product overflows before the counter itself wraps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The host instant at which guest time read `uptime_at_start`.
    start: Instant,
    /// Guest uptime at `start` (zero for a new VM).
    uptime_at_start: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::with_uptime(Duration::ZERO)
    }
}

impl Clock {
    /// A clock that reads as if the VM had already been up for `uptime`.
    pub fn with_uptime(uptime: Duration) -> Self {
        Clock {
            start: Instant::now(),
            uptime_at_start: uptime,
        }
    }

    /// Guest time since the VM started: what a clock made by [`Clock::with_uptime`] with
    /// this value continues from.
    pub fn uptime(&self) -> Duration {
        self.uptime_at_start + self.start.elapsed()
    }

    /// TSC ticks since the VM started (before any per-vCPU offset).
    #[inline]
    pub fn ticks(&self) -> u64 {
        let uptime = self.uptime_at_start + self.start.elapsed();
        // Whole seconds and the nanoseconds within one are scaled apart.
        uptime
            .as_secs()
            .wrapping_mul(TICKS_PER_SEC)
            .wrapping_add(u64::from(uptime.subsec_nanos()) * TSC_KHZ / 1_000_000)
    }

    /// The host instant at which the TSC reaches `ticks`, rounded up so that a timer armed
    /// for it never fires early; None if the host clock cannot represent that instant.
    pub fn instant_at(&self, ticks: u64) -> Option<Instant> {
        let nanos = (ticks % TICKS_PER_SEC * 1_000_000).div_ceil(TSC_KHZ);
        let uptime = Duration::from_secs(ticks / TICKS_PER_SEC) + Duration::from_nanos(nanos);
        match uptime.checked_sub(self.uptime_at_start) {
            Some(after_start) => self.start.checked_add(after_start),
            None => Some(self.start),
        }
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

    /// Uptimes at which a 64-bit nanosecond product used to overflow (about 5.1 hours), and
    /// a century.
    const LONG_UPTIMES: [Duration; 3] = [
        Duration::from_secs(5 * 3600),
        Duration::from_secs(6 * 3600),
        Duration::from_secs(100 * 365 * 24 * 3600),
    ];

    #[test]
    fn tsc_advances_with_host_time() {
        let c = Clock::default();
        let a = c.ticks();
        std::thread::sleep(Duration::from_millis(5));
        let b = c.ticks();
        assert!(b - a >= 5 * TSC_KHZ, "{a} {b}");
        assert!(c.instant_at(b).unwrap() <= Instant::now());
    }

    #[test]
    fn tsc_is_right_and_monotonic_after_a_century_of_uptime() {
        for uptime in LONG_UPTIMES {
            let c = Clock::with_uptime(uptime);
            let expected = uptime.as_nanos() * u128::from(TSC_KHZ) / 1_000_000;
            let a = c.ticks();
            assert!(u128::from(a) >= expected, "{uptime:?}: {a} < {expected}");
            assert!(u128::from(a) < expected + 1_000_000_000, "{uptime:?}: {a}");
            std::thread::sleep(Duration::from_millis(2));
            let b = c.ticks();
            assert!(b > a && b - a >= 2 * TSC_KHZ, "{uptime:?}: {a} then {b}");
        }
    }

    #[test]
    fn deadlines_map_to_host_instants_after_a_century_of_uptime() {
        for uptime in LONG_UPTIMES {
            let c = Clock::with_uptime(uptime);
            let now = Instant::now();
            let soon = c.ticks() + 10 * TSC_KHZ;
            let at = c.instant_at(soon).unwrap();
            let wait = at.duration_since(now);
            assert!(
                wait > Duration::from_millis(9) && wait < Duration::from_millis(11),
                "{uptime:?}: {wait:?}"
            );
            assert!(c.instant_at(c.ticks() - TSC_KHZ).unwrap() <= Instant::now());
        }
        // The farthest deadline a guest can program is a plain answer, not a panic.
        let _ = Clock::default().instant_at(u64::MAX);
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(host_random(), host_random());
    }
}
