//! A pair of cascaded 8259A programmable interrupt controllers (master on ports 0x20-0x21,
//! slave on 0xa0-0xa1, cascaded on master input 2), for the software CPU. Inputs are
//! edge-triggered. The master's INT output goes to the boot vCPU's LINT0 (ExtINT); the CPU
//! fetches the vector with [`Pic::acknowledge`], the INTA cycle.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::irq::InterruptLine;

/// Port of the master's command register; the device sees port `p` at offset
/// `p - PIC_MASTER_PORT`.
pub const PIC_MASTER_PORT: u64 = 0x20;
/// Port of the slave's command register.
pub const PIC_SLAVE_PORT: u64 = 0xa0;
/// Ports of each chip (command, data).
pub const PIC_PORTS: u64 = 2;
/// The master input the slave is cascaded on.
const CASCADE_IRQ: u8 = 2;

/// One 8259A.
#[derive(Debug, Default, Clone)]
struct Chip {
    /// Interrupt request register.
    irr: u8,
    /// Interrupt mask register.
    imr: u8,
    /// In-service register.
    isr: u8,
    /// Vector of input 0 (ICW2, low three bits clear).
    base: u8,
    /// Input with the highest priority (rotation).
    priority_base: u8,
    /// The command port reads the ISR rather than the IRR.
    read_isr: bool,
    /// The next command-port read is a poll.
    poll: bool,
    /// Special mask mode: masked in-service levels do not block lower ones.
    special_mask: bool,
    /// End of interrupt on acknowledge (ICW4 bit 1).
    auto_eoi: bool,
    /// Rotate priority on automatic EOI.
    rotate_on_auto_eoi: bool,
    /// Initialization words still expected: ICW2, ICW3, ICW4.
    init_step: u8,
    /// ICW4 will follow (ICW1 bit 0).
    expect_icw4: bool,
    /// No cascade, so no ICW3 (ICW1 bit 1).
    single: bool,
}

