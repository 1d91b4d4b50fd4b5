//! virtio-balloon: the host sets a target (pages the guest should give back); the guest
//! inflates by handing page frame numbers over the inflate queue, and the device releases
//! those pages to the host (madvise(MADV_DONTNEED)), so the VMM's resident memory really
//! drops; pages handed back over the deflate queue come back zero-filled on their next use.
//! With `deflate_on_oom` the guest may take pages back under memory pressure. With a statistics
//! interval the device keeps the guest's latest memory statistics and asks for fresh ones on
//! that period. Counters: bytes given back (from the guest) and taken back (to it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::activation::DEVICE_TOKEN_BASE;
use super::chain::ChainBuffers;
use super::serve::Served;
use super::{read_config_bytes, Counters, DeviceCore, Handled, VirtioDevice, COMMON_FEATURES};
use crate::GuestMemory;

/// The balloon's page size: page frame numbers count 4 KiB pages.
pub const BALLOON_PAGE_SIZE: u64 = 4096;
/// Feature bit: the guest sends memory statistics on a third queue.
const F_STATS_VQ: u64 = 1 << 1;
/// Feature bit: the guest may deflate when it runs out of memory.
const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// Queue sizes: inflate, deflate, statistics.
const QUEUE_SIZES: [u16; 3] = [256, 256, 32];
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
const STATS: usize = 2;
/// Chains served per wake-up.
const BUDGET: usize = 32;
/// Event data of the statistics timer.
const STATS_TIMER_TOKEN: u32 = DEVICE_TOKEN_BASE;
/// Most statistics entries kept (the specification defines 10 tags, with room to grow).
const MAX_STATS: usize = 16;

/// The guest's latest memory statistics: (tag, value) pairs as the driver sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Tag and value of each entry (tags per the virtio specification: 4 free memory, 5 total
    /// memory, 6 available memory, ...; values in bytes or events).
    pub entries: Vec<(u16, u64)>,
}

/// What the VMM (and later its API) sees of the balloon: the target it sets and what the
/// guest reports.
#[derive(Debug, Default)]
pub struct BalloonState {
    target_pages: AtomicU32,
    actual_pages: AtomicU32,
    stats: Mutex<BalloonStats>,
    /// Pages given back to the host so far.
    pub inflated: AtomicU64,
}

impl BalloonState {
    /// The target, in MiB.
    pub fn target_mib(&self) -> u32 {
        self.target_pages.load(Ordering::SeqCst) / 256
    }

    /// The size the guest says the balloon has, in MiB.
    pub fn actual_mib(&self) -> u32 {
        self.actual_pages.load(Ordering::SeqCst) / 256
    }

    /// The latest statistics.
    pub fn stats(&self) -> BalloonStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The balloon device.
pub struct Balloon {
    core: DeviceCore,
    state: Arc<BalloonState>,
    deflate_on_oom: bool,
    stats_period: Option<Duration>,
    stats_timer: TimerFd,
    /// The statistics buffer the guest last posted, held until the next poll.
    stats_head: Option<u16>,
    buffers: ChainBuffers,
}

impl Balloon {
    /// A balloon asking for `target_mib` MiB, letting the guest deflate under memory
    /// pressure if `deflate_on_oom`, and polling statistics every `stats_period` (if any).
    pub fn new(
        target_mib: u32,
        deflate_on_oom: bool,
        stats_period: Option<Duration>,
    ) -> std::io::Result<Self> {
        let state = BalloonState::default();
        state
            .target_pages
            .store(target_mib.saturating_mul(256), Ordering::SeqCst);
        Ok(Balloon {
            core: DeviceCore::new()?,
            state: Arc::new(state),
            deflate_on_oom,
            stats_period,
            stats_timer: TimerFd::new()?,
            stats_head: None,
            buffers: ChainBuffers::new(),
        })
    }

