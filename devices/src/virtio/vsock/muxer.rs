//! The host side of the vsock device: the listening socket at `uds_path`, the connections
//! (at most [`MAX_CONNECTIONS`]) found by their ports and by their event token, the order in
//! which they get rx buffers, the RSTs owed for packets that belong to no connection, and
//! the deadlines of handshakes and closes. Every socket is non-blocking, and each is watched
//! only for what its connection can act on, so a full or silent peer never spins the loop.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, Key, Outgoing, State, Verdict};
use super::handshake::LineStatus;
use super::packet::{Header, Op, HOST_CID, TYPE_STREAM};
use super::unix::{self, Listener};
use crate::virtio::activation::DEVICE_TOKEN_BASE;
use crate::virtio::Counters;

/// Most connections open at once, handshakes included.
pub const MAX_CONNECTIONS: usize = 1024;
/// Bytes each connection buffers from the guest toward the host (its `buf_alloc`).
pub const CONNECTION_BUFFER: u32 = 256 * 1024;
/// Event data of the listening socket.
pub const LISTENER_TOKEN: u32 = DEVICE_TOKEN_BASE;
/// Event data of the deadline timer.
pub const TIMER_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
/// Event data of connection `i`'s host stream is this plus `i`.
pub const FIRST_CONNECTION_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;
/// RSTs waiting for rx buffers beyond which the device takes no more guest packets.
const REPLY_BACKLOG: usize = 64;
/// Most RSTs held at all, those of connections ended from the host side included.
const MAX_REPLIES: usize = MAX_CONNECTIONS + REPLY_BACKLOG;
/// The first port given to a host program's connection; later ones count up from it.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// How often deadlines are checked while there are any.
const TICK: Duration = Duration::from_millis(250);
/// Host connections accepted per wake-up of the listening socket.
const ACCEPT_BUDGET: usize = 32;

/// A connection and how the loop sees it.
struct Slot {
    conn: Connection,
    /// The events its stream is registered for (empty: not registered).
    interest: EventSet,
    /// Whether it is in the queue of connections with packets for the guest.
    queued: bool,
}

/// The host side of the device.
pub struct Muxer {
    guest_cid: u64,
    listener: Listener,
    /// The listening socket is not watched (accepting failed; the timer watches it again).
    listener_paused: bool,
    slots: Vec<Option<Slot>>,
    /// Free slot indexes, lowest last.
    free: Vec<usize>,
    keys: HashMap<Key, usize>,
    /// Slots with packets for the guest, served in turn.
    ready: VecDeque<usize>,
    /// RSTs for the guest that belong to no open connection.
    replies: VecDeque<Header>,
    timer: TimerFd,
    timer_armed: bool,
    next_local_port: u32,
    counters: Arc<Counters>,
}

impl Muxer {
    /// The host side of a guest with context ID `guest_cid`, listening on `listener`;
    /// `counters` are the device's.
    pub fn new(
        guest_cid: u64,
        listener: Listener,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        Ok(Muxer {
            guest_cid,
            listener,
            listener_paused: false,
            slots: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            free: (0..MAX_CONNECTIONS).rev().collect(),
            keys: HashMap::with_capacity(MAX_CONNECTIONS),
            ready: VecDeque::with_capacity(MAX_CONNECTIONS),
            replies: VecDeque::with_capacity(MAX_REPLIES),
            timer: TimerFd::new()?,
            timer_armed: false,
            next_local_port: FIRST_LOCAL_PORT,
            counters,
        })
    }