impl Chip {
    /// The priority order starting at the highest-priority input.
    fn by_priority(&self) -> impl Iterator<Item = u8> + '_ {
        (0..8).map(move |i| (self.priority_base + i) & 7)
    }

    /// The highest-priority input in service, if any (masked levels skipped in special mask
    /// mode).
    fn highest_in_service(&self) -> Option<u8> {
        let isr = if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        };
        self.by_priority().find(|&i| isr & (1 << i) != 0)
    }

    /// The input that would interrupt now: requested, unmasked and of higher priority than
    /// everything in service.
    fn deliverable(&self) -> Option<u8> {
        let requested = self.irr & !self.imr;
        let blocker = self.highest_in_service();
        for i in self.by_priority() {
            if Some(i) == blocker {
                return None;
            }
            if requested & (1 << i) != 0 {
                return Some(i);
            }
        }
        None
    }

    /// Takes input `irq` into service (the INTA cycle).
    fn accept(&mut self, irq: u8) {
        self.irr &= !(1 << irq);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_base = (irq + 1) & 7;
            }
        } else {
            self.isr |= 1 << irq;
        }
    }

    fn end_of_interrupt(&mut self, irq: u8, rotate: bool) {
        self.isr &= !(1 << irq);
        if rotate {
            self.priority_base = (irq + 1) & 7;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: reinitialize.
            *self = Chip {
                base: self.base,
                expect_icw4: value & 1 != 0,
                single: value & 2 != 0,
                init_step: 1,
                ..Chip::default()
            };
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            self.poll = value & 0x04 != 0;
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0b001 | 0b101 => {
                    if let Some(irq) = self.highest_in_service() {
                        self.end_of_interrupt(irq, value & 0x80 != 0);
                    }
                }
                0b011 | 0b111 => self.end_of_interrupt(level, value & 0x80 != 0),
                0b100 => self.rotate_on_auto_eoi = true,
                0b000 => self.rotate_on_auto_eoi = false,
                0b110 => self.priority_base = (level + 1) & 7,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_step {
            1 => {
                self.base = value & 0xf8;
                self.init_step = match (self.single, self.expect_icw4) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_step = if self.expect_icw4 { 3 } else { 0 },
            3 => {
                self.auto_eoi = value & 0x02 != 0;
                self.init_step = 0;
            }
            _ => self.imr = value,
        }
    }
}

/// The cascaded pair.
pub struct Pic {
    chips: [Chip; 2],
    /// The master's INT output: the boot vCPU's LINT0.
    output: Arc<dyn InterruptLine>,
}

impl Pic {
    /// A pair in the power-on state (uninitialized, everything unmasked), raising `output`
    /// when an interrupt becomes deliverable.
    pub fn new(output: Arc<dyn InterruptLine>) -> Self {
        Pic {
            chips: [Chip::default(), Chip::default()],
            output,
        }
    }

    /// Initializes both chips as a PC BIOS does: vectors at `master_base` and `slave_base`,
    /// the slave on input 2, normal EOI, and the given masks.
    pub fn set_bios_state(
        &mut self,
        master_base: u8,
        master_mask: u8,
        slave_base: u8,
        slave_mask: u8,
    ) {
        for (chip, base, mask) in [(0, master_base, master_mask), (1, slave_base, slave_mask)] {
            self.chips[chip] = Chip {
                base: base & 0xf8,
                imr: mask,
                ..Chip::default()
            };
        }
    }

    /// An edge on ISA interrupt `irq` (0..16); others are ignored.
    pub fn pulse(&mut self, irq: u32) {
        match irq {
            0..=7 => self.chips[0].irr |= 1 << irq,
            8..=15 => self.chips[1].irr |= 1 << (irq - 8),
            _ => return,
        }
        self.update();
    }

    /// The INTA cycle: takes the highest-priority deliverable interrupt into service and
    /// returns its vector, or `None` when nothing is deliverable.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.take_highest();
        self.update();
        vector
    }

    fn take_highest(&mut self) -> Option<u8> {
        self.cascade();
        let irq = self.chips[0].deliverable()?;
        self.chips[0].accept(irq);
        if irq != CASCADE_IRQ {
            return Some(self.chips[0].base | irq);
        }
        let slave = &mut self.chips[1];
        let vector = match slave.deliverable() {
            Some(irq) => {
                slave.accept(irq);
                slave.base | irq
            }
            // The request went away: the slave answers with its spurious vector.
            None => slave.base | 7,
        };
        Some(vector)
    }

    /// Reflects the slave's output on master input 2.
    fn cascade(&mut self) {
        if self.chips[1].deliverable().is_some() {
            self.chips[0].irr |= 1 << CASCADE_IRQ;
        }
    }

    /// Raises the output when an interrupt is deliverable.
    fn update(&mut self) {
        self.cascade();
        if self.chips[0].deliverable().is_some() {
            if let Err(e) = self.output.trigger() {
                log::warn!("8259 output: {e}");
            }
        }
    }

    fn read(&mut self, chip: usize, port: u64) -> u8 {
        if port == 1 {
            return self.chips[chip].imr;
        }
        if self.chips[chip].poll {
            self.chips[chip].poll = false;
            return self.poll(chip);
        }
        let c = &self.chips[chip];
        if c.read_isr {
            c.isr
        } else {
            c.irr
        }
    }

    /// A poll command: acknowledges the chip's highest request without a vector cycle.
    fn poll(&mut self, chip: usize) -> u8 {
        if chip == 0 {
            self.cascade();
        }
        let c = &mut self.chips[chip];
        let result = match c.deliverable() {
            Some(irq) => {
                c.accept(irq);
                0x80 | irq
            }
            None => 0,
        };
        self.update();
        result
    }

    fn write(&mut self, chip: usize, port: u64, value: u8) {
        if port == 0 {
            self.chips[chip].write_command(value);
        } else {
            self.chips[chip].write_data(value);
        }
        self.update();
    }
}

