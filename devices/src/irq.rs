//! Interrupt lines from devices to whichever interrupt controller the vCPU backend has.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// An edge-triggered interrupt input of the platform's interrupt controller.
///
/// Devices hold one per interrupt they raise and never learn what is behind it: an `irqfd`
/// into KVM's in-kernel IOAPIC, or the software CPU's own controller.
pub trait InterruptLine: Send + Sync {
    /// Raises an interrupt edge.
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt line backed by an eventfd (registered with KVM as an irqfd).
pub struct EventFdLine(pub EventFd);

impl InterruptLine for EventFdLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Adapts an [`InterruptLine`] to vm-superio's trigger trait.
#[derive(Clone)]
pub struct IrqTrigger(pub Arc<dyn InterruptLine>);

impl vm_superio::Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}
