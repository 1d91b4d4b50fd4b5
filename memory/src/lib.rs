//! Guest memory as every part of Ember maps it, with a hook for writes made through it.
//!
//! Devices write guest memory from their own threads (virtio DMA). A software CPU keeps
//! decoded and translated code of guest pages and must hear of such writes, as it hears of
//! its own vCPUs' stores. The memory's per-region bitmap ([`WriteWatch`]) reports every
//! write made through vm-memory's API (and those a device reports itself, see
//! [`report_written`]) to the observer connected with [`watch_writes`]; without one it does
//! nothing. Devices never learn who listens.

use std::fmt;
use std::sync::{Arc, OnceLock};

use vm_memory::bitmap::{Bitmap, BitmapSlice, NewBitmap, WithBitmapSlice};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Guest memory: mmap-backed regions whose writes can be watched.
pub type GuestMemory = vm_memory::GuestMemoryMmap<WriteWatch>;

/// Hears of writes to guest memory made by anything but a vCPU.
pub trait WriteObserver: Send + Sync {
    /// `len` bytes from guest physical address `gpa` were written.
    fn written(&self, gpa: u64, len: usize);
}

/// The observer of one region, with the region's guest physical base.
struct Hook {
    base: u64,
    observer: Arc<dyn WriteObserver>,
}

/// A region's bitmap (or a slice of it, from `offset`): reports writes to the region's
/// observer, once one is connected.
#[derive(Clone, Default)]
pub struct WriteWatch {
    hook: Arc<OnceLock<Hook>>,
    offset: usize,
}

impl fmt::Debug for WriteWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteWatch")
            .field("watched", &self.hook.get().is_some())
            .field("offset", &self.offset)
            .finish()
    }
}

impl WithBitmapSlice<'_> for WriteWatch {
    type S = Self;
}

impl BitmapSlice for WriteWatch {}

impl Bitmap for WriteWatch {
    fn mark_dirty(&self, offset: usize, len: usize) {
        if let Some(hook) = self.hook.get() {
            let gpa = hook.base + (self.offset + offset) as u64;
            hook.observer.written(gpa, len);
        }
    }

    fn dirty_at(&self, _offset: usize) -> bool {
        false
    }

    fn slice_at(&self, offset: usize) -> Self {
        WriteWatch {
            hook: self.hook.clone(),
            offset: self.offset + offset,
        }
    }
}

impl NewBitmap for WriteWatch {
    fn with_len(_len: usize) -> Self {
        WriteWatch::default()
    }
}

/// Connects `observer` to every region of `mem`: from now on it hears of each write made
/// through `mem`. A region keeps the first observer connected to it.
pub fn watch_writes(mem: &GuestMemory, observer: Arc<dyn WriteObserver>) {
    for region in mem.iter() {
        let _ = region.bitmap().hook.set(Hook {
            base: region.start_addr().0,
            observer: observer.clone(),
        });
    }
}

/// Reports `len` bytes at `gpa` as written by other means than vm-memory's API (a system
/// call filling guest memory through raw pointers), to the observer of the region there.
pub fn report_written(mem: &GuestMemory, gpa: GuestAddress, len: usize) {
    if let Some(region) = mem.find_region(gpa) {
        let offset = (gpa.0 - region.start_addr().0) as usize;
        region.bitmap().mark_dirty(offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vm_memory::Bytes;

    #[derive(Default)]
    struct Log(Mutex<Vec<(u64, usize)>>);

    impl WriteObserver for Log {
        fn written(&self, gpa: u64, len: usize) {
            self.0.lock().unwrap().push((gpa, len));
        }
    }

    #[test]
    fn writes_through_the_memory_reach_the_observer_with_their_guest_address() {
        let mem = GuestMemory::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x100000), 0x10000),
        ])
        .unwrap();
        mem.write_obj(1u32, GuestAddress(0x10)).unwrap();
        let log = Arc::new(Log::default());
        watch_writes(&mem, log.clone());
        mem.write_slice(&[1, 2, 3], GuestAddress(0x100020)).unwrap();
        mem.write_obj(7u64, GuestAddress(0x2000)).unwrap();
        report_written(&mem, GuestAddress(0x3000), 512);
        let _: u64 = mem.read_obj(GuestAddress(0x2000)).unwrap();
        let seen = log.0.lock().unwrap().clone();
        assert_eq!(seen, vec![(0x100020, 3), (0x2000, 8), (0x3000, 512)]);
    }
}
