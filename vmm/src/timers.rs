//! A thread that fires callbacks at deadlines: the software CPU's local APIC timers (and
//! other emulated timers) post their interrupts through it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::stop::StopSignal;
use crate::threads::VmThread;

/// What a timer does when it expires.
pub type Callback = Arc<dyn Fn() + Send + Sync>;

struct Timer {
    deadline: Option<Instant>,
    callback: Callback,
}

#[derive(Default)]
struct Timers {
    list: Vec<Timer>,
    /// The thread is to end.
    shut_down: bool,
}

#[derive(Default)]
struct Shared {
    timers: Mutex<Timers>,
    changed: Condvar,
}

/// The timer thread and its timers. The thread runs until [`TimerService::shut_down`].
#[derive(Clone, Default)]
pub struct TimerService {
    shared: Arc<Shared>,
}

/// Names one timer of a [`TimerService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId(usize);

impl TimerService {
    /// Starts the timer thread; a panic in a callback stops the VM through `stop`.
    pub fn start(stop: Arc<StopSignal>) -> std::io::Result<(Self, VmThread)> {
        let service = TimerService::default();
        let shared = service.shared.clone();
        let thread = VmThread::spawn("timers", stop, move || run(&shared))?;
        Ok((service, thread))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.shared.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a disarmed timer that calls `callback` when it expires.
    pub fn add(&self, callback: Callback) -> TimerId {
        let mut timers = self.lock();
        timers.list.push(Timer {
            deadline: None,
            callback,
        });
        TimerId(timers.list.len() - 1)
    }

    /// Arms timer `id` for `deadline`, or disarms it.
    pub fn arm(&self, id: TimerId, deadline: Option<Instant>) {
        if let Some(t) = self.lock().list.get_mut(id.0) {
            t.deadline = deadline;
        }
        self.shared.changed.notify_one();
    }

    /// Ends the timer thread: no callback runs after it has seen this.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.shared.changed.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut timers = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
    let mut due = Vec::with_capacity(timers.list.len());
    while !timers.shut_down {
        let now = Instant::now();
        for t in timers.list.iter_mut() {
            if t.deadline.is_some_and(|d| d <= now) {
                t.deadline = None;
                due.push(t.callback.clone());
            }
        }
        if !due.is_empty() {
            drop(timers);
            for callback in due.drain(..) {
                callback();
            }
            timers = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let next = timers.list.iter().filter_map(|t| t.deadline).min();
        timers = match next {
            Some(d) => {
                shared
                    .changed
                    .wait_timeout(timers, d.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => shared
                .changed
                .wait(timers)
                .unwrap_or_else(|e| e.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::stop::StopReason;

    #[test]
    fn fires_armed_timers_once_at_their_deadline_and_never_unarmed_ones() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let (service, thread) = TimerService::start(stop.clone()).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let id = service.add(Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let idle_hits = Arc::new(AtomicUsize::new(0));
        let h = idle_hits.clone();
        service.add(Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let start = Instant::now();
        service.arm(id, Some(start + Duration::from_millis(20)));
        while hits.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timer never fired"
            );
        }
        assert!(start.elapsed() >= Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            idle_hits.load(Ordering::SeqCst),
            0,
            "an unarmed timer fired"
        );
        service.shut_down();
        thread.join();
        assert!(!stop.is_stopping());
    }

    #[test]
    fn a_panicking_callback_stops_the_vm() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let (service, thread) = TimerService::start(stop.clone()).unwrap();
        let id = service.add(Arc::new(|| panic!("timer callback failed")));
        service.arm(id, Some(Instant::now()));
        let reason = stop.wait();
        assert_eq!(reason.exit_status(), 4);
        assert!(
            matches!(&reason, StopReason::Internal(m) if m.contains("timers")),
            "{reason:?}"
        );
        thread.join();
    }
}
