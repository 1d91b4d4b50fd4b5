//! What a virtio device tells its driver outside the queues: the interrupt status bits (used
//! buffers, configuration changed) behind one interrupt eventfd, the configuration
//! generation, and that the device needs a reset.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A device's interrupt and status signals, shared by the device (on the event loop) and its
/// transport (on vCPU threads).
pub struct Signals {
    interrupt_status: AtomicU32,
    config_generation: AtomicU32,
    needs_reset: AtomicBool,
    /// Written once per interrupt edge; the VMM routes it to the interrupt controller.
    interrupt: EventFd,
    interrupts: AtomicU64,
}

impl Signals {
    /// New signals with a fresh interrupt eventfd.
    pub fn new() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt_status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            interrupt: EventFd::new(EFD_NONBLOCK)?,
            interrupts: AtomicU64::new(0),
        })
    }

    /// The eventfd the VMM connects to the device's interrupt line.
    pub fn interrupt_event(&self) -> &EventFd {
        &self.interrupt
    }

    fn raise(&self, bit: u32) {
        self.interrupt_status.fetch_or(bit, Ordering::SeqCst);
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        // Fails only if the counter would overflow, and then an edge is pending anyway.
        let _ = self.interrupt.write(1);
    }

    /// Tells the driver that buffers were used.
    pub fn used_buffers(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// Tells the driver that the device configuration changed.
    pub fn config_changed(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// Marks the device as needing a reset (it stops using its queues) and tells the driver,
    /// with a log line saying why.
    pub fn needs_reset(&self, device: &str, why: &str) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            log::warn!(
                "{device}: the guest driver broke the device, which now needs a reset: {why}"
            );
            self.raise(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    /// Whether the device needs a reset.
    pub fn is_broken(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Interrupts raised so far.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn acknowledge(&self, bits: u32) {
        self.interrupt_status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The ConfigGeneration register.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Back to the state of a new device (the driver reset it).
    pub fn reset(&self) {
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}
