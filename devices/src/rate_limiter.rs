//! Firecracker's rate limiter: two token buckets, one for bytes and one for operations, each
//! refilling continuously to its size over its refill time, with an optional one-time burst.
//! An operation that finds a bucket short is refused and a timer is armed for when the bucket
//! will have refilled enough; the device watches the timer on its event loop and tries again.
//! An operation larger than a whole bucket waits for a full bucket and then leaves the bucket
//! in debt, so the average rate holds for any request size.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// One bucket as configured: `size` tokens refilled over `refill_time`, plus a one-time
/// burst of `one_time_burst` tokens spent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketConfig {
    /// Tokens (bytes or operations) a full bucket holds.
    pub size: u64,
    /// Extra tokens available once, before the bucket's own.
    pub one_time_burst: u64,
    /// Time to refill an empty bucket, in milliseconds.
    pub refill_time_ms: u64,
}

/// A token bucket. Tokens may go negative (debt) after an operation larger than the bucket.
#[derive(Debug)]
struct Bucket {
    config: BucketConfig,
    tokens: i128,
    burst: u64,
    last_refill: Instant,
}

impl Bucket {
    fn new(config: BucketConfig, now: Instant) -> Self {
        Bucket {
            config,
            tokens: i128::from(config.size),
            burst: config.one_time_burst,
            last_refill: now,
        }
    }

    /// Adds the tokens earned since the last refill, up to the bucket size.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        let period = u128::from(self.config.refill_time_ms.max(1)) * 1_000_000;
        let earned = elapsed * u128::from(self.config.size) / period;
        if earned == 0 {
            return;
        }
        // Only the time that bought whole tokens is used up.
        let used_ns = earned * period / u128::from(self.config.size.max(1));
        self.last_refill += Duration::from_nanos(used_ns.min(u128::from(u64::MAX)) as u64);
        let size = i128::from(self.config.size);
        // Debt is paid off first; a full bucket takes no more.
        self.tokens = (self.tokens + earned.min(u128::from(u64::MAX)) as i128).min(size);
    }

    /// Takes `n` tokens if the bucket (with its burst) has them, or has at least a full
    /// bucket for an `n` larger than that; else says how long until it will.
    fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        if self.config.size == 0 || n == 0 {
            return Ok(());
        }
        self.refill(now);
        let from_burst = n.min(self.burst);
        let rest = i128::from(n - from_burst);
        let needed = rest.min(i128::from(self.config.size));
        if self.tokens >= needed {
            self.burst -= from_burst;
            self.tokens -= rest;
            return Ok(());
        }
        let missing = (needed - self.tokens) as u128;
        let period = u128::from(self.config.refill_time_ms.max(1)) * 1_000_000;
        let wait_ns = (missing * period).div_ceil(u128::from(self.config.size));
        Err(Duration::from_nanos(
            wait_ns.min(u128::from(u64::MAX)) as u64
        ))
    }

    /// Gives back `n` tokens taken for an operation that did not happen.
    fn give_back(&mut self, n: u64) {
        self.tokens = (self.tokens + i128::from(n)).min(i128::from(self.config.size));
    }
}

/// A rate limiter on bytes and operations.
pub struct RateLimiter {
    bytes: Option<Bucket>,
    ops: Option<Bucket>,
    timer: TimerFd,
    blocked: bool,
    throttled: u64,
}

impl RateLimiter {
    /// A limiter with the given buckets (None: that dimension is not limited).
    pub fn new(bytes: Option<BucketConfig>, ops: Option<BucketConfig>) -> std::io::Result<Self> {
        let now = Instant::now();
        Ok(RateLimiter {
            bytes: bytes.map(|c| Bucket::new(c, now)),
            ops: ops.map(|c| Bucket::new(c, now)),
            timer: TimerFd::new()?,
            blocked: false,
            throttled: 0,
        })
    }

