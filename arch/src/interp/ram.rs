//! Guest RAM as the software CPU reaches it: host pointers to the mapped regions, and the
//! per-page bookkeeping that keeps decoded code coherent with writes from every vCPU.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use super::lapic::Inbox;
use crate::GuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

const PAGE_SHIFT: u32 = 12;

/// One contiguous RAM region.
struct Region {
    start: u64,
    end: u64,
    host: *mut u8,
    /// Index of the region's first page among all RAM pages.
    first_page: u32,
}

/// Guest RAM: where each guest physical page lives in this process. It holds the guest
/// memory it describes, so the mappings its host pointers point into stay mapped for as long
/// as it (or any clone of its `Arc`) lives.
pub struct GuestRam {
    regions: Vec<Region>,
    pages: u32,
    /// Keeps every region's mapping alive; the `host` pointers above point into it.
    _mem: Arc<GuestMemory>,
}

// SAFETY: the regions are mmaps owned by `_mem`, which lives as long as this value; guest RAM
// is shared between vCPU threads by design, as it is on hardware.
unsafe impl Send for GuestRam {}
// SAFETY: as above; concurrent guest accesses have x86 semantics (plain or locked moves).
unsafe impl Sync for GuestRam {}

/// Where a guest physical page is in host memory.
#[derive(Debug, Clone, Copy)]
pub struct HostPage {
    /// Host address of the page's first byte.
    pub host: usize,
    /// Index of the page among all RAM pages (for code tracking).
    pub index: u32,
}

impl GuestRam {
    /// Describes `mem`, keeping it mapped for as long as this lives.
    pub fn new(mem: Arc<GuestMemory>) -> Self {
        let mut regions = Vec::new();
        let mut pages = 0u32;
        for r in mem.iter() {
            let host = r
                .get_host_address(MemoryRegionAddress(0))
                .expect("mmap-backed region has a host address");
            let len = GuestMemoryRegion::len(r);
            regions.push(Region {
                start: r.start_addr().0,
                end: r.start_addr().0 + len,
                host,
                first_page: pages,
            });
            pages += (len >> PAGE_SHIFT) as u32;
        }
        GuestRam {
            regions,
            pages,
            _mem: mem,
        }
    }

    /// Number of RAM pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The RAM page holding guest physical address `phys`, or None for MMIO.
    #[inline]
    pub fn page(&self, phys: u64) -> Option<HostPage> {
        let page = phys & !0xfff;
        self.regions
            .iter()
            .find(|r| page >= r.start && page < r.end)
            .map(|r| HostPage {
                // The offset is below the region length, so it fits and stays in the mapping.
                host: r.host as usize + (page - r.start) as usize,
                index: r.first_page + ((page - r.start) >> PAGE_SHIFT) as u32,
            })
    }

    /// Reads a naturally aligned u64 at `phys` (page-table entries), or None for MMIO.
    pub fn read_u64(&self, phys: u64) -> Option<u64> {
        let p = self.page(phys)?;
        let ptr = (p.host + (phys & 0xff8) as usize) as *const u64;
        // SAFETY: `ptr` is 8-byte aligned and inside a live RAM mapping (see `page`).
        Some(unsafe { std::ptr::read_volatile(ptr) })
    }

    /// Atomically ORs `bits` into the aligned u64 at `phys` (accessed/dirty bits).
    pub fn or_u64(&self, phys: u64, bits: u64) {
        if let Some(p) = self.page(phys) {
            let ptr = (p.host + (phys & 0xff8) as usize) as *mut u64;
            // SAFETY: aligned and inside a live RAM mapping; other vCPUs update the same
            // entries only through atomics too, as hardware page walkers do.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(ptr) }.fetch_or(bits, Ordering::SeqCst);
        }
    }

    /// Reads a naturally aligned u32 at `phys` (32-bit paging entries), or None for MMIO.
    pub fn read_u32(&self, phys: u64) -> Option<u32> {
        let p = self.page(phys)?;
        let ptr = (p.host + (phys & 0xffc) as usize) as *const u32;
        // SAFETY: aligned and inside a live RAM mapping.
        Some(unsafe { std::ptr::read_volatile(ptr) })
    }

    /// Atomically ORs `bits` into the aligned u32 at `phys`.
    pub fn or_u32(&self, phys: u64, bits: u32) {
        if let Some(p) = self.page(phys) {
            let ptr = (p.host + (phys & 0xffc) as usize) as *mut u32;
            // SAFETY: aligned and inside a live RAM mapping.
            unsafe { AtomicU32::from_ptr(ptr) }.fetch_or(bits, Ordering::SeqCst);
        }
    }
}

/// Per-page flags saying which RAM pages hold decoded code, and a generation counter per
/// page that moves whenever such a page is written.
pub struct CodePages {
    has_code: Vec<AtomicU8>,
    generation: Vec<AtomicU32>,
    /// The inboxes of the vCPUs running this code: each is flagged when code is written, so
    /// that translated code, which polls only its inbox between blocks, stops too.
    watchers: RwLock<Vec<Arc<Inbox>>>,
    /// Moves whenever any page holding code is written: caches of recent lookups check it
    /// instead of every page's generation.
    epoch: AtomicU32,
}