impl BusDevice for Pic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let value = match offset {
            0 | 1 => Pic::read(self, 0, offset),
            0x80 | 0x81 => Pic::read(self, 1, offset - 0x80),
            _ => return,
        };
        if let Some(byte) = data.first_mut() {
            *byte = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            0 | 1 => Pic::write(self, 0, offset, value),
            0x80 | 0x81 => Pic::write(self, 1, offset - 0x80, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl InterruptLine for Counter {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A pair programmed as Linux programs it: vectors 0x20 and 0x28, slave on 2.
    fn linux_pic() -> (Pic, Arc<Counter>) {
        let out = Arc::new(Counter::default());
        let mut pic = Pic::new(out.clone());
        for (chip, base, icw3) in [(0, 0x20, 0x04), (1, 0x28, 0x02)] {
            pic.write(chip, 0, 0x11);
            pic.write(chip, 1, base);
            pic.write(chip, 1, icw3);
            pic.write(chip, 1, 0x01);
            pic.write(chip, 1, 0x00);
        }
        (pic, out)
    }

    #[test]
    fn delivers_by_priority_and_blocks_lower_levels_until_eoi() {
        let (mut pic, out) = linux_pic();
        pic.pulse(4);
        pic.pulse(1);
        assert!(out.0.load(Ordering::SeqCst) >= 1, "INT raised");
        assert_eq!(pic.acknowledge(), Some(0x21));
        assert_eq!(pic.acknowledge(), None, "IRQ4 waits behind IRQ1 in service");
        assert_eq!(pic.read(0, 0), 0x10, "IRR shows IRQ4");
        pic.write(0, 0, 0x0b);
        assert_eq!(pic.read(0, 0), 0x02, "ISR shows IRQ1");
        pic.write(0, 0, 0x20);
        assert_eq!(pic.acknowledge(), Some(0x24));
    }

    #[test]
    fn masked_inputs_wait_and_slave_cascades_through_input_2() {
        let (mut pic, _) = linux_pic();
        pic.write(1, 1, 0xff);
        pic.pulse(12);
        assert_eq!(pic.acknowledge(), None);
        pic.write(1, 1, 0x00);
        assert_eq!(pic.acknowledge(), Some(0x2c));
        assert_eq!(pic.chips[0].isr, 1 << CASCADE_IRQ);
        assert_eq!(pic.chips[1].isr, 1 << 4);
        pic.write(1, 0, 0x64);
        pic.write(0, 0, 0x62);
        assert_eq!((pic.chips[0].isr, pic.chips[1].isr), (0, 0));
    }

    #[test]
    fn auto_eoi_and_bios_state() {
        let out = Arc::new(Counter::default());
        let mut pic = Pic::new(out);
        pic.write(0, 0, 0x13);
        pic.write(0, 1, 0x08);
        pic.write(0, 1, 0x03);
        pic.pulse(0);
        assert_eq!(pic.acknowledge(), Some(0x08));
        assert_eq!(pic.chips[0].isr, 0, "auto EOI");

        pic.set_bios_state(0x08, 0xfa, 0x70, 0xff);
        pic.pulse(1);
        assert_eq!(pic.acknowledge(), None, "IRQ1 masked");
        pic.pulse(0);
        assert_eq!(pic.acknowledge(), Some(0x08));
    }

    #[test]
    fn poll_mode_acknowledges_without_a_vector() {
        let (mut pic, _) = linux_pic();
        pic.pulse(3);
        pic.write(0, 0, 0x0c);
        assert_eq!(pic.read(0, 0), 0x83);
        assert_eq!(pic.chips[0].isr, 1 << 3);
    }

    #[test]
    fn bus_offsets_decode_both_chips() {
        let (mut pic, _) = linux_pic();
        BusDevice::write(&mut pic, 0x81, &[0x5a]);
        let mut byte = [0u8];
        BusDevice::read(&mut pic, 0x81, &mut byte);
        assert_eq!(byte[0], 0x5a);
        BusDevice::read(&mut pic, 1, &mut byte);
        assert_eq!(byte[0], 0x00, "master mask unchanged");
    }
}
