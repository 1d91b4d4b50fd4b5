//! virtio-rng (entropy): fills the driver's buffers with bytes from the host's getrandom(2),
//! at the pace its rate limiter allows. Counters: bytes and requests to the guest.

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use super::activation::{watch_limiter, DEVICE_TOKEN_BASE};
use super::chain::ChainBuffers;
use super::serve::Served;
use super::{Counters, DeviceCore, Handled, VirtioDevice, COMMON_FEATURES};
use crate::rate_limiter::RateLimiter;

/// The one queue's size.
const QUEUE_SIZE: u16 = 256;
/// Chains served per wake-up before the loop moves on to other devices.
const BUDGET: usize = 64;
/// Most bytes given per request (Linux asks for at most a page or so).
const MAX_REQUEST: usize = 64 * 1024;
/// Event data of the rate limiter's timer.
const LIMITER_TOKEN: u32 = DEVICE_TOKEN_BASE;

/// The entropy device.
pub struct Rng {
    core: DeviceCore,
    limiter: RateLimiter,
    buffers: ChainBuffers,
    random: Box<[u8]>,
}

impl Rng {
    /// An entropy device limited by `limiter`.
    pub fn new(limiter: RateLimiter) -> std::io::Result<Self> {
        Ok(Rng {
            core: DeviceCore::new()?,
            limiter,
            buffers: ChainBuffers::new(),
            random: vec![0; MAX_REQUEST].into_boxed_slice(),
        })
    }

    fn serve(&mut self) {
        let (buffers, random, limiter) = (&mut self.buffers, &mut self.random, &mut self.limiter);
        let counters = self.core.counters.clone();
        self.core.serve("virtio-rng", 0, BUDGET, |mem, chain| {
            buffers.parse(mem, chain).map_err(|e| e.to_string())?;
            let len = buffers.writable_len().min(MAX_REQUEST as u64) as usize;
            if !limiter.consume(len as u64) {
                Counters::add(&counters.throttled, 1);
                return Ok(Served::Later);
            }
            fill_random(&mut random[..len]);
            let written = buffers.write_at(mem, 0, &random[..len]);
            Counters::add(&counters.bytes_to_guest, written as u64);
            Counters::add(&counters.ops_to_guest, 1);
            Ok(Served::Used(written as u32))
        });
    }
}

/// Fills `buf` from getrandom(2).
fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom(2) writes at most `rest.len()` bytes into `rest`, which is valid
        // for writes of that length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            log::error!(
                "virtio-rng: getrandom failed: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
}

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.activation.init(ops);
        watch_limiter(ops, &self.limiter, LIMITER_TOKEN, "virtio-rng");
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.core.handle(&events, ops) {
            Handled::Activation | Handled::Queue(_) => self.serve(),
            Handled::Device(LIMITER_TOKEN) => {
                self.limiter.timer_expired();
                self.serve();
            }
            Handled::Device(other) => log::debug!("{}: unexpected event {other}", "virtio-rng"),
        }
    }
}
