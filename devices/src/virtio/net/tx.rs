//! The transmit side: each chain the guest offers is one frame, header first, gathered into
//! a reused buffer and written to the tap. A full tap keeps the chain in the queue until the
//! tap is writable again; the rate limiter is charged once per frame, even when the frame
//! has to wait.

use std::io::ErrorKind;

use virtio_queue::DescriptorChain;

use super::header::{HEADER_LEN, MAX_FRAME};
use super::tap::Tap;
use crate::rate_limiter::RateLimiter;
use crate::virtio::chain::ChainBuffers;
use crate::virtio::serve::Served;
use crate::virtio::Counters;
use crate::GuestMemory;

/// The transmit state reused from frame to frame.
pub struct Transmitter {
    frame: Box<[u8]>,
    buffers: ChainBuffers,
    /// The head of the chain the rate limiter has been charged for but that is not sent yet.
    charged: Option<u16>,
    /// Whether the tap refused a frame because its queue was full.
    blocked: bool,
}

/// What sending one frame needs besides the transmitter.
pub struct Link<'a> {
    /// Where frames go.
    pub tap: &'a Tap,
    /// The transmit rate limiter.
    pub limiter: &'a mut RateLimiter,
    /// The device's counters.
    pub counters: &'a Counters,
    /// The device's name, for logs.
    pub name: &'a str,
}

impl Transmitter {
    /// A transmitter with its frame buffer.
    pub fn new() -> Self {
        Transmitter {
            frame: vec![0; MAX_FRAME].into_boxed_slice(),
            buffers: ChainBuffers::new(),
            charged: None,
            blocked: false,
        }
    }

    /// Whether a frame waits for the tap to become writable.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Forgets a wait for the tap (it is writable, or the queues were reset).
    pub fn unblock(&mut self) {
        self.blocked = false;
    }

    /// Back to the state of a new device.
    pub fn reset(&mut self) {
        self.charged = None;
        self.blocked = false;
    }

    /// Sends the frame in `chain`. A chain shorter than the header is a driver error; a
    /// frame longer than [`MAX_FRAME`] or one the tap refuses is counted as an error and
    /// returned to the guest unsent.
    pub fn send(
        &mut self,
        mem: &GuestMemory,
        chain: DescriptorChain<&GuestMemory>,
        link: &mut Link,
    ) -> Result<Served, String> {
        self.buffers.parse(mem, chain).map_err(|e| e.to_string())?;
        let (head, len) = (self.buffers.head(), self.buffers.readable_len());
        if len < HEADER_LEN as u64 {
            return Err(format!(
                "transmit chain {head} has {len} readable bytes, less than the \
                 {HEADER_LEN}-byte header"
            ));
        }
        if len > MAX_FRAME as u64 {
            Counters::add(&link.counters.errors, 1);
            log::debug!("{}: dropped a {len}-byte transmit frame", link.name);
            return Ok(Served::Used(0));
        }
        let len = len as usize;
        let payload = (len - HEADER_LEN) as u64;
        if self.charged != Some(head) {
            if !link.limiter.consume(payload) {
                Counters::add(&link.counters.throttled, 1);
                return Ok(Served::Later);
            }
            self.charged = Some(head);
        }
        let n = self.buffers.read_at(mem, 0, &mut self.frame[..len]);
        match link.tap.write(&self.frame[..n]) {
            Ok(_) => {
                Counters::add(&link.counters.bytes_from_guest, payload);
                Counters::add(&link.counters.ops_from_guest, 1);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.blocked = true;
                return Ok(Served::Later);
            }
            Err(e) => {
                Counters::add(&link.counters.errors, 1);
                log::debug!("{}: the tap refused a {len}-byte frame: {e}", link.name);
            }
        }
        self.charged = None;
        Ok(Served::Used(0))
    }
}
