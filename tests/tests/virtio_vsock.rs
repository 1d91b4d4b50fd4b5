//! virtio-vsock with the default Debian guest, in Firecracker's hybrid model: a host program
//! connects to `uds_path`, says `CONNECT <port>`, hears `OK <port>` and exchanges data with a
//! guest program listening on that port; a guest program connects to the host's CID 2 and
//! reaches the host program listening on `<uds_path>_<port>`. Both carry more than a
//! connection's buffer, so flow control is exercised, and every byte is checked. The socket
//! file is gone when the VMM has exited, normally or on SIGTERM. Bad vsock sections are
//! refused, naming the field. The guest runs on the software CPU, and on KVM where this host's
//! KVM can run it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ember_tests::{
    boot, default_guest, kvm_runs_debian_or_skip, run_ember_signalled, scratch_dir, Run,
};

/// A hang guard: a boot with a few commands takes seconds.
const LIMIT: Duration = Duration::from_secs(240);
/// The guest port the host program connects to.
const GUEST_PORT: u32 = 5000;
/// The host port the guest program connects to.
const HOST_PORT: u32 = 6000;
/// Bytes each way in each round trip: more than a connection's 256 KiB buffer.
const BYTES: usize = 384 * 1024;

/// Writes a config booting the default guest with a vsock device at `uds` running
/// `command`, and returns its path.
fn config(dir: &Path, uds: &Path, guest_cid: u32, command: &str) -> PathBuf {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}",
              "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet ember_run=\"{}\""}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 256}},
            "vsock": {{"guest_cid": {guest_cid}, "uds_path": "{}"}}}}"#,
        default_guest("vmlinux").display(),
        default_guest("initramfs.cpio").display(),
        command,
        uds.display()
    );
    let path = dir.join("vm.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// The bytes the host program sends: not the guest tool's pattern, so that an echo cannot
/// be mistaken for the guest's own data.
fn host_pattern() -> Vec<u8> {
    (0..BYTES).map(|i| (i * 31 + 7) as u8).collect()
}

/// The bytes the guest tool sends: byte i is i % 251.
fn guest_pattern() -> Vec<u8> {
    (0..BYTES).map(|i| (i % 251) as u8).collect()
}

/// The host program of the host-started round trip: connects to `uds` until the guest
/// listens (a connection the guest refuses is closed without `OK`), sends
/// [`host_pattern`] while reading the echo, and returns the `OK` line and the echo.
fn host_connects(uds: PathBuf) -> JoinHandle<(String, Vec<u8>)> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + LIMIT;
        loop {
            assert!(Instant::now() < deadline, "the guest never accepted");
            std::thread::sleep(Duration::from_millis(200));
            let Ok(mut stream) = UnixStream::connect(&uds) else {
                continue;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            stream
                .write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes())
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut ok = String::new();
            if reader.read_line(&mut ok).is_err() || !ok.starts_with("OK ") {
                continue;
            }
            let mut writer = stream.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                writer.write_all(&host_pattern()).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut echo = Vec::new();
            reader.read_to_end(&mut echo).unwrap();
            sender.join().unwrap();
            return (ok, echo);
        }
    })
}

/// The host program of the guest-started round trip: listens on `<uds>_<HOST_PORT>`, echoes
/// one connection and returns what it received.
fn host_listens(uds: &Path) -> JoinHandle<Vec<u8>> {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{HOST_PORT}"));
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        received
    })
}

fn round_trips_work_on(accel: &str) {
    let dir = scratch_dir(&format!("virtio-vsock-{accel}"));
    let uds = dir.join("v.sock");
    let command =
        format!("ember-vsock listen {GUEST_PORT}; ember-vsock connect 2 {HOST_PORT} {BYTES}");
    let config = config(&dir, &uds, 3, &command);
    let host_side = host_connects(uds.clone());
    let listener_side = host_listens(&uds);
    let run = boot(&config, &["--accel", accel], b"", LIMIT);
    assert_eq!(run.code(), 0, "{run:#?}");
    let out = &run.stdout;

    // Started by the host: the guest echoed every byte, and the host got them back in order.
    assert!(out.contains(&format!("VSOCK-ECHOED {BYTES}")), "{run:#?}");
    let (ok, echo) = host_side.join().unwrap();
    let port: u32 = ok
        .trim_end()
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad OK line {ok:?}"));
    assert!(port >= 1 << 30, "{ok:?}");
    assert_eq!(echo.len(), BYTES);
    assert!(
        echo == host_pattern(),
        "the echo differs from what was sent"
    );

    // Started by the guest: the guest got its echo, and the host the guest's bytes.
    assert!(
        out.contains(&format!("VSOCK-SENT {BYTES} RECEIVED {BYTES} MATCH yes")),
        "{run:#?}"
    );
    let received = listener_side.join().unwrap();
    assert_eq!(received.len(), BYTES);
    assert!(received == guest_pattern(), "the host got other bytes");
    assert!(!uds.exists(), "the socket file outlived the VMM");
}

#[test]
fn round_trips_work_on_the_software_cpu() {
    round_trips_work_on("interp");
}

#[test]
fn round_trips_work_on_kvm() {
    if kvm_runs_debian_or_skip("round_trips_work_on_kvm") {
        round_trips_work_on("kvm");
    }
}

#[test]
fn the_socket_file_goes_when_the_vmm_is_terminated() {
    let dir = scratch_dir("virtio-vsock-sigterm");
    let uds = dir.join("v.sock");
    let config = config(&dir, &uds, 3, "sleep 600");
    let config = config.to_str().unwrap();
    let args = ["--no-api", "--config-file", config, "--accel", "interp"];
    let run = run_ember_signalled(&args, "EMBER-GUEST-INIT", libc::SIGTERM, LIMIT);
    assert_eq!(run.code(), 128 + libc::SIGTERM, "{run:#?}");
    assert!(!uds.exists(), "the socket file outlived the VMM");
}

/// Boots `config` and checks that it is refused before the guest runs, with `needle`.
fn refused(config: &Path, needle: &str) -> Run {
    let run = boot(config, &["--accel", "interp"], b"", LIMIT);
    assert_eq!(run.code(), 2, "{run:#?}");
    assert!(run.stderr.contains(needle), "missing {needle:?}: {run:#?}");
    assert!(!run.stdout.contains("EMBER-GUEST-INIT"), "{run:#?}");
    run
}

#[test]
fn bad_vsock_sections_are_refused_naming_the_field() {
    let dir = scratch_dir("virtio-vsock-bad");
    let missing = dir.join("no-such-dir/v.sock");
    refused(&config(&dir, &missing, 3, "true"), "vsock.uds_path");
    refused(
        &config(&dir, &dir.join("v.sock"), 2, "true"),
        "vsock.guest_cid",
    );
    // A socket another program listens on is not taken over.
    let live = dir.join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    refused(&config(&dir, &live, 3, "true"), "in use");
    assert!(live.exists());
}
