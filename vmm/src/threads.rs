//! The VMM's own threads (vCPUs, timers, console): each runs under a guard that stops the VM
//! with a report if it panics, and VM teardown joins them before guest memory can go away.

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::Killable;

use crate::stop::{StopReason, StopSignal};

/// One VMM thread.
pub struct VmThread {
    name: String,
    handle: JoinHandle<()>,
}

impl VmThread {
    /// Starts `body` on a thread called `name`. If it panics, the VM stops with
    /// [`StopReason::Internal`] naming the thread and the panic message (exit status 4): the
    /// VM must not go on with a vCPU, its clock or its console gone.
    pub fn spawn(
        name: impl Into<String>,
        stop: Arc<StopSignal>,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<VmThread> {
        let name = name.into();
        let thread_name = name.clone();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
                    stop.stop(StopReason::Internal(format!(
                        "the {thread_name} thread panicked: {}",
                        panic_message(payload.as_ref())
                    )));
                }
            })?;
        Ok(VmThread { name, handle })
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Interrupts a blocking system call on the thread (KVM_RUN, a read) with `signal`.
    pub fn signal(&self, signal: i32) {
        // The thread may have just ended; there is nothing to interrupt then.
        let _ = self.handle.kill(signal);
    }

    /// Waits for the thread to end.
    pub fn join(self) {
        // A panic was already reported by the guard inside the thread.
        let _ = self.handle.join();
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Waits until every thread in `threads` has ended or `timeout` has passed, calling `nudge`
/// on the unfinished ones every 2 ms; joins those that ended and returns the names of those
/// that did not.
pub fn join_all(
    threads: Vec<VmThread>,
    timeout: Duration,
    mut nudge: impl FnMut(&VmThread),
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        threads
            .iter()
            .filter(|t| !t.is_finished())
            .for_each(&mut nudge);
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut stuck = Vec::new();
    for t in threads {
        if t.is_finished() {
            t.join();
        } else {
            stuck.push(t.name);
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_stops_the_vm_with_status_4_and_names_itself() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let t = VmThread::spawn("console-in", stop.clone(), || panic!("stdin exploded")).unwrap();
        let reason = stop.wait();
        assert_eq!(reason.exit_status(), 4);
        let StopReason::Internal(message) = reason else {
            panic!("{reason:?}");
        };
        assert!(message.contains("console-in"), "{message}");
        assert!(message.contains("stdin exploded"), "{message}");
        assert!(join_all(vec![t], Duration::from_secs(5), |_| {}).is_empty());
    }

    #[test]
    fn a_thread_that_returns_stops_nothing() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let t = VmThread::spawn("quiet", stop.clone(), || {}).unwrap();
        assert!(join_all(vec![t], Duration::from_secs(5), |_| {}).is_empty());
        assert!(!stop.is_stopping());
    }

    #[test]
    fn threads_that_do_not_end_are_named() {
        let stop = Arc::new(StopSignal::new().unwrap());
        let flag = stop.clone();
        let t = VmThread::spawn("stuck", stop.clone(), move || {
            while !flag.is_stopping() {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        let stuck = join_all(vec![t], Duration::from_millis(20), |_| {});
        assert_eq!(stuck, ["stuck"]);
        stop.stop(StopReason::UserQuit);
    }
}
