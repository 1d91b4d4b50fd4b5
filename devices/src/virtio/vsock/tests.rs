//! The device as a driver sees it: packets put on its queues in guest memory, served on an
//! event manager, with real Unix sockets on the host side.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::VirtqUsedElem;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::packet::{Header, Op, HEADER_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{Listener, Vsock, RX_QUEUE, TX_QUEUE};
use crate::virtio::{ActiveQueues, VirtioDevice, COMMON_FEATURES};
use crate::GuestMemory;

const GUEST_CID: u64 = 3;
const QUEUE_LEN: u16 = 64;
/// Bytes of each rx buffer after its header, as Linux posts them.
const RX_ROOM: u32 = 4096;

/// Where a queue's parts lie, from its base: descriptor table, available ring, used ring.
/// (virtio-queue's MockSplitQueue places the used ring inside the available ring of queues
/// larger than a few entries, so the tests lay the rings out themselves.)
const DESC_TABLE: u64 = 0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;

/// One queue as a driver keeps it: where its rings are, which descriptor comes next, what
/// the device has returned so far.
struct DriverQueue {
    base: u64,
    /// Guest memory for this queue's buffers: 8 KiB per descriptor index.
    buffers: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// Queue `index`'s rings and buffers, each in its own part of guest memory.
    fn new(index: u64) -> Self {
        DriverQueue {
            base: index * 0x1_0000,
            buffers: 0x10_0000 + index * 0x10_0000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The queue as the device gets it.
    fn queue(&self) -> Queue {
        let mut q = Queue::new(QUEUE_LEN).unwrap();
        q.set_size(QUEUE_LEN);
        q.set_ready(true);
        let split = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
        let (lo, hi) = split(self.base + DESC_TABLE);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.base + AVAIL_RING);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.base + USED_RING);
        q.set_used_ring_address(lo, hi);
        q
    }

    fn buffer(&self, desc: u16) -> GuestAddress {
        GuestAddress(self.buffers + u64::from(desc) * 0x2000)
    }

