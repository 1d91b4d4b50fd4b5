//! The power-management registers of a hardware-reduced ACPI platform: the sleep control and
//! status registers (ACPI 6, 4.8.3.7) and the reset register, on three I/O ports.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitRequester, GuestExit};

/// First I/O port: sleep control, then sleep status, then reset.
pub const ACPI_PM_PORT: u64 = 0x600;
/// Ports the device occupies.
pub const ACPI_PM_PORTS: u64 = 3;
/// Offset of the sleep control register.
pub const SLEEP_CONTROL: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS: u64 = 1;
/// Offset of the reset register.
pub const RESET: u64 = 2;
/// The SLP_TYP value the DSDT's `\_S5` package announces for soft-off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The value that, written to the reset register, resets the machine.
pub const RESET_VALUE: u8 = 0x01;

const SLP_EN: u8 = 1 << 5;

/// Turns an S5 request into [`GuestExit::PowerOff`] and a reset into [`GuestExit::Reset`].
pub struct AcpiPm {
    exit: Arc<dyn ExitRequester>,
}

impl AcpiPm {
    /// A device that reports to `exit`.
    pub fn new(exit: Arc<dyn ExitRequester>) -> Self {
        AcpiPm { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never woken, never sleeping; the others are write-only.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL if value & SLP_EN != 0 => {
                let sleep_type = (value >> 2) & 0x7;
                if sleep_type == S5_SLEEP_TYPE {
                    self.exit.request_exit(GuestExit::PowerOff);
                } else {
                    log::warn!("guest asked for sleep type {sleep_type}; only S5 (off) exists");
                }
            }
            RESET if value == RESET_VALUE => self.exit.request_exit(GuestExit::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Recorder;

    #[test]
    fn s5_powers_off_and_reset_value_resets() {
        let rec = Arc::new(Recorder::default());
        let mut pm = AcpiPm::new(rec.clone());
        pm.write(SLEEP_CONTROL, &[S5_SLEEP_TYPE << 2]); // SLP_EN clear: nothing
        pm.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]); // S3: not supported
        pm.write(RESET, &[0x42]);
        assert!(rec.0.lock().unwrap().is_empty());
        pm.write(SLEEP_CONTROL, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        pm.write(RESET, &[RESET_VALUE]);
        assert_eq!(
            rec.0.lock().unwrap().as_slice(),
            &[GuestExit::PowerOff, GuestExit::Reset]
        );
    }
}
