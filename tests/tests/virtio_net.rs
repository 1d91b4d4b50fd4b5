//! virtio-net with the default Debian guest. Each test makes its own network namespace with a
//! tap device in it, enters it on its own thread (so the VMM it starts, its sockets and its
//! pings are all inside), and removes it afterwards, also when the test fails. Addresses
//! exist only inside that namespace. The guest and the host ping each other, then move 16 MiB
//! over TCP each way with matching SHA-256 on both ends; the rate limiters hold traffic to
//! their rate; a tap that is missing or is not a tap is refused, naming the interface and the
//! device. The guest runs on the software CPU, and on KVM where this host's KVM can run it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ember_tests::{
    boot, default_guest, kvm_runs_debian_or_skip, note_skip, run_ember_calling, scratch_dir,
    sha256, Run,
};

/// A hang guard: a boot with a few transfers takes tens of seconds on the software CPU.
const LIMIT: Duration = Duration::from_secs(300);
/// The host's address on the tap, inside the test's namespace.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The guest's address.
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The guest sends to this port on the host.
const TO_HOST_PORT: u16 = 5000;
/// The host sends to this port on the guest.
const TO_GUEST_PORT: u16 = 5001;
/// Bytes moved each way.
const TRANSFER: usize = 16 << 20;
/// The guest's setup: its address, then a ping of the host.
const GUEST_SETUP: &str = "ip link set eth0 up; ip addr add 10.0.0.2/24 dev eth0; \
    ping -c 3 -W 5 10.0.0.1 >/dev/null && echo GUEST-PING-OK";

/// A network namespace made for one test, with `tap0` at [`HOST`]/24 in it, entered by the
/// calling thread. Dropping it brings the thread back to its own namespace and deletes this
/// one with everything in it.
struct Netns {
    name: String,
    home: Option<File>,
}

impl Netns {
    /// Makes and enters the namespace; None (with a note) where this host cannot.
    fn enter(test: &str) -> Option<Netns> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            note_skip(test, "skipped: network namespaces and taps need root");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut ns = Netns {
            name: format!("ember-test-{}-{n}", std::process::id()),
            home: None,
        };
        ip(&["netns", "add", &ns.name]);
        for args in [
            "tuntap add dev tap0 mode tap",
            "addr add 10.0.0.1/24 dev tap0",
            "link set tap0 up",
            "link set lo up",
        ] {
            let mut all = vec!["-n", &ns.name];
            all.extend(args.split(' '));
            ip(&all);
        }
        let home = File::open("/proc/thread-self/ns/net").unwrap();
        let target = File::open(format!("/run/netns/{}", ns.name)).unwrap();
        set_netns(&target);
        ns.home = Some(home);
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            set_netns(home);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the network namespace `ns` refers to.
fn set_netns(ns: &File) {
    // SAFETY: setns(2) on a descriptor this function borrows; it changes only this thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests to `to` through a raw socket (no ping program needed)
/// and returns how many were answered, each waited for up to 2 s.
fn ping(to: Ipv4Addr, count: u16) -> u16 {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just opened and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval of the given size from a valid pointer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };
    let id = std::process::id() as u16;
    let mut answered = 0;
    for seq in 1..=count {
        let mut request = [0u8; 40];
        request[0] = 8; // echo request
        request[4..6].copy_from_slice(&id.to_be_bytes());
        request[6..8].copy_from_slice(&seq.to_be_bytes());
        request[8..].fill(0xa5);
        let sum = checksum(&request);
        request[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: sendto(2) reads `request` and `to`, both valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            sent,
            request.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut reply = [0u8; 1500];
            // SAFETY: recv(2) writes at most `reply.len()` bytes into `reply`.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                continue; // timed out; look at the deadline again
            };
            let icmp = &reply[usize::from(reply[0] & 0xf) * 4..n];
            if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..8] == request[4..8] {
                answered += 1;
                break;
            }
        }
    }
    answered
}

/// `len` bytes that differ from run to run.
fn random_bytes(len: usize) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let mut x = now.map_or(1, |d| d.as_nanos() as u64) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Accepts one connection on `listener` (waiting up to [`LIMIT`]) and returns all it
/// carried.
fn receive_one(listener: TcpListener) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + LIMIT;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("nobody connected to the host: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let mut data = Vec::new();
        stream.read_to_end(&mut data).unwrap();
        data
    })
}

/// Connects to the guest's [`TO_GUEST_PORT`], sends `data`, and waits until the guest closes.
fn send_to_guest(data: &[u8]) {
    let to = SocketAddr::from((GUEST, TO_GUEST_PORT));
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
}

/// Boots the default guest on `accel` with one interface on `tap0` (`extra`: more JSON
/// fields of the interface), running `command` and calling `host` once the guest's console
/// has printed `prompt`.
fn boot_on_tap(
    dir: &Path,
    accel: &str,
    extra: &str,
    command: &str,
    prompt: &str,
    host: impl FnOnce() + Send + 'static,
) -> Run {
    let config = write_config(dir, "tap0", extra, command);
    let config = config.to_str().unwrap();
    let args = ["--no-api", "--config-file", config, "--accel", accel];
    run_ember_calling(&args, prompt, host, LIMIT)
}

/// Writes the VM's config: the default guest, one interface on `tap` with `extra` fields,
/// running `command`.
fn write_config(dir: &Path, tap: &str, extra: &str, command: &str) -> std::path::PathBuf {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}",
              "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check 8250.nr_uarts=1 ember_run=\"{}\""}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 256}},
            "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "{tap}",
                                     "guest_mac": "06:00:0a:00:00:02"{extra}}}]}}"#,
        default_guest("vmlinux").display(),
        default_guest("initramfs.cpio").display(),
        command
    );
    let path = dir.join("vm.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// The value after `tag` on the console line that starts with it.
fn tagged<'a>(run: &'a Run, tag: &str) -> &'a str {
    run.stdout
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag:?} line: {run:#?}"))
        .trim()
}

