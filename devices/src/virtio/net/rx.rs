//! The receive side: one frame read from the tap waits in a reused buffer until the guest
//! has posted room for it, then goes into one receive chain, or with MRG_RXBUF into as many
//! chains as it needs, with `num_buffers` set in its header. A frame never leaves the buffer
//! except into the guest, or as a counted error when the guest's buffers cannot hold it.

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::header::{set_num_buffers, HEADER_LEN, MAX_FRAME};
use crate::virtio::chain::ChainBuffers;
use crate::GuestMemory;

/// What became of the waiting frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It is in the guest, in this many chains (not yet signalled).
    Delivered(u16),
    /// The guest has not posted enough room; the frame keeps waiting and the chains taken
    /// are back in the queue.
    NoRoom,
    /// Even the most chains a frame may use cannot hold it: the caller drops it and counts
    /// an error. The chains are back in the queue.
    TooLarge,
}

/// The frame waiting for the guest, and the state reused from frame to frame.
pub struct Receiver {
    frame: Box<[u8]>,
    len: usize,
    charged: bool,
    first: ChainBuffers,
    next: ChainBuffers,
    /// (head, bytes) of each chain the frame went into.
    used: Vec<(u16, u32)>,
}

impl Receiver {
    /// An empty receiver for queues of at most `max_chains` entries.
    pub fn new(max_chains: u16) -> Self {
        Receiver {
            frame: vec![0; MAX_FRAME].into_boxed_slice(),
            len: 0,
            charged: false,
            first: ChainBuffers::new(),
            next: ChainBuffers::new(),
            used: Vec::with_capacity(usize::from(max_chains)),
        }
    }

    /// The buffer to read the next frame into (only while no frame waits).
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.frame
    }

    /// Makes the first `len` bytes of the buffer the waiting frame.
    pub fn hold(&mut self, len: usize) {
        self.len = len.min(self.frame.len());
        self.charged = false;
    }

    /// The waiting frame's length with its header, if a frame waits.
    pub fn waiting(&self) -> Option<usize> {
        (self.len > 0).then_some(self.len)
    }

    /// Whether the waiting frame has passed the rate limiter already.
    pub fn is_charged(&self) -> bool {
        self.charged
    }

    /// Records that the waiting frame has passed the rate limiter.
    pub fn charge(&mut self) {
        self.charged = true;
    }

    /// Forgets the waiting frame.
    pub fn discard(&mut self) {
        self.len = 0;
        self.charged = false;
    }

    /// Puts the waiting frame into the receive queue: one chain, or with `mergeable` up to
    /// the queue's size. A chain without room for the header is a driver error; the text
    /// says which.
    pub fn deliver(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        mergeable: bool,
    ) -> Result<Delivery, String> {
        let len = self.len;
        if len == 0 {
            return Ok(Delivery::NoRoom);
        }
        let max_chains = if mergeable {
            usize::from(queue.size())
        } else {
            1
        };
        let start = queue.next_avail();
        self.used.clear();
        let mut placed = 0;
        while placed < len {
            if self.used.len() == max_chains {
                queue.set_next_avail(start);
                return Ok(Delivery::TooLarge);
            }
            let chain = queue
                .iter(mem)
                .map_err(|e| format!("receive queue: {e}"))?
                .next();
            let Some(chain) = chain else {
                queue.set_next_avail(start);
                return Ok(Delivery::NoRoom);
            };
            // The first chain is written last, once num_buffers is known.
            let buffers = if self.used.is_empty() {
                &mut self.first
            } else {
                &mut self.next
            };
            buffers.parse(mem, chain).map_err(|e| e.to_string())?;
            let room = buffers.writable_len();
            if room < HEADER_LEN as u64 {
                return Err(format!(
                    "receive chain {} has {room} writable bytes, less than the \
                     {HEADER_LEN}-byte header",
                    buffers.head()
                ));
            }
            let n = (len - placed).min(room.min(u64::from(u32::MAX)) as usize);
            if !self.used.is_empty() {
                buffers.write_at(mem, 0, &self.frame[placed..placed + n]);
            }
            self.used.push((buffers.head(), n as u32));
            placed += n;
        }
        let count = self.used.len() as u16;
        set_num_buffers(&mut self.frame, count);
        let first_len = self.used[0].1 as usize;
        self.first.write_at(mem, 0, &self.frame[..first_len]);
        for &(head, n) in &self.used {
            queue
                .add_used(mem, head, n)
                .map_err(|e| format!("receive queue used ring: {e}"))?;
        }
        self.discard();
        Ok(Delivery::Delivered(count))
    }
}

