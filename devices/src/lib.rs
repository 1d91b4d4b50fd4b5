//! Ember's devices: the PIO and MMIO buses and backend-neutral device models.
//!
//! Nothing here knows which vCPU backend runs the guest: devices see bus accesses, raise
//! interrupts through [`irq::InterruptLine`] and ask the VMM to stop through
//! [`exit::ExitRequester`].

pub mod acpi_pm;
pub mod bus;
pub mod exit;
pub mod intc;
pub mod irq;
pub mod legacy;

pub use exit::GuestExit;
