//! The i8042 keyboard controller with a keyboard behind it: enough of both for Linux's
//! i8042 and atkbd drivers (booted with `i8042.nopnp i8042.dumbkbd`, as Firecracker's guests
//! are) to find a keyboard, so that the VMM can press Ctrl-Alt-Del; and the controller's
//! CPU-reset command (Linux's `reboot=k`), which ends the VM.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitRequester, GuestExit};
use crate::irq::InterruptLine;

/// The controller's data port (device offset 0).
pub const I8042_DATA_PORT: u64 = 0x60;
/// The controller's status and command port (device offset 4).
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// The keyboard's interrupt.
pub const I8042_KBD_IRQ: u32 = 1;

/// Status register: the output buffer holds a byte for the CPU.
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// Status register: the system flag (self-test passed).
const STATUS_SYSTEM: u8 = 1 << 2;
/// Status register: the last write went to the command port.
const STATUS_COMMAND: u8 = 1 << 3;
/// Status register: the keyboard is not inhibited.
const STATUS_UNLOCKED: u8 = 1 << 4;
/// Controller command byte: raise IRQ 1 when a keyboard byte arrives.
const CTR_KBD_INT: u8 = 1 << 0;
/// Controller command byte: the system flag.
const CTR_SYSTEM: u8 = 1 << 2;
/// Most bytes waiting for the CPU (the Linux driver flushes at most this many).
const BUFFER_SIZE: usize = 16;

/// Ctrl, Alt and Delete pressed and released, in scan code set 2 (the controller does not
/// translate: its command byte has no XLATE bit).
const CTRL_ALT_DEL: [u8; 10] = [
    0x14, 0x11, 0xe0, 0x71, // make: left Ctrl, left Alt, Delete
    0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, // break: Delete, Alt, then...
];
/// ...the last byte of the break sequence: Ctrl.
const CTRL_BREAK: u8 = 0x14;

/// Controller commands that take a data byte on port 0x60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// A data write goes to the keyboard.
    Keyboard,
    /// 0x60: the next data byte is the command byte.
    CommandByte,
    /// 0xd1: the next data byte is the output port.
    OutputPort,
    /// 0xd2: the next data byte comes back as if the keyboard sent it.
    KeyboardEcho,
    /// 0xd3 or 0xd4: the next data byte is for the (absent) mouse and is dropped.
    Mouse,
}

/// The controller and its keyboard.
pub struct I8042 {
    exit: Arc<dyn ExitRequester>,
    irq: Arc<dyn InterruptLine>,
    command_byte: u8,
    status: u8,
    awaiting: Awaiting,
    output: VecDeque<u8>,
}

impl I8042 {
    /// A controller that reports the reset command to `exit` and raises `irq` (IRQ 1) for
    /// keyboard bytes while the guest has keyboard interrupts on.
    pub fn new(exit: Arc<dyn ExitRequester>, irq: Arc<dyn InterruptLine>) -> Self {
        I8042 {
            exit,
            irq,
            command_byte: CTR_KBD_INT | CTR_SYSTEM,
            status: STATUS_SYSTEM | STATUS_UNLOCKED,
            awaiting: Awaiting::Keyboard,
            output: VecDeque::with_capacity(BUFFER_SIZE),
        }
    }

    /// Presses and releases Ctrl-Alt-Del on the keyboard. Returns false if the guest has not
    /// read earlier keys yet (the buffer is full).
    pub fn press_ctrl_alt_del(&mut self) -> bool {
        if self.output.len() + CTRL_ALT_DEL.len() + 1 > BUFFER_SIZE {
            return false;
        }
        for byte in CTRL_ALT_DEL.into_iter().chain([CTRL_BREAK]) {
            self.push(byte);
        }
        self.interrupt();
        true
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < BUFFER_SIZE {
            self.output.push_back(byte);
        }
    }

    /// Raises IRQ 1 if a byte waits and the guest wants keyboard interrupts.
    fn interrupt(&self) {
        if !self.output.is_empty() && self.command_byte & CTR_KBD_INT != 0 {
            if let Err(e) = self.irq.trigger() {
                log::warn!("i8042: cannot raise IRQ 1: {e}");
            }
        }
    }

    fn command(&mut self, command: u8) {
        match command {
            0x20 => self.push(self.command_byte),
            0x60 => self.awaiting = Awaiting::CommandByte,
            0xa7 | 0xa8 | 0xad | 0xae => {} // mouse/keyboard port disable/enable
            0xa9 => self.push(0xff),        // mouse port test: no mouse
            0xaa => self.push(0x55),        // controller self-test passed
            0xab => self.push(0x00),        // keyboard port test passed
            0xc0 => self.push(0x00),        // input port
            0xd0 => self.push(0x01),        // output port: CPU not in reset
            0xd1 => self.awaiting = Awaiting::OutputPort,
            0xd2 => self.awaiting = Awaiting::KeyboardEcho,
            0xd3 | 0xd4 => self.awaiting = Awaiting::Mouse,
            0xfe => self.exit.request_exit(GuestExit::Reset),
            other => log::debug!("i8042: ignored command {other:#04x}"),
        }
    }

