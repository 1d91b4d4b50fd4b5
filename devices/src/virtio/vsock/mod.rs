//! virtio-vsock in Firecracker's hybrid model: guest stream sockets meet host programs on Unix
//! sockets. A host program connects to `uds_path` and writes `CONNECT <port>\n`; once the
//! guest accepts, it reads `OK <local_port>\n` and the stream is the guest's. A guest
//! connection to the host (CID 2) port P is forwarded to the socket `<uds_path>_P`, and reset
//! if nobody listens there. Data flows under the specification's credit-based flow control.
//!
//! Queues: rx (packets to the guest), tx (packets from it) and event (buffers the device
//! holds; it never needs to announce a transport reset, as it keeps no state across a
//! snapshot). Counters: packets and data bytes each way, connections made, and errors
//! (packets dropped as malformed or misaddressed, host socket failures).

mod connection;
mod credit;
mod handshake;
mod muxer;
mod packet;
mod ring;
#[cfg(test)]
mod tests;
mod unix;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::chain::ChainBuffers;
use super::serve::Served;
use super::{read_config_bytes, Counters, DeviceCore, Handled, VirtioDevice, COMMON_FEATURES};
use muxer::{Muxer, CONNECTION_BUFFER, LISTENER_TOKEN, TIMER_TOKEN};
use packet::{Header, HEADER_LEN};
pub use unix::{ListenError, Listener};

/// The rx queue: packets for the guest.
const RX_QUEUE: usize = 0;
/// The tx queue: packets from the guest.
const TX_QUEUE: usize = 1;
/// Each queue's size (rx, tx, event).
const QUEUE_SIZES: [u16; 3] = [256, 256, 64];
/// Packets served per queue per wake-up before the loop moves on to other devices.
const BUDGET: usize = 64;
/// The device's name in logs.
const NAME: &str = "virtio-vsock";

/// The vsock device.
pub struct Vsock {
    core: DeviceCore,
    guest_cid: u64,
    muxer: Muxer,
    buffers: ChainBuffers,
    /// One packet's payload, either way: the largest a guest may send within its credit.
    payload: Box<[u8]>,
    /// The driver reset the device; the loop drops the connections.
    reset_pending: bool,
}

impl Vsock {
    /// The device for a guest with context ID `guest_cid`, with host programs connecting
    /// through `listener` (whose path also names the sockets guest connections go to).
    pub fn new(guest_cid: u64, listener: Listener) -> std::io::Result<Self> {
        let core = DeviceCore::new()?;
        let muxer = Muxer::new(guest_cid, listener, core.counters.clone())?;
        Ok(Vsock {
            core,
            guest_cid,
            muxer,
            buffers: ChainBuffers::new(),
            payload: vec![0; CONNECTION_BUFFER as usize].into_boxed_slice(),
            reset_pending: false,
        })
    }

    /// Takes the guest's packets. Returns true if it stopped because RSTs wait for rx
    /// buffers.
    fn serve_tx(&mut self, ops: &mut EventOps) -> bool {
        let (muxer, buffers, payload) = (&mut self.muxer, &mut self.buffers, &mut self.payload);
        let counters = self.core.counters.clone();
        let mut paused = false;
        self.core.serve(NAME, TX_QUEUE, BUDGET, |mem, chain| {
            buffers.parse(mem, chain).map_err(|e| e.to_string())?;
            holds_header("tx packet", buffers.head(), buffers.readable_len())?;
            if !muxer.takes_guest_packets() {
                paused = true;
                return Ok(Served::Later);
            }
            let mut raw = [0u8; HEADER_LEN];
            buffers.read_at(mem, 0, &mut raw);
            let header = Header::from_bytes(&raw);
            Counters::add(&counters.ops_from_guest, 1);
            let len = header.len as usize;
            let carried = buffers.readable_len() - HEADER_LEN as u64;
            if u64::from(header.len) > carried
                || len > payload.len()
                || buffers.read_at(mem, HEADER_LEN as u64, &mut payload[..len]) != len
            {
                muxer.malformed(&header, ops);
            } else {
                muxer.guest_packet(&header, &payload[..len], ops);
            }
            Ok(Served::Used(0))
        });
        paused
    }

    /// Fills the guest's rx buffers with what the connections have for it.
    fn serve_rx(&mut self, ops: &mut EventOps) {
        if !self.muxer.has_packet() {
            return;
        }
        let (muxer, buffers, payload) = (&mut self.muxer, &mut self.buffers, &mut self.payload);
        let counters = self.core.counters.clone();
        self.core.serve(NAME, RX_QUEUE, BUDGET, |mem, chain| {
            buffers.parse(mem, chain).map_err(|e| e.to_string())?;
            holds_header("rx buffer", buffers.head(), buffers.writable_len())?;
            let room = (buffers.writable_len() - HEADER_LEN as u64).min(payload.len() as u64);
            let Some((header, len)) = muxer.next_packet(room as usize, payload, ops) else {
                return Ok(Served::Later);
            };
            buffers.write_at(mem, 0, &header.to_bytes());
            buffers.write_at(mem, HEADER_LEN as u64, &payload[..len]);
            Counters::add(&counters.ops_to_guest, 1);
            Counters::add(&counters.bytes_to_guest, len as u64);
            Ok(Served::Used((HEADER_LEN + len) as u32))
        });
    }

    /// Serves both queues: the guest's packets first (they may call for answers), then the
    /// packets for the guest. If the tx queue stopped for want of rx buffers and can go on
    /// now, its eventfd brings the loop back to it.
    fn pump(&mut self, ops: &mut EventOps) {
        let paused = self.serve_tx(ops);
        self.serve_rx(ops);
        if paused && self.muxer.takes_guest_packets() {
            if let Some(event) = self
                .core
                .activation
                .active()
                .and_then(|a| a.events.get(TX_QUEUE))
            {
                let _ = event.write(1);
            }
        }
    }
}

/// Whether a chain (`what`, with head `head`) of `len` bytes holds a packet header; a driver
/// error if not.
fn holds_header(what: &str, head: u16, len: u64) -> Result<(), String> {
    if len < HEADER_LEN as u64 {
        return Err(format!(
            "{what} {head} has {len} bytes, less than a {HEADER_LEN}-byte header"
        ));
    }
    Ok(())
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn core(&self) -> &DeviceCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }

    fn reset(&mut self) {
        self.reset_pending = true;
        self.core.activation.reset();
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        self.core.activation.init(ops);
        self.muxer.init(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match self.core.handle(&events, ops) {
            Handled::Activation => {
                if std::mem::take(&mut self.reset_pending) {
                    self.muxer.reset_all(ops);
                }
            }
            // New rx buffers, tx packets, or event buffers (held): the pump below serves them.
            Handled::Queue(_) => {}
            Handled::Device(LISTENER_TOKEN) => self.muxer.accept(ops),
            Handled::Device(TIMER_TOKEN) => self.muxer.tick(ops),
            Handled::Device(token) => self.muxer.host_event(token, events.event_set(), ops),
        }
        self.pump(ops);
    }
}
