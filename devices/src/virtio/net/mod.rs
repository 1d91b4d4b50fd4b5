//! virtio-net on a tap device: one receive and one transmit queue, the 12-byte virtio-net
//! header on both and on the tap, MRG_RXBUF, checksum and segmentation offloads where the tap
//! accepts them (set on the tap from what the driver acked), a rate limiter each way.
//!
//! Back-pressure, never silent loss: a frame read from the tap waits in the device until the
//! guest has room for it, and while it waits the tap is not read (its descriptor leaves the
//! event loop), so frames queue in the host kernel instead; a frame the tap cannot take yet
//! stays in the transmit queue until the tap is writable. What is dropped (a frame larger
//! than the guest's buffers can ever hold, one the tap refuses) is counted as an error.
//! Counters: bytes and frames to the guest (received) and from it (sent), errors, throttling.

mod header;
mod rx;
pub mod tap;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod tx;

use std::io::ErrorKind;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

use super::activation::{watch_limiter, DEVICE_TOKEN_BASE};
use super::{
    read_config_bytes, ActiveQueues, Counters, DeviceCore, Handled, VirtioDevice, COMMON_FEATURES,
};
use crate::rate_limiter::{BucketConfig, RateLimiter};
use header::{offered_offloads, tap_offloads, HEADER_LEN};
use rx::{wait_for_buffers, Delivery, Receiver};
use tap::Tap;
use tx::{Link, Transmitter};

/// Each queue's size.
const QUEUE_SIZE: u16 = 256;
/// The receive queue's index.
const RX_QUEUE: usize = 0;
/// The transmit queue's index.
const TX_QUEUE: usize = 1;
/// Frames moved each way per wake-up before the loop moves on to other devices.
const BUDGET: usize = 64;
/// Event data of the tap descriptor.
const TAP_TOKEN: u32 = DEVICE_TOKEN_BASE;
/// Event data of the receive rate limiter's timer.
const RX_LIMITER_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
/// Event data of the transmit rate limiter's timer.
const TX_LIMITER_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;
/// Feature bit: merged receive buffers.
const MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;

/// The network device.
pub struct Net {
    name: String,
    tap: Tap,
    mac: Option<[u8; 6]>,
    core: DeviceCore,
    rx: Receiver,
    rx_limiter: RateLimiter,
    tx: Transmitter,
    tx_limiter: RateLimiter,
    /// The features the driver acked, while the queues are active.
    acked: u64,
    /// Whether the tap failed for good (its interface went away): it is no longer watched.
    tap_failed: bool,
    /// What the event loop watches the tap for (empty: not watched).
    watched: EventSet,
}

impl Net {
    /// A network device on `tap` with the guest MAC address `mac` (None: the driver picks
    /// one); `name` (the interface ID) names it in logs.
    pub fn new(
        name: &str,
        tap: Tap,
        mac: Option<[u8; 6]>,
        rx_limiter: RateLimiter,
        tx_limiter: RateLimiter,
    ) -> std::io::Result<Self> {
        Ok(Net {
            name: format!("virtio-net {name}"),
            tap,
            mac,
            core: DeviceCore::new()?,
            rx: Receiver::new(QUEUE_SIZE),
            rx_limiter,
            tx: Transmitter::new(),
            tx_limiter,
            acked: 0,
            tap_failed: false,
            watched: EventSet::empty(),
        })
    }

    /// Replaces the buckets of the receive and transmit rate limiters.
    pub fn update_limiters(
        &mut self,
        rx: (Option<BucketConfig>, Option<BucketConfig>),
        tx: (Option<BucketConfig>, Option<BucketConfig>),
    ) {
        self.rx_limiter.update(rx.0, rx.1);
        self.tx_limiter.update(tx.0, tx.1);
    }

    fn config_space(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0..6].copy_from_slice(&self.mac.unwrap_or_default());
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        c
    }

    /// Sends what the guest has queued, up to the budget.
    fn serve_tx(&mut self) {
        let counters = self.core.counters.clone();
        let mut link = Link {
            tap: &self.tap,
            limiter: &mut self.tx_limiter,
            counters: &counters,
            name: &self.name,
        };
        let tx = &mut self.tx;
        self.core.serve(&self.name, TX_QUEUE, BUDGET, |mem, chain| {
            tx.send(mem, chain, &mut link)
        });
    }

    /// Moves frames from the tap into the guest, up to the budget, until the tap is empty,
    /// the guest has no room or the rate limiter says wait.
    fn serve_rx(&mut self) {
        let signals = self.core.signals.clone();
        if signals.is_broken() {
            return;
        }
        let mergeable = self.acked & MRG_RXBUF != 0;
        let Some(active) = self.core.activation.active() else {
            return;
        };
        let (mem, Some(queue)) = (&active.mem, active.queues.get_mut(RX_QUEUE)) else {
            return;
        };
        let mut path = Receive {
            tap: &self.tap,
            rx: &mut self.rx,
            limiter: &mut self.rx_limiter,
            counters: &self.core.counters,
            name: &self.name,
            tap_failed: &mut self.tap_failed,
            delivered: 0,
        };
        let result = path.run(queue, mem, mergeable);
        if path.delivered > 0 && queue.needs_notification(mem).unwrap_or(true) {
            signals.used_buffers();
        }
        if let Err(why) = result {
            Counters::add(&self.core.counters.errors, 1);
            signals.needs_reset(&self.name, &why);
        }
    }

    /// What the device waits for from the tap: frames to read while none waits for the
    /// guest, room to write while a frame waits for the tap; nothing while it is not running.
    fn wanted_events(&self) -> EventSet {
        let running =
            self.core.activation.is_active() && !self.core.signals.is_broken() && !self.tap_failed;
        let mut want = EventSet::empty();
        if running && self.rx.waiting().is_none() {
            want |= EventSet::IN;
        }
        if running && self.tx.is_blocked() {
            want |= EventSet::OUT;
        }
        want
    }

    /// Makes the event loop watch the tap for [`Net::wanted_events`].
    fn update_watch(&mut self, ops: &mut EventOps) {
        let want = self.wanted_events();
        if want == self.watched {
            return;
        }
        let events = Events::with_data(&self.tap, TAP_TOKEN, want);
        let result = if self.watched.is_empty() {
            ops.add(events)
        } else if want.is_empty() {
            ops.remove(events)
        } else {
            ops.modify(events)
        };
        match result {
            Ok(()) => self.watched = want,
            Err(e) => log::error!("{}: cannot watch the tap: {e:?}", self.name),
        }
    }
}