    /// Offers a chain of buffers with these contents, lengths and directions (writable or
    /// not); returns the head index.
    fn offer(&mut self, mem: &GuestMemory, parts: &[(&[u8], u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(data, len, writable)) in parts.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % QUEUE_LEN;
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < parts.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            mem.write_slice(data, self.buffer(index)).unwrap();
            let desc = Descriptor::new(self.buffer(index).0, len, flags, self.next_desc);
            let at = self.base + DESC_TABLE + 16 * u64::from(index);
            mem.write_obj(RawDescriptor::from(desc), GuestAddress(at))
                .unwrap();
        }
        let slot = self.base + AVAIL_RING + 4 + 2 * u64::from(self.avail_idx % QUEUE_LEN);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.base + AVAIL_RING + 2))
            .unwrap();
        head
    }

    /// The chains the device returned since the last call: (head, length written).
    fn used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx: u16 = mem
            .read_obj(GuestAddress(self.base + USED_RING + 2))
            .unwrap();
        assert!(
            idx.wrapping_sub(self.used_seen) <= QUEUE_LEN,
            "used index {idx} after {}",
            self.used_seen
        );
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.base + USED_RING + 4 + 8 * u64::from(self.used_seen % QUEUE_LEN);
            let elem: VirtqUsedElem = mem.read_obj(GuestAddress(at)).unwrap();
            out.push((elem.id() as u16, elem.len()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A device on an event manager, driven as a guest driver would.
struct Bench {
    mem: GuestMemory,
    device: Arc<Mutex<Vsock>>,
    manager: EventManager<Arc<Mutex<Vsock>>>,
    events: Vec<EventFd>,
    rx: DriverQueue,
    tx: DriverQueue,
    uds: PathBuf,
    /// Socket files of host programs, removed at the end.
    sockets: Vec<PathBuf>,
}

impl Bench {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ember-vsock-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&uds);
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x80_0000)]).unwrap();
        let device = Arc::new(Mutex::new(
            Vsock::new(GUEST_CID, Listener::bind(&uds).unwrap()).unwrap(),
        ));
        let mut manager = EventManager::new().unwrap();
        manager.add_subscriber(device.clone());
        let mut driver: Vec<DriverQueue> = (0..3).map(DriverQueue::new).collect();
        let queues = driver.iter().map(DriverQueue::queue).collect();
        let events: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let active = ActiveQueues {
            mem: mem.clone(),
            queues,
            events: events.iter().map(|e| e.try_clone().unwrap()).collect(),
            acked_features: COMMON_FEATURES,
        };
        device.lock().unwrap().activate(active).unwrap();
        let mut bench = Bench {
            mem,
            device,
            manager,
            events,
            tx: driver.swap_remove(TX_QUEUE),
            rx: driver.swap_remove(RX_QUEUE),
            uds,
            sockets: Vec::new(),
        };
        bench.run();
        bench
    }

    /// Runs the event manager until nothing is left to do.
    fn run(&mut self) {
        for _ in 0..1000 {
            if self.manager.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("the device never settled");
    }

    /// Sends the device a packet on the tx queue (header and payload in two buffers).
    fn send(&mut self, header: Header, payload: &[u8]) {
        let bytes = header.to_bytes();
        if payload.is_empty() {
            self.tx
                .offer(&self.mem, &[(&bytes, HEADER_LEN as u32, false)]);
        } else {
            let parts = [
                (&bytes[..], HEADER_LEN as u32, false),
                (payload, payload.len() as u32, false),
            ];
            self.tx.offer(&self.mem, &parts);
        }
        self.events[TX_QUEUE].write(1).unwrap();
        self.run();
    }

    /// Offers `n` rx buffers (header and room in two descriptors, as Linux 6.1 does).
    fn offer_rx(&mut self, n: usize) {
        for _ in 0..n {
            let parts = [(&[][..], HEADER_LEN as u32, true), (&[][..], RX_ROOM, true)];
            self.rx.offer(&self.mem, &parts);
        }
        self.events[RX_QUEUE].write(1).unwrap();
        self.run();
    }

    /// The packets the device put in rx buffers since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.run();
        let used = self.rx.used(&self.mem);
        used.into_iter()
            .map(|(head, len)| {
                let mut raw = [0u8; HEADER_LEN];
                self.mem.read_slice(&mut raw, self.rx.buffer(head)).unwrap();
                let header = Header::from_bytes(&raw);
                assert_eq!(
                    len,
                    HEADER_LEN as u32 + header.len,
                    "used length of {head}: {header:?}"
                );
                let mut data = vec![0u8; header.len as usize];
                self.mem
                    .read_slice(&mut data, self.rx.buffer((head + 1) % QUEUE_LEN))
                    .unwrap();
                (header, data)
            })
            .collect()
    }

    /// A host program listening on `<uds_path>_<port>`.
    fn host_program(&mut self, port: u32) -> UnixListener {
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{port}"));
        let path = PathBuf::from(path);
        let _ = std::fs::remove_file(&path);
        self.sockets.push(path.clone());
        UnixListener::bind(&path).unwrap()
    }

    fn counter(
        &self,
        pick: impl Fn(&crate::virtio::Counters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        let device = self.device.lock().unwrap();
        pick(&device.core().counters).load(Ordering::Relaxed)
    }

    fn broken(&self) -> bool {
        self.device.lock().unwrap().core().signals.is_broken()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A header from the guest's port 1000 to host port `port`.
fn guest(op: Op, port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: 2,
        src_port: 1000,
        dst_port: port,
        kind: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

fn ops(packets: &[(Header, Vec<u8>)]) -> Vec<Option<Op>> {
    packets.iter().map(|(h, _)| h.operation()).collect()
}

fn read_exactly(stream: &mut UnixStream, n: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn a_guest_connection_reaches_the_host_program_and_data_flows_both_ways() {
    let mut b = Bench::new("guest-connects");
    let program = b.host_program(52);
    b.offer_rx(4);
    b.send(guest(Op::Request, 52), &[]);
    let (mut stream, _) = program.accept().unwrap();
    let got = b.received();
    assert_eq!(ops(&got), [Some(Op::Response)]);
    let h = got[0].0;
    assert_eq!(
        (h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (2, GUEST_CID, 52, 1000)
    );
    assert_eq!(h.buf_alloc, super::CONNECTION_BUFFER);

    let rw = Header {
        len: 5,
        ..guest(Op::Rw, 52)
    };
    b.send(rw, b"hello");
    assert_eq!(read_exactly(&mut stream, 5), b"hello");
    stream.write_all(b"world").unwrap();
    let got = b.received();
    assert_eq!(ops(&got), [Some(Op::Rw)]);
    assert_eq!(got[0].1, b"world");
    assert_eq!(b.counter(|c| &c.bytes_from_guest), 5);
    assert_eq!(b.counter(|c| &c.bytes_to_guest), 5);
    assert_eq!(b.counter(|c| &c.connections), 1);

    // The guest closes: the host program sees the end, the guest gets its RST.
    let both = Header {
        flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
        ..guest(Op::Shutdown, 52)
    };
    b.send(both, &[]);
    let mut end = [0u8; 1];
    assert_eq!(stream.read(&mut end).unwrap(), 0);
    assert_eq!(ops(&b.received()), [Some(Op::Rst)]);
}

#[test]
fn a_host_program_connects_through_uds_path_and_hears_ok() {
    let mut b = Bench::new("host-connects");
    let mut program = UnixStream::connect(&b.uds).unwrap();
    program.write_all(b"Connect 52\n").unwrap();
    b.run();
    b.offer_rx(2);
    let got = b.received();
    assert_eq!(ops(&got), [Some(Op::Request)]);
    let request = got[0].0;
    assert_eq!((request.dst_cid, request.dst_port), (GUEST_CID, 52));
    let local_port = request.src_port;
    assert!(local_port >= 1 << 30);
    let response = Header {
        src_port: 52,
        dst_port: local_port,
        ..guest(Op::Response, 0)
    };
    b.send(response, &[]);
    let ok = format!("OK {local_port}\n");
    assert_eq!(read_exactly(&mut program, ok.len()), ok.as_bytes());
}

#[test]
fn a_refused_host_connection_is_closed_without_ok() {
    let mut b = Bench::new("host-refused");
    let mut program = UnixStream::connect(&b.uds).unwrap();
    program.write_all(b"CONNECT 99\n").unwrap();
    b.run();
    b.offer_rx(1);
    let request = b.received()[0].0;
    let rst = Header {
        src_port: 99,
        dst_port: request.src_port,
        ..guest(Op::Rst, 0)
    };
    b.send(rst, &[]);
    let mut buf = [0u8; 8];
    assert_eq!(program.read(&mut buf).unwrap(), 0, "closed, no OK");
    // Garbage instead of a CONNECT line is closed too.
    let mut junk = UnixStream::connect(&b.uds).unwrap();
    junk.write_all(b"HELLO\n").unwrap();
    b.run();
    assert_eq!(junk.read(&mut buf).unwrap(), 0);
}

#[test]
fn the_host_program_gets_no_further_than_the_guest_credit() {
    let mut b = Bench::new("credit");
    let program = b.host_program(7);
    let request = Header {
        buf_alloc: 6000,
        ..guest(Op::Request, 7)
    };
    b.send(request, &[]);
    let (mut stream, _) = program.accept().unwrap();
    stream.write_all(&[0x5a; 20_000]).unwrap();
    b.offer_rx(8);
    let got = b.received();
    let data: usize = got.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(ops(&got)[0], Some(Op::Response));
    assert_eq!(data, 6000, "exactly the guest's buffer");
    assert!(got.iter().all(|(_, d)| d.len() <= RX_ROOM as usize));
    // The guest read 5000 bytes and says so: 5000 more come.
    let update = Header {
        buf_alloc: 6000,
        fwd_cnt: 5000,
        ..guest(Op::CreditUpdate, 7)
    };
    b.send(update, &[]);
    b.offer_rx(4);
    let data: usize = b.received().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(data, 5000);
}

#[test]
fn hostile_packets_are_dropped_or_reset() {
    let mut b = Bench::new("hostile");
    b.offer_rx(8);
    // From a CID that is not the guest's, and to a CID that is not the host's: dropped.
    b.send(
        Header {
            src_cid: 9,
            ..guest(Op::Request, 52)
        },
        &[],
    );
    b.send(
        Header {
            dst_cid: 7,
            ..guest(Op::Request, 52)
        },
        &[],
    );
    assert!(b.received().is_empty());
    assert_eq!(b.counter(|c| &c.errors), 2);
    // Nobody listens on host port 52: RST. So for data, an unknown op and a datagram type.
    b.send(guest(Op::Request, 52), &[]);
    b.send(guest(Op::Rw, 52), &[]);
    let mut unknown = guest(Op::Rw, 52);
    unknown.op = 42;
    b.send(unknown, &[]);
    let mut seqpacket = guest(Op::Request, 52);
    seqpacket.kind = 2;
    b.send(seqpacket, &[]);
    // A length past the buffers that carry the packet.
    let long = Header {
        len: 100,
        ..guest(Op::Rw, 52)
    };
    b.send(long, b"short");
    // An RST for nothing needs no answer.
    b.send(guest(Op::Rst, 52), &[]);
    let got = b.received();
    assert_eq!(ops(&got), [Some(Op::Rst); 5]);
    for (h, _) in &got {
        assert_eq!((h.dst_cid, h.dst_port, h.src_port), (GUEST_CID, 1000, 52));
    }
    assert!(!b.broken());
}

#[test]
fn rsts_waiting_for_rx_buffers_hold_the_tx_queue_back() {
    let mut b = Bench::new("backlog");
    // Nobody listens on port 52 and the guest posts no rx buffers: every REQUEST earns an RST
    // that has to wait.
    for port in 0..70 {
        b.send(
            Header {
                src_port: port,
                ..guest(Op::Request, 52)
            },
            &[],
        );
    }
    let taken = b.tx.used(&b.mem).len();
    assert_eq!(taken, 64, "the tx queue stops once 64 RSTs wait");
    let mut rsts = 0;
    while rsts < 70 {
        b.offer_rx(16);
        let got = b.received();
        assert!(!got.is_empty(), "stalled after {rsts} RSTs");
        assert!(got.iter().all(|(h, _)| h.operation() == Some(Op::Rst)));
        rsts += got.len();
    }
    assert_eq!(
        b.tx.used(&b.mem).len(),
        6,
        "the rest were taken once RSTs went out"
    );
}

#[test]
fn a_tx_chain_shorter_than_a_header_breaks_the_device() {
    let mut b = Bench::new("short-chain");
    b.tx.offer(&b.mem, &[(&[0u8; 20], 20, false)]);
    b.events[TX_QUEUE].write(1).unwrap();
    b.run();
    assert!(b.broken());
    // A device needing a reset serves nothing more.
    b.send(guest(Op::Request, 52), &[]);
    b.offer_rx(1);
    assert!(b.received().is_empty());
}

#[test]
fn an_rx_buffer_shorter_than_a_header_breaks_the_device() {
    let mut b = Bench::new("short-rx");
    b.rx.offer(&b.mem, &[(&[], 16, true)]);
    b.send(guest(Op::Rw, 52), &[]);
    assert!(b.broken());
}

#[test]
fn a_driver_reset_drops_every_connection() {
    let mut b = Bench::new("reset");
    let program = b.host_program(52);
    b.send(guest(Op::Request, 52), &[]);
    let (mut stream, _) = program.accept().unwrap();
    b.device.lock().unwrap().reset();
    b.run();
    let mut buf = [0u8; 1];
    assert_eq!(
        stream.read(&mut buf).unwrap(),
        0,
        "the host program sees the end"
    );
    let path = b.uds.clone();
    drop(b);
    assert!(!path.exists(), "the socket file goes with the device");
}

/// A tiny deterministic generator (xorshift64*), enough to vary packets reproducibly.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// One of `choices`, or once in `wild` times any u32.
    fn pick(&mut self, choices: &[u32], wild: u64) -> u32 {
        let r = self.next();
        if r.is_multiple_of(wild) {
            (r >> 32) as u32
        } else {
            choices[(r >> 8) as usize % choices.len()]
        }
    }
}

#[test]
fn thousands_of_random_packets_never_break_the_device() {
    let mut b = Bench::new("random");
    let program = b.host_program(52);
    program.set_nonblocking(true).unwrap();
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut rx_waiting = 0;
    let payload = [0xa5u8; 256];
    for _ in 0..3000 {
        let op = random.pick(&[1, 1, 2, 3, 4, 5, 5, 5, 6, 7], 8);
        let carried = (random.next() % 200) as usize;
        let header = Header {
            src_cid: u64::from(random.pick(&[GUEST_CID as u32], 20)),
            dst_cid: u64::from(random.pick(&[2], 20)),
            src_port: random.pick(&[1000, 1001, 1002], 10),
            dst_port: random.pick(&[52, 53], 10),
            len: random.pick(&[carried as u32, 0, 100], 10),
            kind: random.pick(&[1], 10) as u16,
            op: op as u16,
            flags: random.pick(&[1, 2, 3], 5),
            buf_alloc: random.pick(&[4096, 65536], 5),
            fwd_cnt: random.pick(&[0, 4096], 5),
        };
        b.send(header, &payload[..carried]);
        assert_eq!(b.tx.used(&b.mem).len(), 1, "every packet is taken at once");
        while let Ok((stream, _)) = program.accept() {
            stream.set_nonblocking(true).unwrap();
            streams.push(stream);
        }
        for stream in &mut streams {
            let mut sink = [0u8; 4096];
            while let Ok(1..) = stream.read(&mut sink) {}
            if random.next().is_multiple_of(4) {
                let _ = stream.write(&payload[..64]);
            }
        }
        while rx_waiting < 8 {
            b.offer_rx(1);
            rx_waiting += 1;
        }
        for (h, data) in b.received() {
            rx_waiting -= 1;
            assert_eq!((h.src_cid, h.dst_cid), (2, GUEST_CID));
            // An RST answers in the type of the packet it refuses; all else is a stream's.
            assert!(h.operation().is_some(), "{h:?}");
            assert!(
                h.kind == TYPE_STREAM || h.operation() == Some(Op::Rst),
                "{h:?}"
            );
            assert_eq!(data.len(), h.len as usize);
        }
        assert!(!b.broken(), "a header-sized packet broke the device");
    }
    assert!(
        b.counter(|c| &c.connections) > 0,
        "no connection was ever made"
    );
    assert!(b.counter(|c| &c.errors) > 0);
}