impl CodePages {
    /// Tracking for `pages` RAM pages.
    pub fn new(pages: u32) -> Self {
        CodePages {
            has_code: (0..pages).map(|_| AtomicU8::new(0)).collect(),
            generation: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            watchers: RwLock::new(Vec::new()),
            epoch: AtomicU32::new(0),
        }
    }

    /// Flags `inbox` (see [`Inbox::attend`]) after every write to a page holding code, once
    /// the code epoch has moved.
    pub fn notify_writes(&self, inbox: Arc<Inbox>) {
        self.watchers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(inbox);
    }

    /// Marks page `index` as holding decoded code and returns its generation.
    pub fn mark(&self, index: u32) -> u32 {
        let i = index as usize;
        self.has_code[i].store(1, Ordering::SeqCst);
        self.generation[i].load(Ordering::SeqCst)
    }

    /// Whether page `index` holds decoded code (stores to it must invalidate).
    #[inline(always)]
    pub fn has_code(&self, index: u32) -> bool {
        self.has_code[index as usize].load(Ordering::Relaxed) != 0
    }

    /// Records a store to page `index`: blocks decoded from it become stale.
    pub fn written(&self, index: u32) {
        let i = index as usize;
        self.generation[i].fetch_add(1, Ordering::SeqCst);
        self.has_code[i].store(0, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for inbox in self
            .watchers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            inbox.attend();
        }
    }

    /// The address of the per-page "holds code" bytes (one per RAM page, indexed like
    /// [`HostPage::index`]), for translated code; it never moves.
    pub fn has_code_bytes(&self) -> usize {
        self.has_code.as_ptr() as usize
    }

    /// The code epoch: it changes whenever a page with code is written.
    #[inline(always)]
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current generation of page `index`.
    #[inline(always)]
    pub fn generation(&self, index: u32) -> u32 {
        self.generation[index as usize].load(Ordering::Relaxed)
    }
}

/// Hears of writes to guest memory by devices (DMA) and treats them as the vCPUs' own stores:
/// pages holding decoded code among them get a new generation, so their blocks are decoded
/// again.
pub struct DmaWatch {
    ram: Arc<GuestRam>,
    code: Arc<CodePages>,
}

impl DmaWatch {
    /// A watch over the pages of `ram` tracked by `code`.
    pub fn new(ram: Arc<GuestRam>, code: Arc<CodePages>) -> Self {
        DmaWatch { ram, code }
    }
}

impl memory::WriteObserver for DmaWatch {
    fn written(&self, gpa: u64, len: usize) {
        if len == 0 {
            return;
        }
        let last = gpa.saturating_add(len as u64 - 1) >> PAGE_SHIFT;
        for page in (gpa >> PAGE_SHIFT)..=last {
            if let Some(p) = self.ram.page(page << PAGE_SHIFT) {
                if self.code.has_code(p.index) {
                    self.code.written(p.index);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn pages_are_indexed_across_regions_and_mmio_is_none() {
        let mem = GuestMemory::from_ranges(&[
            (GuestAddress(0), 0x2000),
            (GuestAddress(0x1_0000_0000), 0x1000),
        ])
        .unwrap();
        let ram = GuestRam::new(Arc::new(mem));
        assert_eq!(ram.pages(), 3);
        assert_eq!(ram.page(0x1fff).unwrap().index, 1);
        assert_eq!(ram.page(0x1_0000_0abc).unwrap().index, 2);
        assert!(ram.page(0x2000).is_none());
        assert!(ram.page(0xfee0_0000).is_none());
        ram.or_u64(0x1008, 0x20);
        assert_eq!(ram.read_u64(0x1008), Some(0x20));
    }

    #[test]
    fn the_ram_view_keeps_guest_memory_mapped_on_its_own() {
        let mem = Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap());
        let ram = GuestRam::new(mem.clone());
        ram.or_u64(0x1ff8, 0x5a);
        drop(mem); // the VM's own reference goes first, as at teardown
        assert_eq!(ram.read_u64(0x1ff8), Some(0x5a));
        ram.or_u32(0x10, 1);
        assert_eq!(ram.read_u32(0x10), Some(1));
    }

    #[test]
    fn writes_to_code_pages_bump_the_generation() {
        let code = CodePages::new(4);
        let g = code.mark(2);
        assert!(code.has_code(2) && !code.has_code(1));
        code.written(2);
        assert_ne!(code.generation(2), g);
        assert!(!code.has_code(2));
    }

    #[test]
    fn device_writes_to_a_page_with_code_make_it_stale() {
        use vm_memory::Bytes;
        let mem = Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap());
        let ram = Arc::new(GuestRam::new(mem.clone()));
        let code = Arc::new(CodePages::new(ram.pages()));
        memory::watch_writes(&mem, Arc::new(DmaWatch::new(ram.clone(), code.clone())));
        let generation = code.mark(1);
        let epoch = code.epoch();
        mem.write_slice(&[0x90; 16], GuestAddress(0x3000)).unwrap();
        assert_eq!(code.generation(1), generation, "no code on page 3");
        mem.write_slice(&[0x90; 16], GuestAddress(0x1ff8)).unwrap();
        assert_ne!(code.generation(1), generation);
        assert!(!code.has_code(1));
        assert_ne!(code.epoch(), epoch);
    }
}
