//! The virtio-mmio transport, version 2 (modern virtio 1.x), as a device on the MMIO bus.
//!
//! It keeps the driver's view of the device (status, features, queue setup) and checks every
//! write: the status may only advance in the order the specification gives, features only
//! before FEATURES_OK and only those offered (VERSION_1 included), queues only before
//! DRIVER_OK and only with sizes and addresses that fit. Anything else is ignored with a log
//! line, or, where the driver could otherwise wedge the device, marks the device as needing a
//! reset. QueueNotify writes go to the queue's eventfd, which is also what KVM's ioeventfd
//! signals, so the device sees notifications the same way on both backends.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActiveQueues, Signals, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::bus::{lock, BusDevice};
use crate::GuestMemory;

/// Bytes of MMIO space one device takes.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The transport version: modern virtio-mmio.
const VERSION: u32 = 2;
/// Vendor ID reported to the driver.
const VENDOR_ID: u32 = 0x454d_4252; // "EMBR"

/// The transport of one virtio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    signals: Arc<Signals>,
    mem: GuestMemory,
    name: String,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    /// Queues the driver gave a size that is 0, too large or not a power of two.
    bad_sizes: Vec<bool>,
    queue_events: Vec<EventFd>,
}

impl MmioTransport {
    /// A transport for `device` over guest memory `mem`; `name` identifies it in logs.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemory,
        name: impl Into<String>,
    ) -> std::io::Result<Self> {
        let (signals, sizes) = {
            let d = lock(&device);
            (d.core().signals.clone(), d.queue_max_sizes().to_vec())
        };
        let queues = sizes
            .iter()
            .map(|&max| Queue::new(max).map_err(|e| std::io::Error::other(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_events = sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            signals,
            mem,
            name: name.into(),
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            bad_sizes: vec![false; queues.len()],
            queues,
            queue_events,
        })
    }

    /// The notification eventfd of each queue (for KVM's ioeventfds), in queue order.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device's interrupt eventfd (for KVM's irqfd or the software IOAPIC).
    pub fn interrupt_event(&self) -> &EventFd {
        self.signals.interrupt_event()
    }

    fn has(&self, bit: u32) -> bool {
        self.status & bit != 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.has(VIRTIO_CONFIG_S_DRIVER_OK) {
            log::debug!("{}: queue setup after DRIVER_OK ignored", self.name);
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            reg::VIRTIO_MMIO_VERSION => VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => lock(&self.device).device_type(),
            reg::VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => {
                let features = lock(&self.device).features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.signals.interrupt_status(),
            reg::VIRTIO_MMIO_STATUS => {
                let broken = self.signals.is_broken();
                self.status
                    | if broken {
                        VIRTIO_CONFIG_S_NEEDS_RESET
                    } else {
                        0
                    }
            }
            reg::VIRTIO_MMIO_CONFIG_GENERATION => self.signals.config_generation(),
            _ => {
                log::debug!("{}: read of register {offset:#x}", self.name);
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            reg::VIRTIO_MMIO_QUEUE_NUM => {
                let sel = self.queue_sel as usize;
                if let Some(q) = self.selected_queue() {
                    let size = u16::try_from(value).unwrap_or(0);
                    let bad = q.try_set_size(size).is_err();
                    if let Some(flag) = self.bad_sizes.get_mut(sel) {
                        *flag = bad;
                    }
                }
            }
            reg::VIRTIO_MMIO_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::VIRTIO_MMIO_QUEUE_DESC_LOW => {
                self.queue_address(|q| q.set_desc_table_address(Some(value), None))
            }
            reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                self.queue_address(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW => {
                self.queue_address(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                self.queue_address(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::VIRTIO_MMIO_QUEUE_USED_LOW => {
                self.queue_address(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::VIRTIO_MMIO_QUEUE_USED_HIGH => {
                self.queue_address(|q| q.set_used_ring_address(None, Some(value)))
            }
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => {
                if let Some(evt) = self.queue_events.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.signals.acknowledge(value),
            reg::VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => log::debug!(
                "{}: write of {value:#x} to register {offset:#x} ignored",
                self.name
            ),
        }
    }

    fn queue_address(&mut self, set: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            set(q);
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.has(VIRTIO_CONFIG_S_DRIVER) || self.has(VIRTIO_CONFIG_S_FEATURES_OK) {
            log::debug!("{}: features written out of order, ignored", self.name);
            return;
        }
        let (shift, mask) = match self.driver_features_sel {
            0 => (0, 0xffff_ffffu64),
            1 => (32, 0xffff_ffff << 32),
            _ => return,
        };
        self.acked_features = (self.acked_features & !mask) | (u64::from(value) << shift);
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let added = value & !self.status;
        if value & self.status != self.status {
            log::debug!(
                "{}: status {value:#x} clears bits of {:#x}; ignored",
                self.name,
                self.status
            );
            return;
        }
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            log::info!("{}: the guest driver gave up on the device", self.name);
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        let order = [
            VIRTIO_CONFIG_S_ACKNOWLEDGE,
            VIRTIO_CONFIG_S_DRIVER,
            VIRTIO_CONFIG_S_FEATURES_OK,
            VIRTIO_CONFIG_S_DRIVER_OK,
        ];
        for bit in order {
            if added & bit == 0 {
                continue;
            }
            let ready = order
                .iter()
                .take_while(|&&b| b != bit)
                .all(|&b| self.has(b));
            if !ready {
                log::debug!(
                    "{}: status bit {bit:#x} set out of order; ignored",
                    self.name
                );
                return;
            }
            match bit {
                VIRTIO_CONFIG_S_FEATURES_OK if !self.features_acceptable() => return,
                VIRTIO_CONFIG_S_DRIVER_OK => {
                    self.status |= bit;
                    self.activate();
                    continue;
                }
                _ => {}
            }
            self.status |= bit;
        }
    }

    /// Whether the driver's features are a subset of the offer and include VERSION_1 (this
    /// transport is modern only); if not, FEATURES_OK stays clear, which tells the driver.
    fn features_acceptable(&self) -> bool {
        let offered = lock(&self.device).features();
        let ok =
            self.acked_features & !offered == 0 && self.acked_features & VIRTIO_F_VERSION_1 != 0;
        if !ok {
            log::warn!(
                "{}: the driver asked for features {:#x} of {offered:#x} (VERSION_1 is required); \
                 FEATURES_OK refused",
                self.name,
                self.acked_features
            );
        }
        ok
    }

    fn activate(&mut self) {
        if let Some(i) = self.bad_sizes.iter().position(|&bad| bad) {
            self.signals
                .needs_reset(&self.name, &format!("queue {i} was given an invalid size"));
            return;
        }
        let required = lock(&self.device).queues_used(self.acked_features);
        let broken = self.queues.iter().enumerate().position(|(i, q)| {
            let needed = i < required;
            (needed || q.ready()) && !q.is_valid(&self.mem)
        });
        if let Some(i) = broken {
            self.signals.needs_reset(
                &self.name,
                &format!("queue {i} is not ready, or its size or rings do not fit in guest RAM"),
            );
            return;
        }
        let events = match self.queue_events.iter().map(EventFd::try_clone).collect() {
            Ok(events) => events,
            Err(e) => {
                self.signals
                    .needs_reset(&self.name, &format!("cannot share queue eventfds: {e}"));
                return;
            }
        };
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let copies: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| {
                let mut state = q.state();
                state.event_idx_enabled = event_idx;
                Queue::try_from(state)
            })
            .collect();
        let copies = match copies {
            Ok(copies) => copies,
            Err(e) => {
                self.signals
                    .needs_reset(&self.name, &format!("queue setup: {e}"));
                return;
            }
        };
        let queues = ActiveQueues {
            mem: self.mem.clone(),
            queues: copies,
            events,
            acked_features: self.acked_features,
        };
        if let Err(why) = lock(&self.device).activate(queues) {
            self.signals.needs_reset(&self.name, &why);
        }
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        self.signals.reset();
        self.status = 0;
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_sizes.fill(false);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(reg::VIRTIO_MMIO_CONFIG) {
            lock(&self.device).read_config(offset - u64::from(reg::VIRTIO_MMIO_CONFIG), data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "{}: {}-byte register read at {offset:#x}",
                self.name,
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset as u32).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(reg::VIRTIO_MMIO_CONFIG) {
            lock(&self.device).write_config(offset - u64::from(reg::VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "{}: {}-byte register write at {offset:#x} ignored",
                self.name,
                data.len()
            );
            return;
        };
        if offset.is_multiple_of(4) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
    }
}
