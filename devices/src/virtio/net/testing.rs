//! For tests: a driver's side of one 16-entry split queue in test memory, posting chains one
//! at a time and reading back what the device used.

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress};

use crate::GuestMemory;

/// Entries in a test queue.
pub const SIZE: u16 = 16;

/// 1 MiB of test memory.
pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// The driver's side of a queue.
pub struct TestQueue<'a> {
    vq: MockSplitQueue<'a, GuestMemory>,
    mem: &'a GuestMemory,
    next_desc: u16,
    posted: u16,
}

impl<'a> TestQueue<'a> {
    /// A queue whose rings start at `base`.
    pub fn new(mem: &'a GuestMemory, base: u64) -> Self {
        TestQueue {
            vq: MockSplitQueue::create(mem, GuestAddress(base), SIZE),
            mem,
            next_desc: 0,
            posted: 0,
        }
    }

    /// Posts a chain of (address, length, flags) descriptors; NEXT flags are added.
    pub fn post(&mut self, chain: &[(u64, u32, u16)]) {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in chain.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (index + 1) % SIZE;
            let next = if i + 1 < chain.len() {
                VRING_DESC_F_NEXT as u16
            } else {
                0
            };
            self.store_raw(index, addr, len, flags | next, self.next_desc);
        }
        self.set_avail(usize::from(self.posted % SIZE), head);
        self.posted = self.posted.wrapping_add(1);
        self.vq.avail().idx().store(self.posted.to_le());
    }

    /// Writes descriptor `index` as given, whatever it says.
    pub fn store_raw(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        self.vq
            .desc_table()
            .store(index, RawDescriptor::from(d))
            .unwrap();
    }

    fn set_avail(&self, slot: usize, head: u16) {
        let entry = self.vq.avail().ring().ref_at(slot).unwrap();
        entry.store(head.to_le());
    }

    /// Fills the available ring with `heads` and sets its index to `idx`, whatever they are.
    pub fn offer_raw(&self, heads: impl Iterator<Item = u16>, idx: u16) {
        for (slot, head) in heads.take(usize::from(SIZE)).enumerate() {
            self.set_avail(slot, head);
        }
        self.vq.avail().idx().store(idx.to_le());
    }

    /// The device's view of the queue (make it before posting, or after: it reads memory).
    pub fn queue(&self) -> Queue {
        self.vq.create_queue().unwrap()
    }

    /// The used ring: (head, length) of each chain the device returned.
    pub fn used(&self) -> Vec<(u32, u32)> {
        let used = self.vq.used_addr();
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = used.unchecked_add(4 + 8 * u64::from(i % SIZE));
                let id: u32 = self.mem.read_obj(at).unwrap();
                let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
                (id, len)
            })
            .collect()
    }

    /// The device's view of the queue's used ring address.
    pub fn used_addr(&self) -> u64 {
        self.vq.used_addr().0
    }
}
