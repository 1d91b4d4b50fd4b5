//! Why and when the VM stops: the first reason reported wins, and every thread can see that
//! the VM is stopping.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use devices::exit::ExitRequester;
use devices::GuestExit;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::report::FaultReport;

/// Why the VM stopped.
#[derive(Debug)]
pub enum StopReason {
    /// The guest powered off, reset, or wrote the debug-exit port.
    Guest(GuestExit),
    /// A vCPU hit something it cannot go on from.
    Fault(Box<FaultReport>),
    /// The user typed the quit escape on the console.
    UserQuit,
    /// The VMM received this signal (SIGTERM, SIGINT, SIGHUP).
    Signal(i32),
    /// A VMM thread failed (a bug); the message says which.
    Internal(String),
}

impl StopReason {
    /// The process exit status this reason maps to (see `ember --help`).
    pub fn exit_status(&self) -> i32 {
        match self {
            StopReason::Guest(GuestExit::Reset | GuestExit::PowerOff) | StopReason::UserQuit => 0,
            // Larger values would not fit in 8 bits and could alias a passing status.
            StopReason::Guest(GuestExit::DebugExit(v)) if *v < 128 => ((v << 1) | 1) as i32,
            StopReason::Guest(GuestExit::DebugExit(_)) => DEBUG_EXIT_OUT_OF_RANGE,
            StopReason::Fault(_) | StopReason::Internal(_) => crate::launch::EXIT_VM_FAILED,
            StopReason::Signal(sig) => 128 + sig,
        }
    }
}

/// Exit status for a debug-exit value of 128 or more, which `(v << 1) | 1` cannot express.
pub const DEBUG_EXIT_OUT_OF_RANGE: i32 = 255;

/// What [`StopSignal::on_stop`] calls.
pub type StopHook = Box<dyn Fn() + Send + Sync>;

/// The stop request shared by the vCPU threads, devices, the console and the main thread.
pub struct StopSignal {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    /// Called when `stopping` is raised (the software vCPUs raise their attention flags and
    /// kick themselves).
    on_stop: Mutex<Vec<StopHook>>,
    /// Readable from the first stop request on (it is never read), so any number of threads
    /// can wait for it with poll or epoll.
    stopped: EventFd,
}

/// Where signal handlers report termination signals: a process-wide eventfd that is never
/// closed (so a handler can never write to a reused descriptor), and the last signal seen.
static SIGNAL_EVENT: OnceLock<EventFd> = OnceLock::new();
static SIGNAL_EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_SEEN: AtomicI32 = AtomicI32::new(0);

impl StopSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignal {
            stopping: AtomicBool::new(false),
            reason: Mutex::new(None),
            on_stop: Mutex::new(Vec::new()),
            stopped: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Whether the VM is stopping; vCPU loops check this before every entry into the guest.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A descriptor that becomes readable, and stays so, once the VM is stopping.
    pub fn stopped_fd(&self) -> RawFd {
        self.stopped.as_raw_fd()
    }

    /// Calls `hook` when the VM stops (at once if it already is stopping).
    pub fn on_stop(&self, hook: StopHook) {
        if self.is_stopping() {
            hook();
        }
        self.on_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Asks for the VM to stop for `reason`, unless another reason came first.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        *slot = Some(reason);
        self.stopping.store(true, Ordering::Release);
        for hook in self
            .on_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            hook();
        }
        // The counter cannot overflow from one write.
        let _ = self.stopped.write(1);
    }

    /// Blocks until a stop is requested (by a thread or a termination signal) and returns
    /// why. Only one thread may wait; it gets the reason.
    pub fn wait(&self) -> StopReason {
        loop {
            if let Some(reason) = self.wait_for(None, None) {
                return reason;
            }
        }
    }

    /// As [`StopSignal::wait`], but also returns None once `fd` (if given) is readable or
    /// `timeout` (if given) has passed, for a waiter that has other work.
    pub fn wait_for(&self, fd: Option<RawFd>, timeout: Option<Duration>) -> Option<StopReason> {
        let poll_fd = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            poll_fd(self.stopped.as_raw_fd()),
            poll_fd(SIGNAL_EVENT_FD.load(Ordering::Acquire)),
            poll_fd(fd.unwrap_or(-1)),
        ];
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut polled = false;
        loop {
            let sig = SIGNAL_SEEN.load(Ordering::Acquire);
            if sig != 0 {
                self.stop(StopReason::Signal(sig));
            }
            if self.is_stopping() {
                let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
                return Some(
                    slot.take()
                        .unwrap_or_else(|| StopReason::Internal("the stop reason was lost".into())),
                );
            }
            if polled {
                return None;
            }
            // SAFETY: `fds` is a valid array of three pollfds (a negative fd is ignored).
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            // A signal that interrupted the poll is looked at again; anything else ends it.
            polled = !(ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted);
        }
    }

    /// Routes SIGTERM, SIGINT and SIGHUP to the waiter of this signal.
    pub fn catch_termination_signals(&self) -> std::io::Result<()> {
        if SIGNAL_EVENT.get().is_none() {
            let event = EventFd::new(EFD_NONBLOCK)?;
            SIGNAL_EVENT_FD.store(event.as_raw_fd(), Ordering::Release);
            // A second caller racing here would only leave its own eventfd unused.
            let _ = SIGNAL_EVENT.set(event);
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            vmm_sys_util::signal::register_signal_handler(sig, on_termination_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }
}

extern "C" fn on_termination_signal(
    num: libc::c_int,
    _info: *mut libc::siginfo_t,
    _unused: *mut libc::c_void,
) {
    SIGNAL_SEEN.store(num, Ordering::Release);
    let fd = SIGNAL_EVENT_FD.load(Ordering::Acquire);
    let one: u64 = 1;
    // SAFETY: write(2) is async-signal-safe; `fd` is the process-wide signal eventfd, which
    // is never closed, and `one` is a valid 8-byte buffer.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

impl ExitRequester for StopSignal {
    fn request_exit(&self, reason: GuestExit) {
        self.stop(StopReason::Guest(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_the_waiter() {
        let stop = Arc::new(StopSignal::new().unwrap());
        assert!(!stop.is_stopping());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.wait())
        };
        stop.request_exit(GuestExit::DebugExit(21));
        stop.request_exit(GuestExit::Reset);
        assert!(stop.is_stopping());
        let reason = waiter.join().unwrap();
        assert_eq!(reason.exit_status(), 43);
    }

    #[test]
    fn exit_statuses_follow_the_documented_convention() {
        assert_eq!(StopReason::Guest(GuestExit::PowerOff).exit_status(), 0);
        assert_eq!(StopReason::Guest(GuestExit::Reset).exit_status(), 0);
        assert_eq!(StopReason::Guest(GuestExit::DebugExit(0)).exit_status(), 1);
        assert_eq!(
            StopReason::Guest(GuestExit::DebugExit(127)).exit_status(),
            255
        );
        for v in [128, 129, 0x8000_0000, u32::MAX] {
            assert_eq!(
                StopReason::Guest(GuestExit::DebugExit(v)).exit_status(),
                DEBUG_EXIT_OUT_OF_RANGE,
                "{v:#x} must not wrap to a small status"
            );
        }
        assert_eq!(StopReason::UserQuit.exit_status(), 0);
        assert_eq!(StopReason::Signal(15).exit_status(), 143);
    }
}
