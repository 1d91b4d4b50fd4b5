//! The guest's serial console on this process's standard input and output.
//!
//! Output goes straight to standard output, unbuffered. Input is read by one thread and
//! queued into the UART as the guest drains it. When standard input is a terminal it is put in
//! raw mode (restored when the VMM ends) and Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::legacy::serial::Serial;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::terminal::Terminal;

use crate::stop::{StopReason, StopSignal};

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

/// Starts the thread that feeds standard input to `serial`. It ends at end of input.
pub fn spawn_input(
    serial: Arc<Mutex<Serial>>,
    stop: Arc<StopSignal>,
    escapes: bool,
) -> io::Result<()> {
    let space = lock(&serial).input_space_event()?;
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            if let Err(e) = feed_input(&serial, &space, &stop, escapes) {
                log::warn!("console input stopped: {e}");
            }
        })?;
    Ok(())
}

fn feed_input(
    serial: &Mutex<Serial>,
    space: &EventFd,
    stop: &StopSignal,
    escapes: bool,
) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        std::os::fd::AsRawFd::as_raw_fd(space),
        EpollEvent::new(EventSet::IN, 0),
    )?;
    let mut events = [EpollEvent::default()];
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 64];
    let mut pending = Vec::with_capacity(2 * buf.len());
    let mut filter = EscapeFilter::default();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.clear();
        if escapes {
            if filter.filter(&buf[..n], &mut pending) {
                stop.stop(StopReason::UserQuit);
                return Ok(());
            }
        } else {
            pending.extend_from_slice(&buf[..n]);
        }
        let mut rest = pending.as_slice();
        while !rest.is_empty() {
            let taken = lock(serial).enqueue_input(rest);
            rest = &rest[taken..];
            if !rest.is_empty() {
                // Wait for the guest to drain the FIFO.
                epoll.wait(-1, &mut events)?;
                let _ = space.read();
            }
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