/// Asks the driver to notify the queue when it posts more buffers (also when chains it has
/// posted were taken and given back, as a frame that needs several does). Returns whether
/// buffers arrived meanwhile, so the caller tries again instead of waiting.
pub fn wait_for_buffers(queue: &mut Queue, mem: &GuestMemory) -> Result<bool, String> {
    let resume_at = queue.next_avail();
    let posted = queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map_err(|e| format!("receive queue: {e}"))?;
    // With EVENT_IDX the driver notifies when it fills the entry at `avail_event`, which
    // enable_notification sets from next_avail: point it past what is already posted.
    queue.set_next_avail(posted.0);
    let arrived = queue.enable_notification(mem);
    queue.set_next_avail(resume_at);
    arrived.map_err(|e| format!("receive queue: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{memory, TestQueue};
    use super::*;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use vm_memory::{Bytes, GuestAddress};

    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    /// A queue offering `chains`, each a list of (address, length, flags) descriptors.
    fn queue(mem: &GuestMemory, chains: &[&[(u64, u32, u16)]]) -> Queue {
        let mut driver = TestQueue::new(mem, 0);
        for chain in chains {
            driver.post(chain);
        }
        driver.queue()
    }

    /// A frame of `len` bytes (header included) whose payload counts up.
    fn receiver_with_frame(len: usize) -> Receiver {
        let mut rx = Receiver::new(16);
        for (i, b) in rx.buffer()[..len].iter_mut().enumerate() {
            *b = if i < HEADER_LEN { 0 } else { i as u8 };
        }
        rx.hold(len);
        rx
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn a_frame_fills_one_chain_with_num_buffers_1() {
        let mem = memory();
        let mut q = queue(&mem, &[&[(0x8000, 2048, WRITE)]]);
        let mut rx = receiver_with_frame(100);
        assert_eq!(
            rx.deliver(&mut q, &mem, false).unwrap(),
            Delivery::Delivered(1)
        );
        let got = read(&mem, 0x8000, 100);
        assert_eq!(&got[10..12], &[1, 0]);
        assert_eq!(got[99], 99);
        assert_eq!(rx.waiting(), None);
        assert_eq!(q.next_used(), 1);
    }

    #[test]
    fn mergeable_frames_spread_over_chains_and_count_them() {
        let mem = memory();
        let mut q = queue(
            &mem,
            &[
                &[(0x8000, 64, WRITE)],
                &[(0x9000, 32, WRITE), (0xa000, 32, WRITE)],
                &[(0xb000, 64, WRITE)],
            ],
        );
        let mut rx = receiver_with_frame(150);
        assert_eq!(
            rx.deliver(&mut q, &mem, true).unwrap(),
            Delivery::Delivered(3)
        );
        assert_eq!(&read(&mem, 0x8000, 12)[10..], &[3, 0]);
        assert_eq!(read(&mem, 0x9000, 1)[0], 64);
        assert_eq!(read(&mem, 0xa000, 1)[0], 96);
        assert_eq!(read(&mem, 0xb000, 22)[21], 149);
        assert_eq!(q.next_used(), 3);
    }

    #[test]
    fn without_room_the_frame_waits_and_the_chains_go_back() {
        let mem = memory();
        let mut q = queue(&mem, &[&[(0x8000, 64, WRITE)]]);
        let mut rx = receiver_with_frame(150);
        assert_eq!(rx.deliver(&mut q, &mem, true).unwrap(), Delivery::NoRoom);
        assert_eq!(rx.waiting(), Some(150));
        assert_eq!((q.next_avail(), q.next_used()), (0, 0));
        // Not mergeable: one chain too small is too small.
        assert_eq!(rx.deliver(&mut q, &mem, false).unwrap(), Delivery::TooLarge);
        assert_eq!((q.next_avail(), q.next_used()), (0, 0));
    }

    #[test]
    fn a_receive_chain_without_room_for_the_header_is_a_driver_error() {
        let mem = memory();
        let mut q = queue(&mem, &[&[(0x8000, 8, WRITE)]]);
        let e = receiver_with_frame(60)
            .deliver(&mut q, &mem, true)
            .unwrap_err();
        assert!(e.contains("less than the 12-byte header"), "{e}");
        // A device-readable buffer only: no writable room at all.
        let mut q = queue(&mem, &[&[(0x8000, 2048, 0)]]);
        assert!(receiver_with_frame(60)
            .deliver(&mut q, &mem, false)
            .is_err());
    }

    #[test]
    fn waiting_for_buffers_points_avail_event_past_what_was_posted() {
        let mem = memory();
        let mut driver = TestQueue::new(&mem, 0);
        driver.post(&[(0x8000, 64, WRITE)]);
        driver.post(&[(0x9000, 64, WRITE)]);
        let mut q = driver.queue();
        q.set_event_idx(true);
        assert!(!wait_for_buffers(&mut q, &mem).unwrap());
        assert_eq!(q.next_avail(), 0, "next_avail is kept");
        // avail_event follows the used ring's 16 entries.
        let avail_event = driver.used_addr() + 4 + 16 * 8;
        let v: u16 = mem.read_obj(GuestAddress(avail_event)).unwrap();
        assert_eq!(v, 2);
    }
}
