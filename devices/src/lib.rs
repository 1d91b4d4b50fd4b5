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
pub mod rate_limiter;
pub mod virtio;

pub use exit::GuestExit;

/// Guest memory as devices reach it (the same type the VMM maps); writes through it can be
/// watched (see the `memory` crate).
pub use memory::GuestMemory;
