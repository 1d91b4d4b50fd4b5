//! One connection between a guest stream socket and a host Unix stream: where it is in its
//! life, its flow control in both directions, and the packets it owes the guest. It never
//! sends the guest more than the guest's credit, never holds more than its own buffer, and
//! stops reading the host stream while the guest cannot take data.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::credit::Credit;
use super::handshake::{ConnectLine, LineStatus};
use super::packet::{Header, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::ring::Ring;

/// How long a host program has, from connecting to `uds_path`, to send its `CONNECT` line
/// and hear the guest's answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection the guest has closed may take to pass its last bytes on to a host
/// program that does not read them.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which connection a packet belongs to: the port on the host side and the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key {
    /// The host side's port: the port a guest connected to, or the one given to a host
    /// program's connection.
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host program connected to `uds_path`; its `CONNECT` line is being read.
    AwaitingLine,
    /// The guest is owed, or was sent, a REQUEST; its answer is awaited.
    Requesting,
    /// Data flows (in the directions neither side has shut down).
    Established,
}

/// What must become of a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It goes on.
    Keep,
    /// It ends, and the guest is told with an RST.
    Reset,
    /// It ends without a word to the guest (which reset it, or never heard of it).
    Close,
}

/// What a connection has for the guest when it is offered an rx buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// This header (the caller fills in the CIDs), followed by that many bytes of data.
    Packet(Header, usize),
    /// Nothing now.
    Nothing,
    /// The host stream failed: reset the connection.
    Reset,
}

/// The packets a connection owes the guest besides data.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    request: bool,
    response: bool,
    shutdown: bool,
    credit_update: bool,
}

/// One connection.
pub struct Connection {
    stream: UnixStream,
    key: Key,
    state: State,
    line: ConnectLine,
    /// Bytes from the guest the host stream has not taken yet (as big as `buf_alloc`).
    to_host: Ring,
    credit: Credit,
    owed: Owed,
    /// The host stream has data, or its end, not read yet.
    host_readable: bool,
    /// The host stream ended: the guest is owed, or was sent, SHUTDOWN SEND.
    host_done: bool,
    /// The SHUTDOWN flags the guest sent.
    peer_shutdown: u32,
    /// The host stream's write side is shut (the guest sends no more, and all was passed on).
    host_write_shut: bool,
    /// The REQUEST was put in an rx buffer.
    request_delivered: bool,
    deadline: Option<Instant>,
}

impl Connection {
    fn new(stream: UnixStream, key: Key, state: State, buf_alloc: u32) -> Self {
        Connection {
            stream,
            key,
            state,
            line: ConnectLine::default(),
            to_host: Ring::new(buf_alloc as usize),
            credit: Credit::new(buf_alloc),
            owed: Owed::default(),
            host_readable: false,
            host_done: false,
            peer_shutdown: 0,
            host_write_shut: false,
            request_delivered: false,
            deadline: None,
        }
    }

    /// A host program's connection to `uds_path` (non-blocking), with a buffer of
    /// `buf_alloc` bytes toward it; its `CONNECT` line is awaited until `now` plus
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn accepted(stream: UnixStream, buf_alloc: u32, now: Instant) -> Self {
        let mut c = Connection::new(stream, Key::default(), State::AwaitingLine, buf_alloc);
        c.deadline = Some(now + HANDSHAKE_TIMEOUT);
        c
    }

    /// A guest's connection, answering its `request`, to a host program on `stream`
    /// (non-blocking): established, and owing the guest a RESPONSE.
    pub fn connected(stream: UnixStream, key: Key, request: &Header, buf_alloc: u32) -> Self {
        let mut c = Connection::new(stream, key, State::Established, buf_alloc);
        c.credit.peer_says(request.buf_alloc, request.fwd_cnt);
        c.owed.response = true;
        c
    }

    /// Which connection this is.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Where it is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The host stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// When it is given up unless it gets further.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the guest knows of the connection, so that ending it takes an RST.
    pub fn guest_knows(&self) -> bool {
        match self.state {
            State::AwaitingLine => false,
            State::Requesting => self.request_delivered,
            State::Established => true,
        }
    }

    /// Reads what the host program has sent of its `CONNECT` line.
    pub fn read_line(&mut self) -> LineStatus {
        self.line.read_from(&mut self.stream)
    }

    /// After the `CONNECT` line: the connection is `key` and owes the guest a REQUEST.
    pub fn request(&mut self, key: Key) {
        self.key = key;
        self.state = State::Requesting;
        self.owed.request = true;
    }