    /// Replaces the buckets (full again, as new ones are); a wait already under way ends
    /// when its timer fires, as before.
    pub fn update(&mut self, bytes: Option<BucketConfig>, ops: Option<BucketConfig>) {
        let now = Instant::now();
        self.bytes = bytes.map(|c| Bucket::new(c, now));
        self.ops = ops.map(|c| Bucket::new(c, now));
    }

    /// Whether an operation of `bytes` may go ahead now; if not, the timer is armed for when
    /// it may and the limiter stays blocked until [`RateLimiter::timer_expired`].
    pub fn consume(&mut self, bytes: u64) -> bool {
        if self.blocked {
            return false;
        }
        let now = Instant::now();
        let wait = match self.ops.as_mut().map(|b| b.take(1, now)) {
            Some(Err(wait)) => Some(wait),
            _ => match self.bytes.as_mut().map(|b| b.take(bytes, now)) {
                Some(Err(wait)) => {
                    if let Some(ops) = self.ops.as_mut() {
                        ops.give_back(1);
                    }
                    Some(wait)
                }
                _ => None,
            },
        };
        let Some(wait) = wait else {
            return true;
        };
        self.throttled += 1;
        self.blocked = true;
        if let Err(e) = self.timer.reset(wait.max(Duration::from_micros(100)), None) {
            log::error!("rate limiter: cannot arm its timer: {e}");
            self.blocked = false;
        }
        false
    }

    /// The timer descriptor to watch for readability.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Call when the timer descriptor is readable: the limiter is open again.
    pub fn timer_expired(&mut self) {
        // The timer is readable, so this does not block.
        let _ = self.timer.wait();
        self.blocked = false;
    }

    /// Whether the limiter waits for its timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// How many operations found a bucket short so far.
    pub fn throttled(&self) -> u64 {
        self.throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, burst: u64, refill_time_ms: u64) -> Bucket {
        Bucket::new(
            BucketConfig {
                size,
                one_time_burst: burst,
                refill_time_ms,
            },
            Instant::now(),
        )
    }

    #[test]
    fn a_bucket_spends_its_burst_then_its_tokens_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = bucket(1000, 500, 1000);
        b.last_refill = start;
        assert!(b.take(1500, start).is_ok(), "burst and the full bucket");
        let wait = b.take(100, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        let later = start + Duration::from_millis(100);
        assert!(b.take(100, later).is_ok());
        assert!(b.take(1, later).is_err());
    }

    #[test]
    fn an_operation_larger_than_the_bucket_waits_for_a_full_bucket_and_leaves_debt() {
        let start = Instant::now();
        let mut b = bucket(1000, 0, 1000);
        b.last_refill = start;
        assert!(b.take(3000, start).is_ok(), "a full bucket lets it through");
        // 2000 tokens of debt: a full bucket again only after three seconds.
        let wait = b.take(1000, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3));
        assert!(b.take(1000, start + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn the_limiter_blocks_until_its_timer_fires() {
        let ops = BucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 20,
        };
        let mut limiter = RateLimiter::new(None, Some(ops)).unwrap();
        assert!(limiter.consume(4096));
        assert!(!limiter.consume(4096));
        assert!(limiter.is_blocked());
        assert!(!limiter.consume(1), "blocked until the timer fires");
        assert_eq!(limiter.throttled(), 1);
        std::thread::sleep(Duration::from_millis(30));
        limiter.timer_expired();
        assert!(limiter.consume(4096));
    }

    #[test]
    fn updated_buckets_apply_to_the_next_operation() {
        let one_op = BucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 60_000,
        };
        let mut limiter = RateLimiter::new(None, Some(one_op)).unwrap();
        assert!(limiter.consume(1));
        limiter.update(None, None);
        assert!(
            limiter.consume(1) && limiter.consume(1),
            "no longer limited"
        );
        limiter.update(None, Some(one_op));
        assert!(limiter.consume(1));
        assert!(!limiter.consume(1), "limited again");
    }

    #[test]
    fn an_unlimited_limiter_never_blocks() {
        let mut limiter = RateLimiter::new(None, None).unwrap();
        for _ in 0..1000 {
            assert!(limiter.consume(1 << 20));
        }
    }
}
