//! The device as a whole, with a datagram socket standing in for the tap: frames both ways,
//! back-pressure from the guest, oversized frames, the rate limiter, hostile chains.

use std::os::unix::net::UnixDatagram;

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::testing::{memory, TestQueue};
use super::*;
use crate::rate_limiter::BucketConfig;
use crate::GuestMemory;

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// Where the test queues' rings are.
const RX_RINGS: u64 = 0;
const TX_RINGS: u64 = 0x1000;
/// Where the guest's frame buffers are.
const RX_BUFFERS: u64 = 0x10000;
const TX_BUFFERS: u64 = 0x40000;

fn unlimited() -> RateLimiter {
    RateLimiter::new(None, None).unwrap()
}

/// A device on a socket pair; the other end plays the host's side of the tap.
fn device(tx_limiter: RateLimiter) -> (Net, UnixDatagram) {
    let (host, device_end) = UnixDatagram::pair().unwrap();
    host.set_nonblocking(true).unwrap();
    let mac = Some([2, 0, 0, 0, 0, 1]);
    let net = Net::new(
        "test",
        Tap::from_socket(device_end),
        mac,
        unlimited(),
        tx_limiter,
    );
    (net.unwrap(), host)
}

/// A device on a socket pair, activated with `features` and a fresh receive and transmit
/// queue in `mem`.
struct Fixture<'a> {
    net: Net,
    host: UnixDatagram,
    rxq: TestQueue<'a>,
    txq: TestQueue<'a>,
}

fn active(mem: &GuestMemory, features: u64, tx_limiter: RateLimiter) -> Fixture<'_> {
    let (mut net, host) = device(tx_limiter);
    let (rxq, txq) = (TestQueue::new(mem, RX_RINGS), TestQueue::new(mem, TX_RINGS));
    let queues = ActiveQueues {
        mem: mem.clone(),
        queues: vec![rxq.queue(), txq.queue()],
        events: vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()],
        acked_features: features,
    };
    net.activate(queues).unwrap();
    Fixture {
        net,
        host,
        rxq,
        txq,
    }
}

/// A frame with a zero header and `len` bytes of payload that count up from `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
    f
}

fn counter(net: &Net, pick: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
    pick(&net.core.counters).load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn frames_go_from_the_guest_to_the_tap_and_back() {
    let mem = memory();
    let mut f = active(&mem, COMMON_FEATURES | MRG_RXBUF, unlimited());

    // Transmit: header and frame split over two buffers arrive as one frame.
    let sent = frame(100, 7);
    mem.write_slice(&sent[..HEADER_LEN], GuestAddress(TX_BUFFERS))
        .unwrap();
    mem.write_slice(&sent[HEADER_LEN..], GuestAddress(TX_BUFFERS + 0x1000))
        .unwrap();
    f.txq.post(&[
        (TX_BUFFERS, HEADER_LEN as u32, 0),
        (TX_BUFFERS + 0x1000, 100, 0),
    ]);
    f.net.serve_tx();
    let mut got = [0u8; 2048];
    let n = f.host.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &sent[..]);
    assert_eq!(f.txq.used(), [(0, 0)]);
    assert_eq!(counter(&f.net, |c| &c.bytes_from_guest), 100);

    // Receive: the frame lands with num_buffers = 1.
    f.rxq.post(&[(RX_BUFFERS, 2048, WRITE)]);
    f.host.send(&frame(60, 1)).unwrap();
    f.net.serve_rx();
    assert_eq!(f.rxq.used(), [(0, 72)]);
    let mut landed = vec![0u8; 72];
    mem.read_slice(&mut landed, GuestAddress(RX_BUFFERS))
        .unwrap();
    let mut expected = frame(60, 1);
    expected[10] = 1;
    assert_eq!(landed, expected);
    assert_eq!(counter(&f.net, |c| &c.ops_to_guest), 1);
    assert_eq!(counter(&f.net, |c| &c.errors), 0);
}

