//! What every virtio device shares: its signals and counters, and on the event loop an
//! activation eventfd through which the transport (on a vCPU thread) tells the loop that the
//! queues came or went, and the registration of the queue eventfds to match.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use virtio_queue::DescriptorChain;

use super::serve::{serve_queue, Drained, Served};
use super::{ActiveQueues, Counters, Signals};
use crate::rate_limiter::RateLimiter;
use crate::GuestMemory;

/// Event data of the activation eventfd. Queue `i` uses `QUEUE_TOKEN_BASE + i`; devices use
/// values from [`DEVICE_TOKEN_BASE`] for their own descriptors.
pub const ACTIVATION_TOKEN: u32 = 0;
/// Event data of the first queue's eventfd.
pub const QUEUE_TOKEN_BASE: u32 = 1;
/// The first event data value free for a device's own descriptors.
pub const DEVICE_TOKEN_BASE: u32 = 0x100;

/// Most queue eventfds of earlier activations kept for the loop to stop watching.
const MAX_RETIRED: usize = 64;

/// A device's queues, and whether the event loop watches them.
pub struct Activation {
    kick: EventFd,
    active: Option<ActiveQueues>,
    /// Queue eventfds currently registered with the event manager.
    watched: Vec<RawFd>,
    /// Queue eventfds of an earlier activation, kept open until the loop has stopped
    /// watching them (a closed descriptor cannot be taken out of epoll, and its number may be
    /// reused).
    retired: Vec<EventFd>,
}

impl Activation {
    /// Not activated yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Activation {
            kick: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            watched: Vec::new(),
            retired: Vec::new(),
        })
    }

    /// Registers the activation eventfd (call from the device's `init`).
    pub fn init(&self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.kick,
            ACTIVATION_TOKEN,
            EventSet::IN,
        )) {
            log::error!("virtio: cannot watch an activation eventfd: {e}");
        }
    }

    /// Takes the driver's queues (on a vCPU thread) and tells the loop. A driver that
    /// resets and restarts the device faster than the loop can follow is refused, so that
    /// the descriptors kept for the loop stay bounded.
    pub fn activate(&mut self, queues: ActiveQueues) -> Result<(), String> {
        if self.retired.len() >= MAX_RETIRED {
            return Err("the driver restarts the device faster than it can follow".into());
        }
        self.retire();
        self.active = Some(queues);
        let _ = self.kick.write(1);
        Ok(())
    }

    /// Drops the queues (the driver reset the device) and tells the loop.
    pub fn reset(&mut self) {
        self.retire();
        let _ = self.kick.write(1);
    }

    fn retire(&mut self) {
        if let Some(old) = self.active.take() {
            self.retired.extend(old.events);
        }
    }

    /// On [`ACTIVATION_TOKEN`]: makes the watched queue eventfds match the current state.
    pub fn sync(&mut self, ops: &mut EventOps) {
        let _ = self.kick.read();
        for fd in self.watched.drain(..) {
            if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                log::error!("virtio: cannot stop watching a queue: {e}");
            }
        }
        self.retired.clear();
        let Some(active) = &self.active else {
            return;
        };
        for (i, evt) in active.events.iter().enumerate() {
            let events = Events::with_data(evt, QUEUE_TOKEN_BASE + i as u32, EventSet::IN);
            match ops.add(events) {
                Ok(()) => self.watched.push(evt.as_raw_fd()),
                Err(e) => log::error!("virtio: cannot watch queue {i}: {e}"),
            }
        }
    }

    /// The queues, if the driver has set the device up.
    pub fn active(&mut self) -> Option<&mut ActiveQueues> {
        self.active.as_mut()
    }

    /// Whether the driver has set the device up.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

/// The state every device has: how it signals its driver, what it has done, its queues.
pub struct DeviceCore {
    /// Interrupt status, configuration generation, needs-reset; shared with the transport.
    pub signals: Arc<Signals>,
    /// What the device has done.
    pub counters: Arc<Counters>,
    /// The queues, once the driver has set them up.
    pub activation: Activation,
}

/// What an event was, after [`DeviceCore::handle`] did the common part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The queues came or went (now watched or not).
    Activation,
    /// The driver notified queue `i` (its eventfd is read and counted).
    Queue(usize),
    /// A device's own descriptor: the event data, from [`DEVICE_TOKEN_BASE`] up.
    Device(u32),
}

impl DeviceCore {
    /// A new device's core.
    pub fn new() -> std::io::Result<Self> {
        Ok(DeviceCore {
            signals: Arc::new(Signals::new()?),
            counters: Arc::default(),
            activation: Activation::new()?,
        })
    }

    /// Does what every device does with `events` and says what it was.
    pub fn handle(&mut self, events: &Events, ops: &mut EventOps) -> Handled {
        match events.data() {
            ACTIVATION_TOKEN => {
                self.activation.sync(ops);
                Handled::Activation
            }
            data if data < DEVICE_TOKEN_BASE => {
                let i = (data - QUEUE_TOKEN_BASE) as usize;
                if let Some(evt) = self.activation.active().and_then(|a| a.events.get(i)) {
                    let _ = evt.read();
                }
                Counters::add(&self.counters.notifications, 1);
                Handled::Queue(i)
            }
            data => Handled::Device(data),
        }
    }
}

impl DeviceCore {
    /// Serves queue `index` with `serve` (see [`serve_queue`]) if the device is active and
    /// not broken. When the budget runs out the queue's eventfd is signalled again, so the
    /// rest is served after the other devices had their turn; a driver error is counted and
    /// marks the device (`name`) as needing a reset.
    pub fn serve(
        &mut self,
        name: &str,
        index: usize,
        budget: usize,
        mut serve: impl FnMut(&GuestMemory, DescriptorChain<&GuestMemory>) -> Result<Served, String>,
    ) {
        if self.signals.is_broken() {
            return;
        }
        let Some(active) = self.activation.active.as_mut() else {
            return;
        };
        let (Some(queue), Some(event)) = (active.queues.get_mut(index), active.events.get(index))
        else {
            return;
        };
        let mem = &active.mem;
        match serve_queue(queue, mem, &self.signals, budget, |chain| serve(mem, chain)) {
            Ok(Drained::BudgetSpent) => {
                let _ = event.write(1);
            }
            Ok(_) => {}
            Err(why) => {
                Counters::add(&self.counters.errors, 1);
                self.signals.needs_reset(name, &why);
            }
        }
    }
}

/// Watches a rate limiter's timer under event data `token`.
pub fn watch_limiter(ops: &mut EventOps, limiter: &RateLimiter, token: u32, name: &str) {
    let timer = Events::with_data_raw(limiter.timer_fd(), token, EventSet::IN);
    if let Err(e) = ops.add(timer) {
        log::error!("{name}: cannot watch the rate limiter: {e}");
    }
}