    /// Asks the guest for a balloon of `target_mib` MiB from now on.
    pub fn set_target(&mut self, target_mib: u32) {
        self.state
            .target_pages
            .store(target_mib.saturating_mul(256), Ordering::SeqCst);
        self.core.signals.config_changed();
    }

    /// Polls the guest's statistics every `period` from now on. Statistics must have been
    /// on from the start (the guest negotiated their queue then) and stay on.
    pub fn set_stats_period(&mut self, period: Duration) -> Result<(), String> {
        if self.stats_period.is_none() {
            return Err("statistics were off when the VM started".into());
        }
        if period.is_zero() {
            return Err("statistics cannot be turned off once the VM has started".into());
        }
        self.stats_period = Some(period);
        if self.core.activation.active().is_some() {
            self.arm_stats_timer();
        }
        Ok(())
    }

    /// The balloon's state, shared with the VMM.
    pub fn state(&self) -> &Arc<BalloonState> {
        &self.state
    }

    fn config_space(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[0..4].copy_from_slice(&self.state.target_pages.load(Ordering::SeqCst).to_le_bytes());
        c[4..8].copy_from_slice(&self.state.actual_pages.load(Ordering::SeqCst).to_le_bytes());
        c
    }

    /// Inflate (`give_back`) or deflate: each chain holds 32-bit page frame numbers.
    fn serve_pages(&mut self, queue: usize, give_back: bool) {
        let (buffers, state) = (&mut self.buffers, &self.state);
        let counters = self.core.counters.clone();
        self.core
            .serve("virtio-balloon", queue, BUDGET, |mem, chain| {
                buffers.parse(mem, chain).map_err(|e| e.to_string())?;
                let mut pfn_bytes = [0u8; 4];
                let count = buffers.readable_len() / 4;
                for i in 0..count {
                    buffers.read_at(mem, i * 4, &mut pfn_bytes);
                    let addr = u64::from(u32::from_le_bytes(pfn_bytes)) * BALLOON_PAGE_SIZE;
                    if !give_back {
                        continue; // the page is simply used again, and faults back in
                    }
                    if release(mem, GuestAddress(addr)) {
                        state.inflated.fetch_add(1, Ordering::Relaxed);
                        Counters::add(&counters.bytes_from_guest, BALLOON_PAGE_SIZE);
                    } else {
                        Counters::add(&counters.errors, 1);
                    }
                }
                if give_back {
                    Counters::add(&counters.ops_from_guest, 1);
                } else {
                    Counters::add(&counters.ops_to_guest, 1);
                    Counters::add(&counters.bytes_to_guest, count * BALLOON_PAGE_SIZE);
                }
                Ok(Served::Used(0))
            });
    }

    /// The guest posted statistics: keep them, and hold the buffer until the next poll.
    fn take_stats(&mut self) {
        let Some(active) = self.core.activation.active() else {
            return;
        };
        let (Some(queue), mem) = (active.queues.get_mut(STATS), &active.mem) else {
            return;
        };
        let chain = match virtio_queue::QueueOwnedT::iter(queue, mem) {
            Ok(mut iter) => iter.next(),
            Err(e) => {
                let why = format!("statistics queue: {e}");
                self.core.signals.needs_reset("virtio-balloon", &why);
                return;
            }
        };
        let Some(chain) = chain else {
            return;
        };
        let head = chain.head_index();
        if let Err(e) = self.buffers.parse(mem, chain) {
            self.core
                .signals
                .needs_reset("virtio-balloon", &e.to_string());
            return;
        }
        let mut entries = Vec::with_capacity(MAX_STATS);
        let mut entry = [0u8; 10];
        for piece in 0..(self.buffers.readable_len() / 10).min(MAX_STATS as u64) {
            self.buffers.read_at(mem, piece * 10, &mut entry);
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let value = u64::from_le_bytes(entry[2..10].try_into().unwrap_or_default());
            entries.push((tag, value));
        }
        *self.state.stats.lock().unwrap_or_else(|e| e.into_inner()) = BalloonStats { entries };
        self.stats_head = Some(head);
    }