/// What moving frames into the guest needs.
struct Receive<'a> {
    tap: &'a Tap,
    rx: &'a mut Receiver,
    limiter: &'a mut RateLimiter,
    counters: &'a Counters,
    name: &'a str,
    tap_failed: &'a mut bool,
    /// Frames put into the receive queue.
    delivered: usize,
}

impl Receive<'_> {
    fn run(
        &mut self,
        queue: &mut virtio_queue::Queue,
        mem: &crate::GuestMemory,
        mergeable: bool,
    ) -> Result<(), String> {
        queue
            .disable_notification(mem)
            .map_err(|e| format!("receive queue: {e}"))?;
        for _ in 0..BUDGET {
            let Some(len) = self.next_frame() else {
                return Ok(());
            };
            let payload = (len - HEADER_LEN) as u64;
            if !self.rx.is_charged() {
                if !self.limiter.consume(payload) {
                    Counters::add(&self.counters.throttled, 1);
                    return Ok(());
                }
                self.rx.charge();
            }
            match self.rx.deliver(queue, mem, mergeable)? {
                Delivery::Delivered(_) => {
                    Counters::add(&self.counters.bytes_to_guest, payload);
                    Counters::add(&self.counters.ops_to_guest, 1);
                    self.delivered += 1;
                }
                Delivery::TooLarge => {
                    Counters::add(&self.counters.errors, 1);
                    log::debug!(
                        "{}: dropped a {len}-byte frame: the guest's buffers cannot hold it",
                        self.name
                    );
                    self.rx.discard();
                }
                Delivery::NoRoom => {
                    if !wait_for_buffers(queue, mem)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The waiting frame's length, reading one from the tap if none waits; None when the tap
    /// has nothing (or failed).
    fn next_frame(&mut self) -> Option<usize> {
        if let Some(len) = self.rx.waiting() {
            return Some(len);
        }
        if *self.tap_failed {
            return None;
        }
        loop {
            match self.tap.read(self.rx.buffer()) {
                Ok(n) if n > HEADER_LEN => {
                    self.rx.hold(n);
                    return Some(n);
                }
                Ok(n) => {
                    Counters::add(&self.counters.errors, 1);
                    log::debug!("{}: the tap gave a {n}-byte frame", self.name);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    Counters::add(&self.counters.errors, 1);
                    log::error!("{}: reading the tap failed, receive stops: {e}", self.name);
                    *self.tap_failed = true;
                    return None;
                }
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mac = if self.mac.is_some() {
            1 << VIRTIO_NET_F_MAC
        } else {
            0
        };
        COMMON_FEATURES
            | MRG_RXBUF
            | 1 << VIRTIO_NET_F_STATUS
            | mac
            | offered_offloads(self.tap.accepted_offloads())
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    fn activate(&mut self, queues: ActiveQueues) -> Result<(), String> {
        let flags = tap_offloads(queues.acked_features);
        self.tap
            .set_offloads(flags)
            .map_err(|e| format!("cannot set the tap's offloads to {flags:#x}: {e}"))?;
        self.acked = queues.acked_features;
        self.rx.discard();
        self.tx.reset();
        self.core.activation.activate(queues)
    }

    fn reset(&mut self) {
        self.core.activation.reset();
        self.acked = 0;
        self.rx.discard();
        self.tx.reset();
        if let Err(e) = self.tap.set_offloads(0) {
            log::warn!("{}: cannot turn the tap's offloads off: {e}", self.name);
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.activation.init(ops);
        watch_limiter(ops, &self.rx_limiter, RX_LIMITER_TOKEN, &self.name);
        watch_limiter(ops, &self.tx_limiter, TX_LIMITER_TOKEN, &self.name);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.core.handle(&events, ops) {
            Handled::Activation => {
                self.serve_tx();
                self.serve_rx();
            }
            Handled::Queue(RX_QUEUE) => self.serve_rx(),
            Handled::Queue(_) => self.serve_tx(),
            Handled::Device(TAP_TOKEN) => {
                let ready = events.event_set();
                if ready.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    // A tap reports these only once detached from its interface, for good.
                    log::error!("{}: the tap failed (its interface is gone?)", self.name);
                    self.tap_failed = true;
                }
                if ready.contains(EventSet::OUT) {
                    self.tx.unblock();
                    self.serve_tx();
                }
                if ready.contains(EventSet::IN) {
                    self.serve_rx();
                }
            }
            Handled::Device(RX_LIMITER_TOKEN) => {
                self.rx_limiter.timer_expired();
                self.serve_rx();
            }
            Handled::Device(TX_LIMITER_TOKEN) => {
                self.tx_limiter.timer_expired();
                self.serve_tx();
            }
            Handled::Device(other) => log::debug!("{}: unexpected event {other}", self.name),
        }
        self.update_watch(ops);
    }
}