fn network_works_on(test: &str, accel: &str) {
    let Some(_ns) = Netns::enter(test) else {
        return;
    };
    let dir = scratch_dir(&format!("virtio-net-{accel}"));
    let from_guest = receive_one(TcpListener::bind((HOST, TO_HOST_PORT)).unwrap());
    let to_guest = random_bytes(TRANSFER);
    let to_guest_sha = sha256(&to_guest);
    let (tell, pings) = std::sync::mpsc::channel();
    let host = move || {
        // The guest waits in accept(2) while the host pings it.
        tell.send(ping(GUEST, 3)).unwrap();
        send_to_guest(&to_guest);
    };
    let command = format!(
        "{GUEST_SETUP}; dd if=/dev/urandom of=/tmp/out bs=1M count=16 2>/dev/null; \
         echo OUT-SHA $(sha256sum /tmp/out); ember-tcp send 10.0.0.1 {TO_HOST_PORT} < /tmp/out; \
         ember-tcp recv {TO_GUEST_PORT} > /tmp/in; echo IN-SHA $(sha256sum /tmp/in); \
         echo ERRORS $(cat /sys/class/net/eth0/statistics/rx_errors \
         /sys/class/net/eth0/statistics/tx_errors)"
    );
    let listening = format!("EMBER-TCP-LISTENING {TO_GUEST_PORT}");
    let run = boot_on_tap(&dir, accel, "", &command, &listening, host);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(
        run.stdout.contains("GUEST-PING-OK"),
        "the guest could not ping the host: {run:#?}"
    );
    assert_eq!(
        pings.recv().unwrap(),
        3,
        "the host's pings went unanswered: {run:#?}"
    );
    let received = from_guest.join().unwrap();
    assert_eq!(received.len(), TRANSFER, "{run:#?}");
    let out_sha = tagged(&run, "OUT-SHA ").split_whitespace().next().unwrap();
    assert_eq!(
        out_sha,
        sha256(&received),
        "what the host received differs: {run:#?}"
    );
    let in_sha = tagged(&run, "IN-SHA ").split_whitespace().next().unwrap();
    assert_eq!(
        in_sha, to_guest_sha,
        "what the guest received differs: {run:#?}"
    );
    assert_eq!(tagged(&run, "ERRORS "), "0 0", "{run:#?}");
}

#[test]
fn ping_and_tcp_both_ways_on_the_software_cpu() {
    network_works_on("ping_and_tcp_both_ways_on_the_software_cpu", "interp");
}

#[test]
fn ping_and_tcp_both_ways_on_kvm() {
    const TEST: &str = "ping_and_tcp_both_ways_on_kvm";
    if !kvm_runs_debian_or_skip(TEST) {
        return;
    }
    network_works_on(TEST, "kvm");
}

/// Seconds in an "EMBER-TCP sent|received N bytes in S s" line of the console.
fn transfer_seconds(run: &Run, what: &str) -> f64 {
    let line = tagged(run, &format!("EMBER-TCP {what} "));
    let seconds = line.split_whitespace().nth(3);
    seconds
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad EMBER-TCP line {line:?}: {run:#?}"))
}

#[test]
fn rate_limiters_hold_traffic_to_their_rate() {
    const TEST: &str = "rate_limiters_hold_traffic_to_their_rate";
    let Some(_ns) = Netns::enter(TEST) else {
        return;
    };
    let dir = scratch_dir("virtio-net-limits");
    // 1 MiB buckets refilled in 500 ms: 2 MiB/s after the first MiB, each way.
    let bucket = r#"{"bandwidth": {"size": 1048576, "refill_time": 500}}"#;
    let limits = format!(r#", "rx_rate_limiter": {bucket}, "tx_rate_limiter": {bucket}"#);
    const BYTES: usize = 6 << 20;
    let from_guest = receive_one(TcpListener::bind((HOST, TO_HOST_PORT)).unwrap());
    let command = format!(
        "{GUEST_SETUP}; ember-tcp send 10.0.0.1 {TO_HOST_PORT} {BYTES}; \
         ember-tcp recv {TO_GUEST_PORT} > /dev/null"
    );
    let listening = format!("EMBER-TCP-LISTENING {TO_GUEST_PORT}");
    let host = || send_to_guest(&vec![0x5a; BYTES]);
    let run = boot_on_tap(&dir, "interp", &limits, &command, &listening, host);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert_eq!(from_guest.join().unwrap().len(), BYTES, "{run:#?}");
    // 5 MiB beyond the first bucket at 2 MiB/s take at least 2.5 s.
    for what in ["sent", "received"] {
        let seconds = transfer_seconds(&run, what);
        assert!(
            seconds >= 2.0,
            "{what} 6 MiB in {seconds} s despite the limit: {run:#?}"
        );
    }
}

#[test]
fn unusable_taps_are_refused_naming_interface_and_device() {
    let dir = scratch_dir("virtio-net-bad");
    for (tap, why) in [
        ("ember-nosuch0", "no such network interface"),
        ("lo", "not a tap device"),
    ] {
        let config = write_config(&dir, tap, "", "true");
        let run = boot(&config, &["--accel", "interp"], b"", LIMIT);
        assert_eq!(run.code(), 2, "{run:#?}");
        for needle in ["network-interfaces[0]", "eth0", tap, why] {
            assert!(run.stderr.contains(needle), "missing {needle:?}: {run:#?}");
        }
        assert!(!run.stdout.contains("EMBER-GUEST-INIT"), "{run:#?}");
    }
}
