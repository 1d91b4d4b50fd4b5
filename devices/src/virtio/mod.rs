//! Virtio 1.x devices over the MMIO transport (version 2).
//!
//! A device sees guest memory, one eventfd per queue (written by the driver's notification:
//! an ioeventfd under KVM, the transport itself under the software CPU) and its [`Signals`]
//! (interrupt status bits behind one interrupt eventfd: an irqfd under KVM, routed into the
//! software IOAPIC otherwise). It never learns which backend runs the guest. Queue work runs
//! on the VMM's event loop: each device is an event-manager subscriber.

pub mod activation;
pub mod balloon;
pub mod block;
pub mod chain;
pub mod iov;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod serve;
pub mod signals;
pub mod vsock;

use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemory;

pub use activation::{DeviceCore, Handled};
pub use signals::Signals;

/// Feature bit: a virtio 1.x device (the only kind Ember offers).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit: descriptors may point to tables of descriptors.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// Feature bit: used_event/avail_event suppress notifications and interrupts.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// Features every Ember device offers.
pub const COMMON_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

/// What a device is given when the driver sets DRIVER_OK.
pub struct ActiveQueues {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues as the driver configured them, in index order; the ones it uses are
    /// validated, any others are not ready.
    pub queues: Vec<Queue>,
    /// Each queue's notification eventfd.
    pub events: Vec<EventFd>,
    /// The features the driver accepted.
    pub acked_features: u64,
}

/// What a device has done, for the VMM's metrics. Each device says what its directions
/// mean (a block read is data to the guest, a network transmit data from it).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes the device put into guest buffers.
    pub bytes_to_guest: AtomicU64,
    /// Bytes the device took from guest buffers.
    pub bytes_from_guest: AtomicU64,
    /// Requests or packets that carried data to the guest.
    pub ops_to_guest: AtomicU64,
    /// Requests or packets that carried data from the guest.
    pub ops_from_guest: AtomicU64,
    /// Queue notifications from the driver.
    pub notifications: AtomicU64,
    /// Requests that failed, and driver errors.
    pub errors: AtomicU64,
    /// Times a rate limiter held the device back.
    pub throttled: AtomicU64,
    /// Connections made (virtio-vsock).
    pub connections: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A virtio device as its transport drives it.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// The largest size of each queue the device has.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers (including [`COMMON_FEATURES`]).
    fn features(&self) -> u64;
    /// How many queues, from the first, a driver that accepted `acked_features` must set up;
    /// the rest may stay unready.
    fn queues_used(&self, _acked_features: u64) -> usize {
        self.queue_max_sizes().len()
    }
    /// Reads the device-specific configuration space at `offset`; bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space; devices whose configuration is read-only ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio device {}: ignored a {}-byte config write at {offset:#x}",
            self.device_type(),
            data.len()
        );
    }
    /// The state every device has.
    fn core(&self) -> &DeviceCore;
    /// The same, to change.
    fn core_mut(&mut self) -> &mut DeviceCore;
    /// Starts the device with the driver's queues. An error marks the device as needing a
    /// reset.
    fn activate(&mut self, queues: ActiveQueues) -> Result<(), String> {
        self.core_mut().activation.activate(queues)
    }
    /// Stops the device and forgets the queues (the driver wrote 0 to the status register).
    fn reset(&mut self) {
        self.core_mut().activation.reset();
    }
}

/// Reads `data.len()` bytes of a configuration space laid out in `config` from `offset`;
/// bytes past its end read as 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}
