//! Why and when the VM stops: the first reason reported wins, and every thread can see that
//! the VM is stopping.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use devices::exit::ExitRequester;
use devices::GuestExit;
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::FaultReport;

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
            StopReason::Guest(GuestExit::DebugExit(v)) => ((v << 1) | 1) as i32,
            StopReason::Fault(_) | StopReason::Internal(_) => crate::EXIT_VM_FAILED,
            StopReason::Signal(sig) => 128 + sig,
        }
    }
}

/// The stop request shared by the vCPU threads, devices, the console and the main thread.
pub struct StopSignal {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    event: EventFd,
}

/// The eventfd signal handlers write to (async-signal-safe), and the signal they saw.
static SIGNAL_EVENT_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_SEEN: AtomicI32 = AtomicI32::new(0);

impl StopSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignal {
            stopping: AtomicBool::new(false),
            reason: Mutex::new(None),
            event: EventFd::new(0)?,
        })
    }

    /// Whether the VM is stopping; vCPU loops check this before every entry into the guest.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The flag behind [`StopSignal::is_stopping`], for loops that poll it themselves.
    pub fn flag(&self) -> &AtomicBool {
        &self.stopping
    }

    /// Asks for the VM to stop for `reason`, unless another reason came first.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stopping.store(true, Ordering::Release);
        // The counter cannot overflow from a handful of writes.
        let _ = self.event.write(1);
    }

    /// Blocks until a stop is requested (by a thread or a signal) and returns why.
    pub fn wait(&self) -> StopReason {
        loop {
            let _ = self.event.read();
            let sig = SIGNAL_SEEN.load(Ordering::Acquire);
            if sig != 0 {
                self.stop(StopReason::Signal(sig));
            }
            let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = slot.take() {
                return reason;
            }
        }
    }

    /// Routes SIGTERM, SIGINT and SIGHUP to this signal.
    pub fn catch_termination_signals(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        SIGNAL_EVENT_FD.store(self.event.as_raw_fd(), Ordering::Release);
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
    // SAFETY: write(2) is async-signal-safe; `fd` is the StopSignal's eventfd, which lives
    // until the process exits, and `one` is a valid 8-byte buffer.
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
        assert_eq!(StopReason::UserQuit.exit_status(), 0);
        assert_eq!(StopReason::Signal(15).exit_status(), 143);
    }
}
