//! Walking a descriptor chain the driver offered, refusing what a correct driver never
//! sends: a chain that ends early (a loop, a bad `next` index, a bad indirect table), a
//! device-readable buffer after a device-writable one, a buffer outside guest RAM, more than
//! [`MAX_SEGMENTS`] buffers, or 4 GiB or more in all. What passes is a list of guest memory
//! ranges the device may read and one it may write, in order.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory as _, Permissions};

use crate::GuestMemory;

/// Most buffers one chain may have: far more than any driver uses, small enough to bound the
/// device's work and memory per request.
pub const MAX_SEGMENTS: usize = 1024;

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes (never 0).
    pub len: u32,
}

/// Why a chain was refused. Each means a broken or hostile driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head index is outside the descriptor table, or the table is outside memory.
    #[error("descriptor chain with head {0} has no readable descriptor")]
    Empty(u16),
    /// The chain stopped at a descriptor that said more followed.
    #[error("descriptor chain with head {0} ends early (a loop, a bad next index or a bad indirect table)")]
    Truncated(u16),
    /// A device-readable buffer came after a device-writable one.
    #[error("descriptor chain with head {0} has a readable buffer after a writable one")]
    WrongOrder(u16),
    /// More than [`MAX_SEGMENTS`] buffers.
    #[error("descriptor chain with head {0} has more than {MAX_SEGMENTS} buffers")]
    TooLong(u16),
    /// A buffer is not entirely in guest RAM.
    #[error(
        "descriptor chain with head {head} has a buffer outside guest RAM ({addr:#x}, {len} bytes)"
    )]
    OutsideMemory {
        /// The chain's head index.
        head: u16,
        /// The buffer's address.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// The buffers of one chain, kept in vectors a device reuses from request to request.
#[derive(Debug, Default)]
pub struct ChainBuffers {
    head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: u64,
    writable_len: u64,
}

impl ChainBuffers {
    /// Buffers with room for a typical chain.
    pub fn new() -> Self {
        ChainBuffers {
            readable: Vec::with_capacity(16),
            writable: Vec::with_capacity(16),
            ..Default::default()
        }
    }

    /// Takes the buffers of `chain`, checking them against `mem`. Zero-length buffers are
    /// skipped.
    pub fn parse<M>(
        &mut self,
        mem: &GuestMemory,
        chain: DescriptorChain<M>,
    ) -> Result<(), ChainError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        self.head = head;
        self.readable.clear();
        self.writable.clear();
        self.readable_len = 0;
        self.writable_len = 0;
        let mut last_had_next = false;
        let mut any = false;
        for desc in chain {
            any = true;
            last_had_next = desc.has_next();
            if self.readable.len() + self.writable.len() >= MAX_SEGMENTS {
                return Err(ChainError::TooLong(head));
            }
            if desc.len() == 0 {
                continue;
            }
            let addr = desc.addr();
            let access = if desc.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(addr, desc.len() as usize, access) {
                return Err(ChainError::OutsideMemory {
                    head,
                    addr: addr.0,
                    len: desc.len(),
                });
            }
            let segment = Segment {
                addr,
                len: desc.len(),
            };
            if desc.is_write_only() {
                self.writable.push(segment);
                self.writable_len += u64::from(desc.len());
            } else if self.writable.is_empty() {
                self.readable.push(segment);
                self.readable_len += u64::from(desc.len());
            } else {
                return Err(ChainError::WrongOrder(head));
            }
        }
        if !any {
            return Err(ChainError::Empty(head));
        }
        if last_had_next {
            // The iterator stops quietly on loops, bad indexes and bad indirect tables.
            return Err(ChainError::Truncated(head));
        }
        Ok(())
    }

    /// The head index of the chain, for the used ring.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// The device-readable buffers, in order.
    pub fn readable(&self) -> &[Segment] {
        &self.readable
    }

    /// The device-writable buffers, in order.
    pub fn writable(&self) -> &[Segment] {
        &self.writable
    }

    /// Copies readable bytes from offset `at` into `buf`; returns how many there were.
    pub fn read_at(&self, mem: &GuestMemory, at: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for piece in ranges(&self.readable, at, buf.len() as u64) {
            let n = piece.len as usize;
            if mem
                .read_slice(&mut buf[done..done + n], piece.addr)
                .is_err()
            {
                break;
            }
            done += n;
        }
        done
    }

    /// Copies `buf` into the writable bytes from offset `at`; returns how many fit.
    pub fn write_at(&self, mem: &GuestMemory, at: u64, buf: &[u8]) -> usize {
        let mut done = 0;
        for piece in ranges(&self.writable, at, buf.len() as u64) {
            let n = piece.len as usize;
            if mem.write_slice(&buf[done..done + n], piece.addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }
}

/// The pieces of `segments` that cover `len` bytes from offset `at`, in order.
pub fn ranges(segments: &[Segment], at: u64, len: u64) -> impl Iterator<Item = Segment> + '_ {
    let mut skip = at;
    let mut left = len;
    segments.iter().filter_map(move |seg| {
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            return None;
        }
        if left == 0 {
            return None;
        }
        let n = (seg_len - skip).min(left);
        // Within a segment checked to lie in guest RAM, so no overflow.
        let addr = GuestAddress(seg.addr.0 + skip);
        skip = 0;
        left -= n;
        Some(Segment {
            addr,
            len: n as u32,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Puts `descs` in the descriptor table of a 16-entry queue, offers the chain at `head`
    /// and parses it.
    fn parse(descs: &[(u64, u32, u16, u16)], head: u16) -> Result<ChainBuffers, ChainError> {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            vq.desc_table().store(i as u16, d).unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(u16::to_le(head));
        vq.avail().idx().store(u16::to_le(1));
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut buffers = ChainBuffers::new();
        buffers.parse(&mem, chain).map(|()| buffers)
    }

    #[test]
    fn a_good_chain_gives_readable_then_writable_buffers() {
        let b = parse(
            &[
                (0x8000, 16, NEXT, 1),
                (0x9000, 0, NEXT, 2),
                (0xa000, 512, WRITE | NEXT, 3),
                (0xb000, 1, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        assert_eq!(b.readable().len(), 1);
        assert_eq!(b.writable().len(), 2, "zero-length buffers are skipped");
        assert_eq!((b.readable_len(), b.writable_len()), (16, 513));
    }

    #[test]
    fn hostile_chains_are_refused() {
        // A loop: 0 -> 1 -> 0 -> ...
        let e = parse(&[(0x8000, 16, NEXT, 1), (0x9000, 16, NEXT, 0)], 0).unwrap_err();
        assert_eq!(e, ChainError::Truncated(0));
        // A next index beyond the table.
        let e = parse(&[(0x8000, 16, NEXT, 99)], 0).unwrap_err();
        assert_eq!(e, ChainError::Truncated(0));
        // A head beyond the table.
        assert_eq!(
            parse(&[(0x8000, 16, 0, 0)], 40).unwrap_err(),
            ChainError::Empty(40)
        );
        // Readable after writable.
        let e = parse(&[(0x8000, 16, WRITE | NEXT, 1), (0x9000, 16, 0, 0)], 0).unwrap_err();
        assert_eq!(e, ChainError::WrongOrder(0));
        // A buffer past the end of RAM, and one that wraps the address space.
        let e = parse(&[(0xf_f000, 0x2000, 0, 0)], 0).unwrap_err();
        assert!(matches!(e, ChainError::OutsideMemory { .. }), "{e:?}");
        let e = parse(&[(u64::MAX - 4, 16, 0, 0)], 0).unwrap_err();
        assert!(matches!(e, ChainError::OutsideMemory { .. }), "{e:?}");
        // An indirect table whose length is not a whole number of descriptors.
        let e = parse(&[(0x8000, 17, INDIRECT, 0)], 0).unwrap_err();
        assert!(
            matches!(e, ChainError::Empty(0) | ChainError::Truncated(0)),
            "{e:?}"
        );
    }

    #[test]
    fn ranges_split_across_segments() {
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 4,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 4,
            },
        ];
        let pieces: Vec<_> = ranges(&segs, 2, 4).map(|s| (s.addr.0, s.len)).collect();
        assert_eq!(pieces, [(0x1002, 2), (0x2000, 2)]);
        assert_eq!(ranges(&segs, 8, 4).count(), 0);
    }
}
