//! Interrupt messages between local APICs: IPIs from the ICR, and messages from the IOAPIC.

use std::sync::Arc;

use super::lapic::{Inbox, IpiBus};

/// Delivery modes of APIC messages.
const FIXED: u8 = 0;
const LOWEST_PRIORITY: u8 = 1;
const NMI: u8 = 4;
const INIT: u8 = 5;
const STARTUP: u8 = 6;
const EXTINT: u8 = 7;

/// The APICs of a VM, by vCPU.
pub struct ApicBus {
    inboxes: Vec<Arc<Inbox>>,
}

impl ApicBus {
    /// A bus connecting `inboxes`.
    pub fn new(inboxes: Vec<Arc<Inbox>>) -> Self {
        ApicBus { inboxes }
    }

    /// Delivers an interrupt message: `mode` is the delivery mode, `dest` an APIC ID
    /// (physical) or logical destination.
    pub fn deliver(&self, dest: u32, logical: bool, mode: u8, vector: u8) {
        let mut targets = self.inboxes.iter().filter(|b| b.matches(dest, logical));
        if mode == LOWEST_PRIORITY {
            // Any one target will do; take the first.
            if let Some(b) = targets.next() {
                b.post_vector(vector);
            }
            return;
        }
        for b in targets {
            post(b, mode, vector);
        }
    }
}

fn post(inbox: &Inbox, mode: u8, vector: u8) {
    match mode {
        FIXED | LOWEST_PRIORITY => inbox.post_vector(vector),
        NMI => inbox.post(Inbox::NMI),
        INIT => inbox.post(Inbox::INIT),
        STARTUP => inbox.post_sipi(vector),
        EXTINT => inbox.post(Inbox::EXTINT),
        _ => log::debug!("APIC message with delivery mode {mode} dropped"),
    }
}

impl IpiBus for ApicBus {
    fn send_ipi(&self, source: u32, icr: u64) {
        let vector = icr as u8;
        let mode = ((icr >> 8) & 7) as u8;
        let logical = icr & (1 << 11) != 0;
        let assert = icr & (1 << 14) != 0;
        let level_triggered = icr & (1 << 15) != 0;
        if mode == INIT && !assert && level_triggered {
            // INIT level de-assert: no effect on modern processors.
            return;
        }
        let dest = (icr >> 56) as u32;
        match (icr >> 18) & 3 {
            0 => self.deliver(dest, logical, mode, vector),
            1 => {
                if let Some(b) = self.inboxes.iter().find(|b| b.id() == source) {
                    post(b, mode, vector);
                }
            }
            2 => self.inboxes.iter().for_each(|b| post(b, mode, vector)),
            _ => self
                .inboxes
                .iter()
                .filter(|b| b.id() != source)
                .for_each(|b| post(b, mode, vector)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(n: u32) -> (ApicBus, Vec<Arc<Inbox>>) {
        let inboxes: Vec<_> = (0..n).map(|i| Arc::new(Inbox::new(i))).collect();
        (ApicBus::new(inboxes.clone()), inboxes)
    }

    #[test]
    fn fixed_ipi_to_one_cpu_and_init_sipi_to_all_others() {
        let (bus, boxes) = bus(3);
        bus.send_ipi(0, (2u64 << 56) | 0x4030);
        assert!(!boxes[1].is_pending());
        assert_eq!(boxes[2].take().0[0], 1 << 0x30);
        // INIT, all excluding self; then STARTUP vector 0x08.
        bus.send_ipi(0, (3 << 18) | (1 << 14) | (5 << 8));
        bus.send_ipi(0, (3 << 18) | (1 << 14) | (6 << 8) | 0x08);
        assert!(!boxes[0].is_pending());
        for b in &boxes[1..] {
            assert_eq!(b.take().1, Inbox::INIT | Inbox::SIPI);
            assert_eq!(b.sipi_vector(), 0x08);
        }
    }

    #[test]
    fn init_deassert_is_ignored() {
        let (bus, boxes) = bus(2);
        bus.send_ipi(0, (1u64 << 56) | (1 << 15) | (5 << 8));
        assert!(!boxes[1].is_pending());
    }
}