#[test]
fn without_receive_buffers_the_tap_is_not_read_and_nothing_is_lost() {
    let mem = memory();
    let mut f = active(&mem, COMMON_FEATURES | MRG_RXBUF, unlimited());
    for seed in 0..3 {
        f.host.send(&frame(200, seed)).unwrap();
    }
    f.net.serve_rx();
    // One frame waits in the device, and the tap is no longer watched for input.
    assert_eq!(f.net.rx.waiting(), Some(HEADER_LEN + 200));
    assert!(!f.net.wanted_events().contains(EventSet::IN));
    // The guest posts room for all three: they arrive in order, and the tap is watched again.
    for i in 0..3 {
        f.rxq.post(&[(RX_BUFFERS + i * 0x1000, 1024, WRITE)]);
    }
    f.net.serve_rx();
    assert_eq!(f.rxq.used().len(), 3);
    for i in 0..3u8 {
        let mut first = [0u8; 1];
        let at = RX_BUFFERS + u64::from(i) * 0x1000 + HEADER_LEN as u64;
        mem.read_slice(&mut first, GuestAddress(at)).unwrap();
        assert_eq!(first[0], i, "frame {i} out of order");
    }
    assert!(f.net.wanted_events().contains(EventSet::IN));
    assert_eq!(counter(&f.net, |c| &c.errors), 0);
}

#[test]
fn a_frame_too_large_for_the_buffers_is_counted_and_the_buffers_kept() {
    let mem = memory();
    // Without MRG_RXBUF each frame must fit one chain.
    let mut f = active(&mem, COMMON_FEATURES, unlimited());
    f.rxq.post(&[(RX_BUFFERS, 128, WRITE)]);
    f.host.send(&frame(500, 0)).unwrap();
    f.host.send(&frame(50, 9)).unwrap();
    f.net.serve_rx();
    assert_eq!(counter(&f.net, |c| &c.errors), 1);
    assert_eq!(f.rxq.used(), [(0, 62)], "the small frame took the chain");
}

/// An active device whose transmit limiter lets one frame through every `refill_time_ms`,
/// with `frames` 60-byte frames posted for transmission.
fn one_frame_per(mem: &GuestMemory, refill_time_ms: u64, frames: usize) -> Fixture<'_> {
    let one_op = BucketConfig {
        size: 1,
        one_time_burst: 0,
        refill_time_ms,
    };
    let mut f = active(
        mem,
        COMMON_FEATURES,
        RateLimiter::new(None, Some(one_op)).unwrap(),
    );
    mem.write_slice(&frame(60, 0), GuestAddress(TX_BUFFERS))
        .unwrap();
    for _ in 0..frames {
        f.txq.post(&[(TX_BUFFERS, 72, 0)]);
    }
    f
}

#[test]
fn the_transmit_rate_limiter_holds_frames_in_the_queue() {
    let mem = memory();
    let mut f = one_frame_per(&mem, 60_000, 2);
    f.net.serve_tx();
    assert_eq!(f.txq.used().len(), 1, "the second frame waits");
    assert_eq!(counter(&f.net, |c| &c.throttled), 1);
    let mut buf = [0u8; 128];
    assert!(f.host.recv(&mut buf).is_ok());
    assert!(f.host.recv(&mut buf).is_err(), "only one frame was sent");
}

#[test]
fn new_limiter_buckets_apply_once_a_wait_under_way_ends() {
    let mem = memory();
    let mut f = one_frame_per(&mem, 100, 3);
    f.net.serve_tx();
    assert_eq!(f.txq.used().len(), 1);
    f.net.update_limiters((None, None), (None, None));
    std::thread::sleep(std::time::Duration::from_millis(150));
    f.net.tx_limiter.timer_expired();
    f.net.serve_tx();
    assert_eq!(
        f.txq.used().len(),
        3,
        "unlimited now: both held frames went"
    );
}

#[test]
fn a_transmit_chain_shorter_than_the_header_breaks_the_device() {
    let mem = memory();
    let mut f = active(&mem, COMMON_FEATURES, unlimited());
    f.txq.post(&[(TX_BUFFERS, 8, 0)]);
    f.net.serve_tx();
    assert!(f.net.core.signals.is_broken());
    assert!(
        f.net.wanted_events().is_empty(),
        "a broken device leaves the tap alone"
    );
}

#[test]
fn a_receive_chain_without_room_for_the_header_breaks_the_device() {
    let mem = memory();
    let mut f = active(&mem, COMMON_FEATURES | MRG_RXBUF, unlimited());
    f.rxq.post(&[(RX_BUFFERS, 4, WRITE)]);
    f.host.send(&frame(60, 0)).unwrap();
    f.net.serve_rx();
    assert!(f.net.core.signals.is_broken());
}