    /// The statistics period passed: give the held buffer back, which asks for fresh ones.
    fn poll_stats(&mut self) {
        let _ = self.stats_timer.wait();
        let Some(head) = self.stats_head.take() else {
            return;
        };
        let Some(active) = self.core.activation.active() else {
            return;
        };
        let mem = &active.mem;
        if let Some(queue) = active.queues.get_mut(STATS) {
            if queue.add_used(mem, head, 0).is_ok() && queue.needs_notification(mem).unwrap_or(true)
            {
                self.core.signals.used_buffers();
            }
        }
    }

    fn arm_stats_timer(&mut self) {
        if let Some(period) = self.stats_period {
            if let Err(e) = self.stats_timer.reset(period, Some(period)) {
                log::error!("virtio-balloon: cannot arm the statistics timer: {e}");
            }
        }
    }
}

/// Releases the guest page at `addr` to the host. False if it is not a whole page of RAM.
fn release(mem: &GuestMemory, addr: GuestAddress) -> bool {
    let Some(region) = mem.find_region(addr) else {
        return false;
    };
    let offset = addr.0 - region.start_addr().0;
    if offset + BALLOON_PAGE_SIZE > region.len() {
        return false;
    }
    let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(offset)) else {
        return false;
    };
    // SAFETY: `host` is the start of a page inside a private anonymous mapping of guest RAM
    // that `mem` keeps alive; MADV_DONTNEED only drops its contents (the next access reads
    // zeros), which is what the guest asked for by giving the page to the balloon.
    unsafe { libc::madvise(host.cast(), BALLOON_PAGE_SIZE as usize, libc::MADV_DONTNEED) == 0 }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        if self.stats_period.is_some() {
            &QUEUE_SIZES
        } else {
            &QUEUE_SIZES[..2]
        }
    }

    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES;
        if self.stats_period.is_some() {
            f |= F_STATS_VQ;
        }
        if self.deflate_on_oom {
            f |= F_DEFLATE_ON_OOM;
        }
        f
    }

    fn queues_used(&self, acked_features: u64) -> usize {
        if acked_features & F_STATS_VQ != 0 {
            3
        } else {
            2
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (offset 4) is the driver's to write.
        if offset == 4 && data.len() == 4 {
            let actual = u32::from_le_bytes(data.try_into().unwrap_or_default());
            let old = self.state.actual_pages.swap(actual, Ordering::SeqCst);
            if old != actual {
                log::debug!(
                    "virtio-balloon: the guest holds {} MiB in the balloon",
                    actual / 256
                );
            }
        }
    }

    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
}

