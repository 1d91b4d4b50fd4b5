//! A thread that fires callbacks at deadlines: the software CPU's local APIC timers (and
//! other emulated timers) post their interrupts through it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// What a timer does when it expires.
pub type Callback = Arc<dyn Fn() + Send + Sync>;

struct Timer {
    deadline: Option<Instant>,
    callback: Callback,
}

#[derive(Default)]
struct Shared {
    timers: Mutex<Vec<Timer>>,
    changed: Condvar,
}

/// The timer thread and its timers. Dropping the last handle does not stop the thread; it
/// ends with the process.
#[derive(Clone, Default)]
pub struct TimerService {
    shared: Arc<Shared>,
}

/// Names one timer of a [`TimerService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId(usize);

impl TimerService {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let service = TimerService::default();
        let shared = service.shared.clone();
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || run(&shared))?;
        Ok(service)
    }

    /// Adds a disarmed timer that calls `callback` when it expires.
    pub fn add(&self, callback: Callback) -> TimerId {
        let mut timers = self.shared.timers.lock().unwrap_or_else(|e| e.into_inner());
        timers.push(Timer {
            deadline: None,
            callback,
        });
        TimerId(timers.len() - 1)
    }

    /// Arms timer `id` for `deadline`, or disarms it.
    pub fn arm(&self, id: TimerId, deadline: Option<Instant>) {
        let mut timers = self.shared.timers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = timers.get_mut(id.0) {
            t.deadline = deadline;
        }
        self.shared.changed.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut timers = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        for t in timers.iter_mut() {
            if t.deadline.is_some_and(|d| d <= now) {
                t.deadline = None;
                due.push(t.callback.clone());
            }
        }
        if !due.is_empty() {
            drop(timers);
            for callback in due {
                callback();
            }
            timers = shared.timers.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let next = timers.iter().filter_map(|t| t.deadline).min();
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

    #[test]
    fn fires_armed_timers_once_at_their_deadline() {
        let service = TimerService::start().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let id = service.add(Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let idle = service.add(Arc::new(|| panic!("never armed")));
        let _ = idle;
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
    }
}