    fn data(&mut self, byte: u8) {
        match std::mem::replace(&mut self.awaiting, Awaiting::Keyboard) {
            Awaiting::CommandByte => self.command_byte = byte,
            Awaiting::OutputPort if byte & 1 == 0 => self.exit.request_exit(GuestExit::Reset),
            Awaiting::OutputPort | Awaiting::Mouse => {}
            Awaiting::KeyboardEcho => self.push(byte),
            Awaiting::Keyboard => self.keyboard(byte),
        }
    }

    /// A byte the CPU sent the keyboard: every command is acknowledged.
    fn keyboard(&mut self, byte: u8) {
        match byte {
            0xee => self.push(0xee), // echo
            0xf2 => {
                // Identify: an MF2 keyboard.
                for b in [0xfa, 0xab, 0x83] {
                    self.push(b);
                }
            }
            0xff => {
                // Reset: acknowledged, then the self-test passes.
                self.push(0xfa);
                self.push(0xaa);
            }
            _ => self.push(0xfa),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = data.first_mut() else {
            return;
        };
        if offset == 0 {
            *first = self.output.pop_front().unwrap_or(0);
            // One byte per interrupt: the next one gets its own.
            self.interrupt();
        } else {
            let full = if self.output.is_empty() {
                0
            } else {
                STATUS_OUTPUT_FULL
            };
            *first = self.status | full;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else {
            return;
        };
        if offset == 0 {
            self.status &= !STATUS_COMMAND;
            self.data(byte);
        } else {
            self.status |= STATUS_COMMAND;
            self.command(byte);
        }
        self.interrupt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Recorder;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Edges(AtomicUsize);

    impl InterruptLine for Edges {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn controller() -> (I8042, Arc<Recorder>, Arc<Edges>) {
        let (rec, edges) = (Arc::new(Recorder::default()), Arc::new(Edges::default()));
        (I8042::new(rec.clone(), edges.clone()), rec, edges)
    }

    fn status(kbd: &mut I8042) -> u8 {
        let mut b = [0xff];
        kbd.read(4, &mut b);
        b[0]
    }

    fn data(kbd: &mut I8042) -> u8 {
        let mut b = [0];
        kbd.read(0, &mut b);
        b[0]
    }

    #[test]
    fn cpu_reset_command_requests_reset() {
        let (mut kbd, rec, _) = controller();
        assert_eq!(
            status(&mut kbd) & 0x2,
            0,
            "input buffer empty, so kb_wait ends"
        );
        kbd.write(4, &[0xaa]);
        assert_eq!(data(&mut kbd), 0x55);
        assert!(rec.0.lock().unwrap().is_empty());
        kbd.write(4, &[0xfe]);
        assert_eq!(rec.0.lock().unwrap().as_slice(), &[GuestExit::Reset]);
    }

    #[test]
    fn linux_probe_sequence_is_answered() {
        let (mut kbd, _, _) = controller();
        kbd.write(4, &[0x20]);
        assert_ne!(status(&mut kbd) & STATUS_OUTPUT_FULL, 0);
        let ctr = data(&mut kbd);
        assert_eq!(ctr & 0x40, 0, "no scan code translation");
        assert_eq!(status(&mut kbd) & STATUS_OUTPUT_FULL, 0);
        kbd.write(4, &[0x60]);
        kbd.write(0, &[0x45]);
        kbd.write(4, &[0x20]);
        assert_eq!(data(&mut kbd), 0x45);
        kbd.write(0, &[0xf2]);
        assert_eq!(
            [data(&mut kbd), data(&mut kbd), data(&mut kbd)],
            [0xfa, 0xab, 0x83]
        );
    }

    #[test]
    fn ctrl_alt_del_arrives_one_interrupt_per_byte() {
        let (mut kbd, rec, edges) = controller();
        assert!(kbd.press_ctrl_alt_del());
        let mut got = Vec::new();
        while status(&mut kbd) & STATUS_OUTPUT_FULL != 0 {
            got.push(data(&mut kbd));
        }
        assert_eq!(&got[..4], &[0x14, 0x11, 0xe0, 0x71]);
        assert_eq!(got.len(), 11);
        assert_eq!(edges.0.load(Ordering::SeqCst), 11);
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "a key press is not a reset"
        );
    }

    #[test]
    fn no_interrupts_while_the_guest_turned_them_off() {
        let (mut kbd, _, edges) = controller();
        kbd.write(4, &[0x60]);
        kbd.write(0, &[0x00]);
        let before = edges.0.load(Ordering::SeqCst);
        assert!(kbd.press_ctrl_alt_del());
        assert_eq!(edges.0.load(Ordering::SeqCst), before);
        assert!(!kbd.press_ctrl_alt_del(), "no room for a second press");
    }
}