    /// Takes a packet the guest sent on this connection, with its `payload` (already
    /// checked to be the `len` the header says).
    pub fn guest_packet(&mut self, header: &Header, payload: &[u8]) -> Verdict {
        self.credit.peer_says(header.buf_alloc, header.fwd_cnt);
        match (self.state, header.operation()) {
            (_, Some(Op::Rst)) => Verdict::Close,
            (State::Requesting, Some(Op::Response)) if self.request_delivered => self.accept(),
            (State::Established, Some(Op::Rw)) => self.take_data(payload),
            (State::Established, Some(Op::CreditUpdate)) => Verdict::Keep,
            (State::Established, Some(Op::CreditRequest)) => {
                self.owed.credit_update = true;
                Verdict::Keep
            }
            (State::Established, Some(Op::Shutdown)) => {
                self.peer_shutdown |= header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.wind_down()
            }
            _ => Verdict::Reset,
        }
    }

    /// The guest accepted: the host program hears `OK <local_port>`.
    fn accept(&mut self) -> Verdict {
        self.state = State::Established;
        self.deadline = None;
        let mut line = [0u8; 24];
        let len = {
            let mut at = &mut line[..];
            // "OK 4294967295\n" fits in 24 bytes, so this cannot fail.
            let _ = writeln!(at, "OK {}", self.key.local_port);
            24 - at.len()
        };
        // A fresh stream's send buffer holds far more than this line: a short write means
        // the host program is gone.
        match self.stream.write(&line[..len]) {
            Ok(n) if n == len => Verdict::Keep,
            _ => Verdict::Reset,
        }
    }

    /// RW: passes the data on to the host stream, keeping what it cannot take yet.
    fn take_data(&mut self, data: &[u8]) -> Verdict {
        let guest_said_done = self.peer_shutdown & SHUTDOWN_SEND != 0;
        if guest_said_done || self.host_write_shut || !self.credit.received(data.len() as u32) {
            // Data after SHUTDOWN SEND, or beyond the credit the guest was given.
            return Verdict::Reset;
        }
        let mut passed = 0;
        if self.to_host.is_empty() {
            match write_some(&mut self.stream, data) {
                Ok(n) => passed = n,
                Err(_) => return Verdict::Reset,
            }
        }
        // Fits: the ring is as big as the buffer the credit accounts for.
        self.to_host.push(&data[passed..]);
        self.forwarded(passed);
        Verdict::Keep
    }

    fn forwarded(&mut self, n: usize) {
        self.credit.forwarded(n as u32);
        if self.credit.update_due() {
            self.owed.credit_update = true;
        }
    }

