//! An isa-debug-exit style port: test guests end the VM with a status of their choosing.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitRequester, GuestExit};

/// I/O port of the device, as kvm-unit-tests and QEMU's `-device isa-debug-exit` use it.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// Ports it occupies (one 32-bit register).
pub const DEBUG_EXIT_PORTS: u64 = 4;

/// Writing value `v` (1, 2 or 4 bytes, little-endian) requests [`GuestExit::DebugExit`]`(v)`.
pub struct DebugExit {
    exit: Arc<dyn ExitRequester>,
}

impl DebugExit {
    /// A port that reports to `exit`.
    pub fn new(exit: Arc<dyn ExitRequester>) -> Self {
        DebugExit { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut value = [0u8; 4];
        let n = data.len().min(4);
        value[..n].copy_from_slice(&data[..n]);
        self.exit
            .request_exit(GuestExit::DebugExit(u32::from_le_bytes(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Recorder;

    #[test]
    fn byte_and_dword_writes_carry_the_value() {
        let rec = Arc::new(Recorder::default());
        let mut port = DebugExit::new(rec.clone());
        port.write(0, &[42]);
        port.write(0, &0x1234_5678u32.to_le_bytes());
        assert_eq!(
            rec.0.lock().unwrap().as_slice(),
            &[GuestExit::DebugExit(42), GuestExit::DebugExit(0x1234_5678)]
        );
    }
}
