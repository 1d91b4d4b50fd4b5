//! An IOAPIC (82093AA-style, version 0x11, 24 pins) on the MMIO bus, turning device interrupt
//! lines into messages for the local APICs. Pins are edge-triggered.

use std::sync::Arc;

use crate::bus::BusDevice;

/// Guest physical address of the IOAPIC.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Size of its register window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of input pins (GSIs 0..24).
pub const PINS: usize = 24;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REDIR_BASE: u32 = 0x10;
const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);
const MASKED: u64 = 1 << 16;

/// Where an IOAPIC sends its interrupt messages.
pub trait InterruptMessages: Send + Sync {
    /// Delivers `vector` with delivery `mode` to destination `dest` (an APIC ID, or a logical
    /// destination when `logical`).
    fn deliver(&self, dest: u32, logical: bool, mode: u8, vector: u8);
}

/// The IOAPIC.
pub struct IoApic {
    id: u32,
    select: u32,
    redirect: [u64; PINS],
    messages: Arc<dyn InterruptMessages>,
}

impl IoApic {
    /// An IOAPIC with all pins masked, sending to `messages`.
    pub fn new(messages: Arc<dyn InterruptMessages>) -> Self {
        IoApic {
            id: 0,
            select: 0,
            redirect: [MASKED; PINS],
            messages,
        }
    }

    /// An edge on input `pin`: sends its message unless the pin is masked.
    pub fn pulse(&self, pin: usize) {
        let Some(&entry) = self.redirect.get(pin) else {
            return;
        };
        if entry & MASKED != 0 {
            return;
        }
        let vector = entry as u8;
        let mode = ((entry >> 8) & 7) as u8;
        let logical = entry & (1 << 11) != 0;
        let dest = (entry >> 56) as u32;
        self.messages.deliver(dest, logical, mode, vector);
    }

    fn read_reg(&self) -> u32 {
        match self.select {
            REG_ID => self.id << 24,
            REG_VERSION => VERSION,
            REG_ARB => self.id << 24,
            r if (REDIR_BASE..REDIR_BASE + 2 * PINS as u32).contains(&r) => {
                let entry = self.redirect[((r - REDIR_BASE) / 2) as usize];
                if r % 2 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, value: u32) {
        match self.select {
            REG_ID => self.id = (value >> 24) & 0xf,
            r if (REDIR_BASE..REDIR_BASE + 2 * PINS as u32).contains(&r) => {
                let e = &mut self.redirect[((r - REDIR_BASE) / 2) as usize];
                if r % 2 == 0 {
                    // Delivery status and remote IRR (bits 12, 14) are read-only.
                    let keep = *e & (0xffff_ffff_0000_0000 | (1 << 12) | (1 << 14));
                    *e = keep | u64::from(value & !((1 << 12) | (1 << 14)));
                } else {
                    *e = (*e & 0xffff_ffff) | (u64::from(value) << 32);
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for IoApic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            IOREGSEL => self.select,
            IOWIN => self.read_reg(),
            _ => 0,
        };
        for (n, b) in data.iter_mut().enumerate() {
            *b = v.to_le_bytes().get(n).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.select = v & 0xff,
            IOWIN => self.write_reg(v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sent(Mutex<Vec<(u32, bool, u8, u8)>>);

    impl InterruptMessages for Sent {
        fn deliver(&self, dest: u32, logical: bool, mode: u8, vector: u8) {
            self.0.lock().unwrap().push((dest, logical, mode, vector));
        }
    }

    fn reg_write(io: &mut IoApic, reg: u32, v: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes());
    }

    fn reg_read(io: &mut IoApic, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn programmed_pin_sends_its_message_and_masked_pins_do_not() {
        let sent = Arc::new(Sent::default());
        let mut io = IoApic::new(sent.clone());
        assert_eq!(reg_read(&mut io, REG_VERSION), VERSION);
        io.pulse(4);
        assert!(sent.0.lock().unwrap().is_empty(), "masked at reset");
        reg_write(&mut io, REDIR_BASE + 9, 0x0100_0000);
        reg_write(&mut io, REDIR_BASE + 8, 0x0000_0824);
        io.pulse(4);
        assert_eq!(sent.0.lock().unwrap().as_slice(), &[(1, true, 0, 0x24)]);
        assert_eq!(reg_read(&mut io, REDIR_BASE + 8), 0x824);
        io.pulse(99);
    }
}
