//! A running VM as its supervisor sees it: pause and resume with guest time stopped,
//! Ctrl-Alt-Del on the keyboard, device counters, and the changes a running drive,
//! interface or balloon can take.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::lock;
use devices::legacy::i8042::I8042;
use devices::virtio::balloon::{Balloon, BalloonState};
use devices::virtio::block::Disk;
use devices::virtio::Counters;
use vmm_sys_util::signal::SIGRTMIN;

use crate::pause::PauseGate;
use crate::stop::StopSignal;
use crate::threads::VmThread;
use crate::virtio::{self, Handle};
use crate::vm::Backend;

/// How long vCPUs may take to park when the VM is paused.
const VCPU_PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A VM whose vCPUs run, as its supervisor sees it.
pub struct Running<'a> {
    /// The VM's stop request.
    pub stop: &'a Arc<StopSignal>,
    pub(crate) backend: &'a Backend,
    pub(crate) vcpu_threads: &'a [VmThread],
    pub(crate) gate: &'a PauseGate,
    pub(crate) i8042: &'a Mutex<I8042>,
    pub(crate) counters: Vec<(String, Arc<Counters>)>,
    pub(crate) handles: Vec<(String, Handle)>,
}

impl Running<'_> {
    /// Stops every vCPU before its next guest instruction and stops guest time; returns once
    /// all have stopped. An error says they did not (the VM then runs on).
    pub fn pause(&self) -> Result<(), String> {
        if self.gate.is_paused() {
            return Ok(());
        }
        let parked = self
            .gate
            .pause(self.vcpu_threads.len(), VCPU_PAUSE_TIMEOUT, || {
                self.backend.kick_all();
                for thread in self.vcpu_threads {
                    thread.signal(SIGRTMIN());
                }
            });
        if !parked {
            self.gate.resume();
            return Err(format!(
                "the vCPUs did not stop within {VCPU_PAUSE_TIMEOUT:?}"
            ));
        }
        self.backend
            .freeze_time()
            .inspect_err(|_| self.gate.resume())
    }

    /// Lets a paused VM run again, its guest time going on from where it stopped.
    pub fn resume(&self) -> Result<(), String> {
        if !self.gate.is_paused() {
            return Ok(());
        }
        self.backend.thaw_time()?;
        self.gate.resume();
        Ok(())
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_paused()
    }

    /// Presses Ctrl-Alt-Del on the i8042 keyboard; an error says its buffer is full.
    pub fn send_ctrl_alt_del(&self) -> Result<(), String> {
        if lock(self.i8042).press_ctrl_alt_del() {
            Ok(())
        } else {
            Err("the guest has not read the keyboard's earlier keys".into())
        }
    }

    /// Each virtio device's counters, by name.
    pub fn device_counters(&self) -> &[(String, Arc<Counters>)] {
        &self.counters
    }

    fn balloon(&self) -> Option<&Arc<Mutex<Balloon>>> {
        self.handles.iter().find_map(|(_, h)| match h {
            Handle::Balloon(b) => Some(b),
            _ => None,
        })
    }

    /// The balloon's state, if the VM has one.
    pub fn balloon_state(&self) -> Option<Arc<BalloonState>> {
        self.balloon().map(|b| lock(b).state().clone())
    }

    /// Asks the guest for a balloon of `target_mib` MiB.
    pub fn set_balloon_target(&self, target_mib: u32) -> Result<(), String> {
        let balloon = self.balloon().ok_or("the VM has no balloon")?;
        lock(balloon).set_target(target_mib);
        Ok(())
    }

    /// Polls the balloon's statistics every `seconds` from now on.
    pub fn set_balloon_stats_period(&self, seconds: u16) -> Result<(), String> {
        let balloon = self.balloon().ok_or("the VM has no balloon")?;
        lock(balloon).set_stats_period(Duration::from_secs(u64::from(seconds)))
    }

    /// The device whose ID (drive or interface ID) is `id`.
    fn handle(&self, id: &str) -> Option<&Handle> {
        self.handles
            .iter()
            .find_map(|(slot, h)| (slot == id).then_some(h))
    }

    /// Gives interface `id` the receive and transmit rate limiters `rx` and `tx`.
    pub fn update_interface(
        &self,
        id: &str,
        rx: &Option<api::RateLimiter>,
        tx: &Option<api::RateLimiter>,
    ) -> Result<(), String> {
        let Some(Handle::Net(net)) = self.handle(id) else {
            return Err(format!("iface_id: no interface `{id}`"));
        };
        lock(net).update_limiters(virtio::buckets(rx), virtio::buckets(tx));
        Ok(())
    }

    /// Changes drive `id`: serves it from `path` (opened read-only if `read_only`) and/or
    /// limits it with `limiter`. Errors name the drive and the file.
    pub fn update_drive(
        &self,
        id: &str,
        path: Option<&Path>,
        read_only: bool,
        limiter: Option<&Option<api::RateLimiter>>,
    ) -> Result<(), String> {
        let Some(Handle::Block(block)) = self.handle(id) else {
            return Err(format!("drive_id: no drive `{id}`"));
        };
        let disk = path
            .map(|p| Disk::open(p, read_only, id).map_err(|e| format!("path_on_host: {e}")))
            .transpose()?;
        let mut block = lock(block);
        if let Some(disk) = disk {
            block.replace_disk(disk);
        }
        if let Some(limiter) = limiter {
            let (bytes, ops) = virtio::buckets(limiter);
            block.update_limiter(bytes, ops);
        }
        Ok(())
    }
}
