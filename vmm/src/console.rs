//! The guest's serial console on this process's standard input and output.
//!
//! Output goes straight to standard output, unbuffered. Input is read by one thread and
//! queued into the UART as the guest drains it. When standard input is a terminal it is put in
//! raw mode (restored when the VMM ends) and Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::legacy::serial::Serial;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::terminal::Terminal;

use crate::stop::{StopReason, StopSignal};
use crate::threads::VmThread;

const CTRL_A: u8 = 0x01;

/// Standard output as an unbuffered writer for the UART.
pub fn stdout_writer() -> io::Result<File> {
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}

/// Raw mode on the controlling terminal for as long as this lives.
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    /// Puts standard input in raw mode if it is a terminal.
    pub fn enter() -> Self {
        let stdin = io::stdin();
        let active = stdin.is_terminal() && stdin.lock().set_raw_mode().is_ok();
        RawTerminal { active }
    }

    /// Whether standard input is a terminal in raw mode (and so escapes apply).
    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            let _ = io::stdin().lock().set_canon_mode();
        }
    }
}

/// Turns console keystrokes into guest input, handling the Ctrl-A escapes.
#[derive(Default)]
struct EscapeFilter {
    after_ctrl_a: bool,
}

impl EscapeFilter {
    /// Appends what `input` sends to the guest to `out`; returns true when the user asked to
    /// quit.
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.after_ctrl_a {
                self.after_ctrl_a = false;
                match b {
                    b'x' | b'X' => return true,
                    CTRL_A => out.push(CTRL_A),
                    other => out.extend_from_slice(&[CTRL_A, other]),
                }
            } else if b == CTRL_A {
                self.after_ctrl_a = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// Input held back while the guest does not drain its UART. A terminal keeps being read
/// beyond this (so that Ctrl-A x is always seen) and what does not fit is dropped, as a
/// real UART drops bytes it has no room for; a pipe or file is simply read no further until
/// there is room.
const MAX_PENDING: usize = 4096;

/// Starts the thread that feeds standard input to `serial`, handling the Ctrl-A escapes when
/// `escapes` is set. It ends at end of input (once what was read is delivered) or when the VM
/// stops, whatever the guest does with its UART.
pub fn spawn_input(
    serial: Arc<Mutex<Serial>>,
    stop: Arc<StopSignal>,
    escapes: bool,
) -> io::Result<VmThread> {
    let space = lock(&serial).input_space_event()?;
    let thread_stop = stop.clone();
    VmThread::spawn("console-in", stop, move || {
        if let Err(e) = feed_input(&serial, &space, &thread_stop, escapes) {
            log::warn!("console input stopped: {e}");
        }
    })
}

/// Epoll tokens of the console thread's descriptors.
const STDIN: u64 = 0;
const SPACE: u64 = 1;
const STOPPED: u64 = 2;

/// Standard input as the console thread watches it.
struct Input {
    /// Still open (no end of input seen).
    open: bool,
    /// Registered with epoll; false for regular files, which are always readable.
    polled: bool,
    /// Currently in the epoll set with EPOLLIN.
    watched: bool,
}

fn feed_input(
    serial: &Mutex<Serial>,
    space: &EventFd,
    stop: &StopSignal,
    escapes: bool,
) -> io::Result<()> {
    let epoll = Epoll::new()?;
    // Read the descriptor itself: std's Stdin buffers, and bytes held in a user-space buffer
    // are invisible to epoll.
    let mut stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let stdin_fd = stdin.as_raw_fd();
    let in_event = |token| EpollEvent::new(EventSet::IN, token);
    epoll.ctl(ControlOperation::Add, space.as_raw_fd(), in_event(SPACE))?;
    epoll.ctl(ControlOperation::Add, stop.stopped_fd(), in_event(STOPPED))?;
    let polled = match epoll.ctl(ControlOperation::Add, stdin_fd, in_event(STDIN)) {
        Ok(()) => true,
        // A regular file cannot be polled; it never blocks either.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => return Err(e),
    };
    let mut input = Input {
        open: true,
        polled,
        watched: polled,
    };
    let mut events = [EpollEvent::default(); 3];
    let mut buf = [0u8; 256];
    let mut pending = Vec::with_capacity(MAX_PENDING + buf.len());
    let mut filter = EscapeFilter::default();
    let mut dropped = false;
    loop {
        let want_input = input.open && (escapes || pending.len() < MAX_PENDING);
        if input.polled && want_input != input.watched {
            let set = if want_input {
                EventSet::IN
            } else {
                EventSet::empty()
            };
            epoll.ctl(
                ControlOperation::Modify,
                stdin_fd,
                EpollEvent::new(set, STDIN),
            )?;
            input.watched = want_input;
        }
        let mut readable = want_input && !input.polled;
        let timeout = if readable { 0 } else { -1 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for event in &events[..n] {
            match event.data() {
                STOPPED => return Ok(()),
                SPACE => {
                    let _ = space.read();
                }
                _ => readable = true,
            }
        }
        if readable {
            let n = match stdin.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                input.open = false;
                if input.polled {
                    epoll.ctl(ControlOperation::Delete, stdin_fd, in_event(STDIN))?;
                    input.polled = false;
                }
            }
            let before = pending.len();
            if escapes {
                if filter.filter(&buf[..n], &mut pending) {
                    stop.stop(StopReason::UserQuit);
                    return Ok(());
                }
            } else {
                pending.extend_from_slice(&buf[..n]);
            }
            if escapes && pending.len() > MAX_PENDING {
                pending.truncate(before.max(MAX_PENDING));
                if !dropped {
                    log::warn!("console: the guest is not reading its serial port; input dropped");
                    dropped = true;
                }
            }
        }
        if !pending.is_empty() {
            let taken = lock(serial).enqueue_input(&pending);
            pending.drain(..taken);
        }
        if !input.open && pending.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(filter: &mut EscapeFilter, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let quit = filter.filter(input, &mut out);
        (out, quit)
    }

    #[test]
    fn ctrl_a_x_quits_and_ctrl_a_ctrl_a_sends_one() {
        let mut f = EscapeFilter::default();
        assert_eq!(run(&mut f, b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(
            run(&mut f, &[CTRL_A, CTRL_A, b'a']),
            (vec![CTRL_A, b'a'], false)
        );
        assert_eq!(run(&mut f, &[CTRL_A, b'c']), (vec![CTRL_A, b'c'], false));
        // The escape may be split across reads.
        assert_eq!(run(&mut f, &[b'q', CTRL_A]), (b"q".to_vec(), false));
        assert!(run(&mut f, b"x").1);
    }
}