    /// After the guest's SHUTDOWN, or once buffered data has been passed on: shuts the host
    /// stream's write side when the guest sends no more, and ends the connection when the
    /// guest has shut both directions and everything it sent was passed on (or, if the host
    /// program does not take it, at a deadline).
    fn wind_down(&mut self) -> Verdict {
        let guest_sends_no_more = self.peer_shutdown & SHUTDOWN_SEND != 0;
        if guest_sends_no_more && self.to_host.is_empty() && !self.host_write_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_write_shut = true;
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            if self.to_host.is_empty() {
                return Verdict::Reset;
            }
            self.deadline
                .get_or_insert_with(|| Instant::now() + CLOSE_TIMEOUT);
        }
        Verdict::Keep
    }

    /// Event on the host stream (`events` as epoll reported them; it was watched for
    /// `interest`).
    pub fn host_event(&mut self, events: EventSet, interest: EventSet) -> Verdict {
        let trouble = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
        if interest.contains(EventSet::IN) && (events.contains(EventSet::IN) || trouble) {
            self.host_readable = true;
        }
        if interest.contains(EventSet::OUT) && (events.contains(EventSet::OUT) || trouble) {
            match self.to_host.write_to(&mut self.stream) {
                Ok(n) => self.forwarded(n),
                Err(_) => return Verdict::Reset,
            }
            return self.wind_down();
        }
        Verdict::Keep
    }

    /// Whether host data may go to the guest (credit aside).
    fn may_send_data(&self) -> bool {
        self.state == State::Established
            && !self.host_done
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_packet(&self) -> bool {
        let o = self.owed;
        o.request
            || o.response
            || o.shutdown
            || o.credit_update
            || (self.host_readable && self.may_send_data() && self.credit.peer_free() > 0)
    }

    /// The events the host stream should be watched for: readable while data may go to the
    /// guest and the guest has credit, writable while data waits for the host.
    pub fn interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        match self.state {
            State::AwaitingLine => set |= EventSet::IN,
            State::Requesting => {}
            State::Established => {
                if self.may_send_data() && !self.host_readable && self.credit.peer_free() > 0 {
                    set |= EventSet::IN;
                }
                if !self.to_host.is_empty() {
                    set |= EventSet::OUT;
                }
            }
        }
        set
    }

    /// The next packet for the guest, for an rx buffer with `room` bytes after the header;
    /// data is read from the host stream into `buf`. Control packets come first, then data,
    /// then the SHUTDOWN that follows the host's end of stream.
    pub fn next_packet(&mut self, room: usize, buf: &mut [u8]) -> Outgoing {
        if self.owed.request {
            self.owed.request = false;
            self.request_delivered = true;
            return Outgoing::Packet(self.header(Op::Request, 0, 0), 0);
        }
        if self.owed.response {
            self.owed.response = false;
            return Outgoing::Packet(self.header(Op::Response, 0, 0), 0);
        }
        if self.host_readable && self.may_send_data() {
            let max = room.min(buf.len()).min(self.credit.peer_free() as usize);
            if max > 0 {
                match self.stream.read(&mut buf[..max]) {
                    Ok(0) => {
                        self.host_readable = false;
                        self.host_done = true;
                        self.owed.shutdown = true;
                    }
                    Ok(n) => {
                        self.credit.sent(n as u32);
                        return Outgoing::Packet(self.header(Op::Rw, 0, n as u32), n);
                    }
                    // Readiness is asked of epoll again.
                    Err(e) if is_transient(&e) => self.host_readable = false,
                    Err(_) => return Outgoing::Reset,
                }
            }
        }
        if self.owed.shutdown {
            self.owed.shutdown = false;
            return Outgoing::Packet(self.header(Op::Shutdown, SHUTDOWN_SEND, 0), 0);
        }
        if self.owed.credit_update {
            return Outgoing::Packet(self.header(Op::CreditUpdate, 0, 0), 0);
        }
        Outgoing::Nothing
    }

    /// A header from the host side of this connection, announcing our credit (which
    /// settles any credit update owed).
    fn header(&mut self, op: Op, flags: u32, len: u32) -> Header {
        let (buf_alloc, fwd_cnt) = self.credit.announce();
        self.owed.credit_update = false;
        Header {
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes as much of `data` as `out` takes without blocking.
fn write_some(out: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match out.write(&data[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUF: u32 = 4096;
    const GUEST_BUF: u32 = 1000;

    /// The two ends of a host stream: the connection's (non-blocking) and the program's.
    fn streams() -> (UnixStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        (ours, theirs)
    }

    /// A header of the guest's, from port 1000 to host port 52.
    fn header(op: Op, flags: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 52,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: GUEST_BUF,
            fwd_cnt,
            ..Header::default()
        }
    }

    /// A guest connection to host port 52, its RESPONSE already sent.
    fn guest_connection() -> (Connection, UnixStream) {
        let (ours, theirs) = streams();
        let key = Key {
            local_port: 52,
            peer_port: 1000,
        };
        let mut c = Connection::connected(ours, key, &header(Op::Request, 0, 0), BUF);
        let mut buf = [0u8; 64];
        let Outgoing::Packet(h, 0) = c.next_packet(64, &mut buf) else {
            panic!("no RESPONSE");
        };
        assert_eq!(h.operation(), Some(Op::Response));
        assert_eq!((h.src_port, h.dst_port, h.buf_alloc), (52, 1000, BUF));
        (c, theirs)
    }

    fn drain(stream: &mut UnixStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    #[test]
    fn a_host_program_connects_with_a_line_and_hears_ok() {
        let (ours, mut theirs) = streams();
        let mut c = Connection::accepted(ours, BUF, Instant::now());
        assert!(!c.guest_knows());
        assert_eq!(c.interest(), EventSet::IN);
        theirs.write_all(b"conn").unwrap();
        assert_eq!(c.read_line(), LineStatus::Incomplete);
        theirs.write_all(b"ect 52\nearly data").unwrap();
        assert_eq!(c.read_line(), LineStatus::Port(52));
        let key = Key {
            local_port: 1 << 30,
            peer_port: 52,
        };
        c.request(key);
        assert!(c.has_packet());
        assert_eq!(c.interest(), EventSet::empty(), "nothing is read before OK");
        let mut buf = [0u8; 64];
        let Outgoing::Packet(h, 0) = c.next_packet(64, &mut buf) else {
            panic!("no REQUEST");
        };
        assert_eq!(h.operation(), Some(Op::Request));
        assert_eq!((h.src_port, h.dst_port), (1 << 30, 52));
        assert!(c.guest_knows());
        let mut response = header(Op::Response, 0, 0);
        (response.src_port, response.dst_port) = (52, 1 << 30);
        assert_eq!(c.guest_packet(&response, &[]), Verdict::Keep);
        assert_eq!(c.state(), State::Established);
        assert_eq!(c.deadline(), None);
        assert_eq!(drain(&mut theirs), format!("OK {}\n", 1 << 30).as_bytes());
        // The bytes after the line are the stream's first data.
        assert_eq!(c.interest(), EventSet::IN);
        assert_eq!(c.host_event(EventSet::IN, EventSet::IN), Verdict::Keep);
        let Outgoing::Packet(h, n) = c.next_packet(64, &mut buf) else {
            panic!("no data");
        };
        assert_eq!(
            (h.operation(), &buf[..n]),
            (Some(Op::Rw), &b"early data"[..])
        );
    }

    #[test]
    fn the_guest_refusing_or_answering_out_of_turn_ends_the_connection() {
        let (ours, _theirs) = streams();
        let mut c = Connection::accepted(ours, BUF, Instant::now());
        c.request(Key {
            local_port: 7,
            peer_port: 52,
        });
        // A RESPONSE to a REQUEST the guest has not been sent yet.
        assert_eq!(
            c.guest_packet(&header(Op::Response, 0, 0), &[]),
            Verdict::Reset
        );
        let (mut c, _theirs) = guest_connection();
        assert_eq!(c.guest_packet(&header(Op::Rst, 0, 0), &[]), Verdict::Close);
        let (mut c, _theirs) = guest_connection();
        assert_eq!(
            c.guest_packet(&header(Op::Response, 0, 0), &[]),
            Verdict::Reset
        );
        let mut unknown = header(Op::Rw, 0, 0);
        unknown.op = 99;
        let (mut c, _theirs) = guest_connection();
        assert_eq!(c.guest_packet(&unknown, &[]), Verdict::Reset);
    }

    #[test]
    fn the_host_gets_no_more_than_the_guest_credit_allows() {
        let (mut c, mut theirs) = guest_connection();
        theirs.write_all(&[7u8; 3000]).unwrap();
        assert_eq!(c.host_event(EventSet::IN, c.interest()), Verdict::Keep);
        let mut buf = [0u8; 4096];
        let mut sent = 0;
        while let Outgoing::Packet(h, n) = c.next_packet(400, &mut buf) {
            assert_eq!(h.operation(), Some(Op::Rw));
            assert!(n <= 400);
            sent += n;
        }
        assert_eq!(sent, GUEST_BUF as usize, "exactly the guest's buffer");
        assert!(!c.has_packet());
        assert_eq!(
            c.interest(),
            EventSet::empty(),
            "the host is not read without credit"
        );
        // The guest consumed 600 bytes and says so.
        let update = header(Op::CreditUpdate, 0, 600);
        assert_eq!(c.guest_packet(&update, &[]), Verdict::Keep);
        assert!(
            c.has_packet(),
            "known to be readable, so no need to watch it"
        );
        let mut more = 0;
        while let Outgoing::Packet(_, n) = c.next_packet(4096, &mut buf) {
            more += n;
        }
        assert_eq!(more, 600);
    }

    #[test]
    fn guest_data_waits_for_a_slow_host_and_credit_follows_what_it_takes() {
        let (mut c, mut theirs) = guest_connection();
        // Fill the host stream's socket buffer so that nothing more can be written.
        let mut filled = 0;
        while let Ok(n) = c.stream.write(&[0u8; 65536]) {
            filled += n;
        }
        assert!(filled > 0);
        let data: Vec<u8> = (0..BUF).map(|i| i as u8).collect();
        assert_eq!(
            c.guest_packet(&rw(&data[..3000]), &data[..3000]),
            Verdict::Keep
        );
        assert_eq!(
            c.to_host.free(),
            BUF as usize - 3000,
            "held while the host is full"
        );
        assert!(
            !c.has_packet(),
            "nothing passed on, so no credit to announce"
        );
        assert_eq!(c.interest(), EventSet::IN | EventSet::OUT);
        // More than the buffer holds resets the connection.
        let (mut over, _t) = guest_connection();
        while over.stream.write(&[0u8; 65536]).is_ok() {}
        assert!(over.guest_packet(&rw(&data), &data) == Verdict::Keep);
        assert_eq!(
            over.guest_packet(&rw(&data[..1]), &data[..1]),
            Verdict::Reset
        );
        // The host reads: the held data follows, and the guest hears of the room.
        assert_eq!(drain(&mut theirs).len(), filled);
        assert_eq!(c.host_event(EventSet::OUT, c.interest()), Verdict::Keep);
        assert_eq!(drain(&mut theirs), &data[..3000]);
        assert!(c.to_host.is_empty());
        let mut buf = [0u8; 64];
        let Outgoing::Packet(h, 0) = c.next_packet(64, &mut buf) else {
            panic!("no credit update");
        };
        assert_eq!(h.operation(), Some(Op::CreditUpdate));
        assert_eq!((h.buf_alloc, h.fwd_cnt), (BUF, 3000));
        assert_eq!(c.next_packet(64, &mut buf), Outgoing::Nothing);
    }

    fn rw(data: &[u8]) -> Header {
        Header {
            len: data.len() as u32,
            ..header(Op::Rw, 0, 0)
        }
    }

    #[test]
    fn a_credit_request_is_answered() {
        let (mut c, _theirs) = guest_connection();
        let request = header(Op::CreditRequest, 0, 0);
        assert_eq!(c.guest_packet(&request, &[]), Verdict::Keep);
        let mut buf = [0u8; 64];
        let Outgoing::Packet(h, 0) = c.next_packet(64, &mut buf) else {
            panic!("no credit update");
        };
        assert_eq!((h.operation(), h.buf_alloc), (Some(Op::CreditUpdate), BUF));
    }

    #[test]
    fn shutdowns_close_each_direction_then_the_connection() {
        let (mut c, mut theirs) = guest_connection();
        assert_eq!(c.guest_packet(&rw(b"last"), b"last"), Verdict::Keep);
        let send = header(Op::Shutdown, SHUTDOWN_SEND, 0);
        assert_eq!(c.guest_packet(&send, &[]), Verdict::Keep);
        assert_eq!(drain(&mut theirs), b"last");
        let mut end = [0u8; 1];
        assert_eq!(theirs.read(&mut end).unwrap(), 0, "the host sees the end");
        // Data after SHUTDOWN SEND breaks the rules.
        let (mut broken, _t) = guest_connection();
        broken.guest_packet(&send, &[]);
        assert_eq!(broken.guest_packet(&rw(b"x"), b"x"), Verdict::Reset);
        // The host ends its side: the guest gets the data, then SHUTDOWN SEND.
        theirs.write_all(b"bye").unwrap();
        theirs.shutdown(Shutdown::Write).unwrap();
        c.host_event(EventSet::IN, c.interest());
        let mut buf = [0u8; 64];
        assert!(
            matches!(c.next_packet(64, &mut buf), Outgoing::Packet(h, 3) if h.op == Op::Rw as u16)
        );
        let Outgoing::Packet(h, 0) = c.next_packet(64, &mut buf) else {
            panic!("no SHUTDOWN");
        };
        assert_eq!(
            (h.operation(), h.flags),
            (Some(Op::Shutdown), SHUTDOWN_SEND)
        );
        assert_eq!(c.interest(), EventSet::empty());
        // The guest shuts both directions: nothing is held, so the connection ends.
        let both = header(Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND, 0);
        assert_eq!(c.guest_packet(&both, &[]), Verdict::Reset);
    }

    #[test]
    fn a_full_shutdown_waits_for_held_data_until_a_deadline() {
        let (mut c, mut theirs) = guest_connection();
        while c.stream.write(&[0u8; 65536]).is_ok() {}
        assert_eq!(c.guest_packet(&rw(b"tail"), b"tail"), Verdict::Keep);
        let both = header(Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND, 0);
        assert_eq!(
            c.guest_packet(&both, &[]),
            Verdict::Keep,
            "data is still held"
        );
        assert!(c.deadline().is_some());
        let got = drain(&mut theirs);
        assert_eq!(c.host_event(EventSet::OUT, c.interest()), Verdict::Reset);
        let rest = drain(&mut theirs);
        assert!(got.len() > 4 && rest.ends_with(b"tail"));
    }

    #[test]
    fn a_vanished_host_program_resets_the_connection() {
        let (mut c, theirs) = guest_connection();
        drop(theirs);
        assert_eq!(c.guest_packet(&rw(b"x"), b"x"), Verdict::Reset);
        let (mut c, theirs) = guest_connection();
        while c.stream.write(&[0u8; 65536]).is_ok() {}
        assert_eq!(c.guest_packet(&rw(b"x"), b"x"), Verdict::Keep);
        drop(theirs);
        let hang_up = EventSet::HANG_UP | EventSet::OUT;
        assert_eq!(c.host_event(hang_up, c.interest()), Verdict::Reset);
    }
}