impl MutEventSubscriber for Balloon {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.activation.init(ops);
        if self.stats_period.is_some() {
            let timer = Events::with_data_raw(
                std::os::fd::AsRawFd::as_raw_fd(&self.stats_timer),
                STATS_TIMER_TOKEN,
                EventSet::IN,
            );
            if let Err(e) = ops.add(timer) {
                log::error!("virtio-balloon: cannot watch the statistics timer: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.core.handle(&events, ops) {
            Handled::Activation => {
                self.stats_head = None;
                self.arm_stats_timer();
                self.serve_pages(INFLATE, true);
                self.serve_pages(DEFLATE, false);
            }
            Handled::Queue(INFLATE) => self.serve_pages(INFLATE, true),
            Handled::Queue(DEFLATE) => self.serve_pages(DEFLATE, false),
            Handled::Queue(STATS) => self.take_stats(),
            Handled::Device(STATS_TIMER_TOKEN) => self.poll_stats(),
            other => log::debug!("virtio-balloon: unexpected event {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::ActiveQueues;
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn inflating_releases_pages_and_refuses_frames_outside_ram() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let inflate = MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 16);
        let deflate = MockSplitQueue::create(&mem, GuestAddress(0x2_0000), 16);
        let mut balloon = Balloon::new(2, false, None).unwrap();
        // Pages 0x300..0x303 hold data the balloon takes; 0x9999 is beyond RAM.
        mem.write_slice(&[0xab; 4 * 4096], GuestAddress(0x30_0000))
            .unwrap();
        let pfns: Vec<u8> = [0x300u32, 0x301, 0x302, 0x9999]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        mem.write_slice(&pfns, GuestAddress(0x8000)).unwrap();
        let d = RawDescriptor::from(Descriptor::new(0x8000, 8, VRING_DESC_F_NEXT as u16, 1));
        inflate.desc_table().store(0, d).unwrap();
        let d = RawDescriptor::from(Descriptor::new(0x8008, 8, 0, 0));
        inflate.desc_table().store(1, d).unwrap();
        inflate.avail().ring().ref_at(0).unwrap().store(0);
        inflate.avail().idx().store(1);
        balloon
            .core
            .activation
            .activate(ActiveQueues {
                mem: mem.clone(),
                queues: vec![
                    inflate.create_queue().unwrap(),
                    deflate.create_queue().unwrap(),
                ],
                events: vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
                acked_features: COMMON_FEATURES,
            })
            .unwrap();
        balloon.serve_pages(INFLATE, true);
        assert_eq!(balloon.state.inflated.load(Ordering::Relaxed), 3);
        assert_eq!(balloon.core.counters.errors.load(Ordering::Relaxed), 1);
        let mut page = [0xffu8; 4096];
        mem.read_slice(&mut page, GuestAddress(0x30_1000)).unwrap();
        assert!(
            page.iter().all(|&b| b == 0),
            "a released page reads as zeros"
        );
        mem.read_slice(&mut page, GuestAddress(0x30_3000)).unwrap();
        assert!(
            page.iter().all(|&b| b == 0xab),
            "the next page is untouched"
        );
        assert_eq!(inflate.used().idx().load(), 1);
    }

    #[test]
    fn the_driver_reports_the_balloon_size_in_actual() {
        let mut balloon = Balloon::new(64, true, None).unwrap();
        let mut config = [0u8; 8];
        balloon.read_config(0, &mut config);
        assert_eq!(
            u32::from_le_bytes(config[0..4].try_into().unwrap()),
            64 * 256
        );
        balloon.write_config(4, &(16u32 * 256).to_le_bytes());
        balloon.write_config(0, &7u32.to_le_bytes()); // num_pages is the host's: ignored
        assert_eq!(
            (balloon.state.target_mib(), balloon.state.actual_mib()),
            (64, 16)
        );
        assert_ne!(balloon.features() & F_DEFLATE_ON_OOM, 0);
        assert_eq!(balloon.features() & F_STATS_VQ, 0);
        assert_eq!(balloon.queue_max_sizes().len(), 2);
    }

    #[test]
    fn a_new_target_is_a_configuration_change_the_driver_hears_of() {
        let mut balloon = Balloon::new(0, true, None).unwrap();
        let generation = balloon.core.signals.config_generation();
        balloon.set_target(32);
        let mut config = [0u8; 4];
        balloon.read_config(0, &mut config);
        assert_eq!(u32::from_le_bytes(config), 32 * 256);
        assert_ne!(balloon.core.signals.config_generation(), generation);
        assert_ne!(
            balloon.core.signals.interrupt_status() & 2,
            0,
            "config interrupt"
        );
    }

    #[test]
    fn the_statistics_period_changes_only_while_statistics_are_on() {
        let mut off = Balloon::new(0, true, None).unwrap();
        assert!(off.set_stats_period(Duration::from_secs(1)).is_err());
        let mut on = Balloon::new(0, true, Some(Duration::from_secs(5))).unwrap();
        assert!(on.set_stats_period(Duration::ZERO).is_err());
        on.set_stats_period(Duration::from_secs(1)).unwrap();
        assert_eq!(on.stats_period, Some(Duration::from_secs(1)));
    }
}
