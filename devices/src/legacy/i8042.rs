//! The i8042 keyboard controller, present so a guest's keyboard-controller reset (Linux's
//! `reboot=k`) ends the VM cleanly.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitRequester, ResetTrigger};

/// The controller's data port (device offset 0).
pub const I8042_DATA_PORT: u64 = 0x60;
/// The controller's status and command port (device offset 4).
pub const I8042_COMMAND_PORT: u64 = 0x64;

/// vm-superio's i8042, which turns the CPU-reset command (0xfe on port 0x64) into
/// [`crate::GuestExit::Reset`].
pub struct I8042(vm_superio::I8042Device<ResetTrigger>);

impl I8042 {
    /// A controller that reports resets to `exit`.
    pub fn new(exit: Arc<dyn ExitRequester>) -> Self {
        I8042(vm_superio::I8042Device::new(ResetTrigger(exit)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(first) = data.first() {
            // The reset trigger cannot fail.
            let Ok(()) = self.0.write(offset as u8, *first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{GuestExit, Recorder};

    #[test]
    fn cpu_reset_command_requests_reset() {
        let rec = Arc::new(Recorder::default());
        let mut kbd = I8042::new(rec.clone());
        let mut status = [0xffu8];
        kbd.read(4, &mut status);
        assert_eq!(
            status[0] & 0x2,
            0,
            "input buffer empty, so Linux's kb_wait ends"
        );
        kbd.write(4, &[0xaa]);
        assert!(rec.0.lock().unwrap().is_empty());
        kbd.write(4, &[0xfe]);
        assert_eq!(rec.0.lock().unwrap().as_slice(), &[GuestExit::Reset]);
    }
}
