//! Pausing the vCPUs: the VMM asks, each vCPU thread parks at its next look at the gate
//! (before entering the guest), and the VMM waits until all have parked. Parked vCPUs run no
//! guest code; they leave the gate on resume or when the VM stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::stop::StopSignal;

/// How often a parked vCPU looks at the stop flag.
const PARKED_POLL: Duration = Duration::from_millis(50);

/// The gate the vCPU loops pass before each entry into the guest.
#[derive(Default)]
pub struct PauseGate {
    /// A pause is asked for (read without the lock on the vCPUs' fast path).
    closed: AtomicBool,
    /// vCPU threads parked at the gate.
    parked: Mutex<usize>,
    changed: Condvar,
}

impl PauseGate {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On a vCPU thread: returns at once unless a pause is asked for; then waits until the
    /// VM resumes (returning true) or stops (false).
    pub fn pass(&self, stop: &StopSignal) -> bool {
        if !self.closed.load(Ordering::Acquire) {
            return true;
        }
        let mut parked = self.lock();
        *parked += 1;
        self.changed.notify_all();
        while self.closed.load(Ordering::Acquire) && !stop.is_stopping() {
            parked = self
                .changed
                .wait_timeout(parked, PARKED_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *parked -= 1;
        !stop.is_stopping()
    }

    /// Asks the vCPUs to park, calling `nudge` every 2 ms until `vcpus` have parked (true)
    /// or `timeout` passes (false: the gate stays closed, and the others park when they
    /// next look).
    pub fn pause(&self, vcpus: usize, timeout: Duration, mut nudge: impl FnMut()) -> bool {
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut parked = self.lock();
        loop {
            if *parked >= vcpus {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            drop(parked);
            nudge();
            parked = self.lock();
            parked = self
                .changed
                .wait_timeout(parked, Duration::from_millis(2))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether a pause is asked for.
    pub fn is_paused(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Lets the parked vCPUs go on.
    pub fn resume(&self) {
        let _parked = self.lock();
        self.closed.store(false, Ordering::Release);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn parked_vcpus_make_no_progress_until_resumed() {
        let gate = Arc::new(PauseGate::default());
        let stop = Arc::new(StopSignal::new().unwrap());
        let steps = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (gate, stop, steps) = (gate.clone(), stop.clone(), steps.clone());
                std::thread::spawn(move || {
                    while gate.pass(&stop) {
                        steps.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(100));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert!(gate.pause(2, Duration::from_secs(5), || {}));
        let frozen = steps.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(steps.load(Ordering::SeqCst), frozen);
        gate.resume();
        std::thread::sleep(Duration::from_millis(30));
        assert!(steps.load(Ordering::SeqCst) > frozen);
        assert!(gate.pause(2, Duration::from_secs(5), || {}));
        stop.stop(crate::stop::StopReason::UserQuit);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_pause_that_is_not_reached_times_out() {
        let gate = PauseGate::default();
        let mut nudges = 0;
        assert!(!gate.pause(1, Duration::from_millis(20), || nudges += 1));
        assert!(nudges > 0 && gate.is_paused());
    }
}