#[test]
fn a_receive_chain_outside_guest_memory_breaks_the_device() {
    let mem = memory();
    let mut f = active(&mem, COMMON_FEATURES | MRG_RXBUF, unlimited());
    f.rxq.post(&[(0xff000, 0x10000, WRITE)]);
    f.host.send(&frame(60, 0)).unwrap();
    f.net.serve_rx();
    assert!(f.net.core.signals.is_broken());
}

/// Random descriptor tables and available rings on both queues, with frames waiting on the
/// tap, two thousand times: the device never panics, never uses more chains than were
/// offered, and either serves, waits (for the guest or the tap) or marks itself broken. Every
/// other round the rings are plausible (buffers in RAM, the right direction, heads in the
/// table) but their sizes and chaining are random, so that frames also get through.
#[test]
fn hostile_queues_never_panic_or_overrun() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let flag_sets = [0, 1, WRITE, WRITE | 1, 4]; // 1: NEXT, 4: INDIRECT
    let mut delivered = 0;
    for round in 0..2000 {
        let plausible = round % 2 == 0;
        let mem = memory();
        let features = [COMMON_FEATURES, COMMON_FEATURES | MRG_RXBUF][(random() % 2) as usize];
        let mut f = active(&mem, features, unlimited());
        let mut offered = [0u16; 2];
        for (q, driver) in [&f.rxq, &f.txq].into_iter().enumerate() {
            for i in 0..16u16 {
                let r = random();
                let (addr, len, flags, next) = if plausible {
                    let chained = if r % 4 == 0 { 1 } else { 0 };
                    let direction = if q == RX_QUEUE { WRITE } else { 0 };
                    let len = (random() % 4096) as u32;
                    (
                        0x10000 + u64::from(i) * 0x1000,
                        len,
                        direction | chained,
                        i + 1,
                    )
                } else {
                    let addr = match r % 4 {
                        0 => random() << 20 | random(),     // anywhere at all
                        1 => 0x10_0000 - random() % 64,     // straddling the end of RAM
                        _ => 0x10000 + random() % 0xe_0000, // in RAM
                    };
                    let len = match (r >> 4) % 4 {
                        0 => random() as u32,
                        1 => 0,
                        _ => (random() % 4096) as u32,
                    };
                    let flags = flag_sets[((r >> 8) % 5) as usize];
                    (addr, len, flags, (random() % 20) as u16)
                };
                driver.store_raw(i, addr, len, flags, next);
            }
            let (heads, most) = if plausible { (16, 17) } else { (24, 20) };
            offered[q] = (random() % most) as u16; // sometimes more than the queue size
            let ring = std::iter::repeat_with(|| (random() % heads) as u16);
            driver.offer_raw(ring, offered[q]);
        }
        for _ in 0..random() % 4 {
            let _ = f.host.send(&frame((random() % 3000) as usize, round as u8));
        }
        f.net.serve_tx();
        f.net.serve_rx();
        delivered += counter(&f.net, |c| &c.ops_to_guest);
        let broken = f.net.core.signals.is_broken();
        let blocked = f.net.tx.is_blocked();
        let active = f.net.core.activation.active().unwrap();
        let used = [0, 1].map(|q| active.queues[q].next_used());
        assert!(
            used[0] <= offered[0],
            "round {round}: rx {used:?} of {offered:?}"
        );
        assert!(
            used[1] <= offered[1],
            "round {round}: tx {used:?} of {offered:?}"
        );
        assert!(
            used[1] == offered[1] || broken || blocked || offered[1] > 16,
            "round {round}: tx {used:?} of {offered:?}"
        );
    }
    assert!(delivered > 500, "only {delivered} frames got through");
}

#[test]
fn features_and_config_space() {
    let (net, _host) = device(unlimited());
    let f = net.features();
    assert_ne!(f & (1 << VIRTIO_NET_F_MAC), 0);
    assert_ne!(f & MRG_RXBUF, 0);
    assert_eq!(f & COMMON_FEATURES, COMMON_FEATURES);
    // A socket accepts no offloads, so none is offered.
    assert_eq!(f & offered_offloads(header::PROBED_OFFLOADS[0]), 0);
    let mut config = [0u8; 10];
    net.read_config(0, &mut config);
    assert_eq!(config, [2, 0, 0, 0, 0, 1, 1, 0, 1, 0]);
}