    /// Registers the listening socket and the timer (call from the device's `init`).
    pub fn init(&mut self, ops: &mut EventOps) {
        self.watch_listener(ops);
        let timer = Events::with_data(&self.timer, TIMER_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(timer) {
            log::error!("vsock: cannot watch the deadline timer: {e}");
        }
    }

    fn watch_listener(&mut self, ops: &mut EventOps) {
        let events = Events::with_data(&self.listener, LISTENER_TOKEN, EventSet::IN);
        match ops.add(events) {
            Ok(()) => self.listener_paused = false,
            Err(e) => log::error!(
                "vsock: cannot watch {}: {e}",
                self.listener.path().display()
            ),
        }
    }

    /// Whether the guest's packets can be taken: few enough RSTs wait for rx buffers.
    pub fn takes_guest_packets(&self) -> bool {
        self.replies.len() < REPLY_BACKLOG
    }

    /// Whether anything waits for an rx buffer.
    pub fn has_packet(&self) -> bool {
        !self.replies.is_empty() || !self.ready.is_empty()
    }

    /// The listening socket is readable: takes the host programs' connections.
    pub fn accept(&mut self, ops: &mut EventOps) {
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                Err(e) => {
                    // Out of descriptors, say: stop watching for a tick, or the loop spins.
                    log::warn!("vsock: accepting a host connection failed: {e}");
                    Counters::add(&self.counters.errors, 1);
                    let _ = ops.remove(Events::empty(&self.listener));
                    self.listener_paused = true;
                    self.arm_timer();
                    return;
                }
            };
            let Some(index) = self.free.pop() else {
                log::warn!("vsock: {MAX_CONNECTIONS} connections are open; refused a host one");
                Counters::add(&self.counters.errors, 1);
                continue;
            };
            self.slots[index] = Some(Slot {
                conn: Connection::accepted(stream, CONNECTION_BUFFER, Instant::now()),
                interest: EventSet::empty(),
                queued: false,
            });
            self.refresh(index, ops);
        }
    }

    /// The timer fired: ends connections past their deadline, and watches the listening
    /// socket again if accepting had failed.
    pub fn tick(&mut self, ops: &mut EventOps) {
        // The timer is readable, so this does not block.
        let _ = self.timer.wait();
        if self.listener_paused {
            self.watch_listener(ops);
        }
        let now = Instant::now();
        let mut waiting = false;
        for index in 0..self.slots.len() {
            let Some(deadline) = self.slots[index].as_ref().and_then(|s| s.conn.deadline()) else {
                continue;
            };
            if deadline <= now {
                log::debug!("vsock: connection slot {index} timed out");
                self.end(index, ops);
            } else {
                waiting = true;
            }
        }
        if !waiting && !self.listener_paused {
            let _ = self.timer.clear();
            self.timer_armed = false;
        }
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        match self.timer.reset(TICK, Some(TICK)) {
            Ok(()) => self.timer_armed = true,
            Err(e) => log::error!("vsock: cannot arm the deadline timer: {e}"),
        }
    }

    /// An event on connection `token`'s host stream.
    pub fn host_event(&mut self, token: u32, events: EventSet, ops: &mut EventOps) {
        let index = token.wrapping_sub(FIRST_CONNECTION_TOKEN) as usize;
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            log::debug!("vsock: event for closed connection slot {index}");
            return;
        };
        let verdict = if slot.conn.state() == State::AwaitingLine {
            match slot.conn.read_line() {
                LineStatus::Incomplete => Verdict::Keep,
                LineStatus::Invalid => {
                    log::debug!("vsock: a host program sent no valid CONNECT line");
                    Verdict::Close
                }
                LineStatus::Port(port) => self.start_request(index, port),
            }
        } else {
            slot.conn.host_event(events, slot.interest)
        };
        self.settle(index, verdict, ops);
    }

    /// Gives connection `index` a local port and owes the guest its REQUEST to `port`.
    fn start_request(&mut self, index: usize, port: u32) -> Verdict {
        let Some(key) = self.free_key(port) else {
            return Verdict::Close;
        };
        if let Some(slot) = self.slots[index].as_mut() {
            slot.conn.request(key);
            self.keys.insert(key, index);
        }
        Verdict::Keep
    }

    /// A local port that makes `(local port, peer_port)` unused.
    fn free_key(&mut self, peer_port: u32) -> Option<Key> {
        for _ in 0..=MAX_CONNECTIONS {
            let local_port = self.next_local_port;
            self.next_local_port = local_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = Key {
                local_port,
                peer_port,
            };
            if !self.keys.contains_key(&key) {
                return Some(key);
            }
        }
        None
    }

    /// A packet from the guest, whose `payload` is the `len` bytes its header announces.
    pub fn guest_packet(&mut self, header: &Header, payload: &[u8], ops: &mut EventOps) {
        if header.src_cid != self.guest_cid || header.dst_cid != HOST_CID {
            log::debug!(
                "vsock: dropped a packet from CID {} to CID {}",
                header.src_cid,
                header.dst_cid
            );
            Counters::add(&self.counters.errors, 1);
            return;
        }
        let op = header.operation();
        if header.kind != TYPE_STREAM || op.is_none() {
            Counters::add(&self.counters.errors, 1);
        }
        let key = Key {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        let Some(&index) = self.keys.get(&key) else {
            match op {
                Some(Op::Request) if header.kind == TYPE_STREAM => {
                    self.guest_connects(key, header, ops)
                }
                Some(Op::Rst) => {}
                _ => self.reply(header.reset_reply()),
            }
            return;
        };
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let was_established = slot.conn.state() == State::Established;
        let verdict = if header.kind != TYPE_STREAM || op == Some(Op::Request) {
            Verdict::Reset
        } else {
            slot.conn.guest_packet(header, payload)
        };
        if verdict == Verdict::Keep {
            if op == Some(Op::Rw) {
                Counters::add(&self.counters.bytes_from_guest, payload.len() as u64);
            }
            if !was_established && slot.conn.state() == State::Established {
                Counters::add(&self.counters.connections, 1);
            }
        }
        if verdict == Verdict::Reset {
            // Answer this very packet, whatever the connection knew.
            self.remove(index, ops);
            self.reply(header.reset_reply());
        } else {
            self.settle(index, verdict, ops);
        }
    }

    /// A packet whose `len` does not fit its buffers or the device: its connection, if any,
    /// is reset.
    pub fn malformed(&mut self, header: &Header, ops: &mut EventOps) {
        log::debug!(
            "vsock: dropped a packet whose length, {}, is wrong",
            header.len
        );
        Counters::add(&self.counters.errors, 1);
        if header.src_cid != self.guest_cid || header.dst_cid != HOST_CID {
            return;
        }
        let key = Key {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        if let Some(&index) = self.keys.get(&key) {
            self.remove(index, ops);
        }
        if header.operation() != Some(Op::Rst) {
            self.reply(header.reset_reply());
        }
    }

    /// The guest's REQUEST to host port `key.local_port`: connects to `<uds_path>_<port>`,
    /// or answers RST if nobody listens there.
    fn guest_connects(&mut self, key: Key, request: &Header, ops: &mut EventOps) {
        let Some(&index) = self.free.last() else {
            log::warn!("vsock: {MAX_CONNECTIONS} connections are open; refused a guest one");
            self.reply(request.reset_reply());
            return;
        };
        let mut path = OsString::from(self.listener.path());
        path.push(format!("_{}", key.local_port));
        match unix::connect(Path::new(&path)) {
            Ok(stream) => {
                self.free.pop();
                self.slots[index] = Some(Slot {
                    conn: Connection::connected(stream, key, request, CONNECTION_BUFFER),
                    interest: EventSet::empty(),
                    queued: false,
                });
                self.keys.insert(key, index);
                Counters::add(&self.counters.connections, 1);
                self.refresh(index, ops);
            }
            Err(e) => {
                log::debug!("vsock: guest connection to {path:?} refused: {e}");
                self.reply(request.reset_reply());
            }
        }
    }

    /// Queues an RST for the guest.
    fn reply(&mut self, header: Header) {
        if self.replies.len() >= MAX_REPLIES {
            log::debug!("vsock: too many RSTs wait for rx buffers; dropped one");
            Counters::add(&self.counters.errors, 1);
            return;
        }
        self.replies.push_back(header);
    }

    /// The next packet for an rx buffer with `room` bytes after the header; its data, if
    /// any, is in `buf`.
    pub fn next_packet(
        &mut self,
        room: usize,
        buf: &mut [u8],
        ops: &mut EventOps,
    ) -> Option<(Header, usize)> {
        loop {
            if let Some(header) = self.replies.pop_front() {
                return Some((header, 0));
            }
            let index = self.ready.pop_front()?;
            let Some(slot) = self.slots[index].as_mut() else {
                continue;
            };
            slot.queued = false;
            match slot.conn.next_packet(room, buf) {
                Outgoing::Packet(mut header, len) => {
                    header.src_cid = HOST_CID;
                    header.dst_cid = self.guest_cid;
                    self.refresh(index, ops);
                    return Some((header, len));
                }
                Outgoing::Nothing => self.refresh(index, ops),
                Outgoing::Reset => self.end(index, ops),
            }
        }
    }

    /// Acts on `verdict` for connection `index`.
    fn settle(&mut self, index: usize, verdict: Verdict, ops: &mut EventOps) {
        match verdict {
            Verdict::Keep => self.refresh(index, ops),
            Verdict::Reset => self.end(index, ops),
            Verdict::Close => {
                self.remove(index, ops);
            }
        }
    }

    /// Ends connection `index`, with an RST if the guest knows of it.
    fn end(&mut self, index: usize, ops: &mut EventOps) {
        let Some(conn) = self.remove(index, ops) else {
            return;
        };
        if conn.guest_knows() {
            let key = conn.key();
            self.reply(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                kind: TYPE_STREAM,
                op: Op::Rst as u16,
                ..Header::default()
            });
        }
    }

    /// Makes the loop watch connection `index` for what it can act on, queues it if it has
    /// a packet for the guest, and keeps the timer running while it has a deadline.
    fn refresh(&mut self, index: usize, ops: &mut EventOps) {
        let Some(slot) = self.slots[index].as_mut() else {
            return;
        };
        let wanted = slot.conn.interest();
        if wanted != slot.interest {
            let fd = slot.conn.stream().as_raw_fd();
            let token = FIRST_CONNECTION_TOKEN + index as u32;
            let done = if wanted.is_empty() {
                ops.remove(Events::empty_raw(fd))
            } else if slot.interest.is_empty() {
                ops.add(Events::with_data_raw(fd, token, wanted))
            } else {
                ops.modify(Events::with_data_raw(fd, token, wanted))
            };
            if let Err(e) = done {
                log::error!("vsock: cannot watch a connection: {e}");
                Counters::add(&self.counters.errors, 1);
                slot.interest = EventSet::empty();
                let _ = ops.remove(Events::empty_raw(fd));
                self.end(index, ops);
                return;
            }
            slot.interest = wanted;
        }
        if slot.conn.has_packet() && !slot.queued {
            slot.queued = true;
            self.ready.push_back(index);
        }
        if slot.conn.deadline().is_some() {
            self.arm_timer();
        }
    }

    /// Takes connection `index` out of every table and the loop's watch; dropping what is
    /// returned closes its host stream.
    fn remove(&mut self, index: usize, ops: &mut EventOps) -> Option<Connection> {
        let slot = self.slots.get_mut(index)?.take()?;
        if !slot.interest.is_empty() {
            let _ = ops.remove(Events::empty_raw(slot.conn.stream().as_raw_fd()));
        }
        if slot.queued {
            self.ready.retain(|&i| i != index);
        }
        if self.keys.get(&slot.conn.key()) == Some(&index) {
            self.keys.remove(&slot.conn.key());
        }
        self.free.push(index);
        Some(slot.conn)
    }

    /// Drops every connection and every packet owed (the driver reset the device).
    pub fn reset_all(&mut self, ops: &mut EventOps) {
        for index in 0..self.slots.len() {
            self.remove(index, ops);
        }
        self.replies.clear();
        self.ready.clear();
    }
}
