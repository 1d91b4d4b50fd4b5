//! The REST API end to end: the real `ember` binary with `--api-sock` in a scratch directory,
//! driven by curl over the Unix socket. A guest is configured entirely over the socket
//! (boot source, machine config, a drive, a vsock device, metrics) and started; it is paused
//! (its console falls silent and its clock stands still) and resumed; `GET /vm/config` is
//! saved; Ctrl-Alt-Del ends the VMM with status 0 and removes the socket; the metrics file
//! holds the requests and the device counters; the saved configuration boots the same guest
//! through `--config-file`. Bad requests of every kind get their 4xx answer (or lose their
//! connection) while the VMM goes on answering `GET /`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_tests::{
    config_json, default_guest, ember_bin, kvm_is_pvm, kvm_or_skip, note_skip, scratch_dir,
    test_guest, write_config,
};

/// A hang guard for a boot of the default guest on the software CPU.
const LIMIT: Duration = Duration::from_secs(240);

/// A running `ember` with its API socket and console.
struct Vmm {
    child: Child,
    sock: PathBuf,
    console: Arc<Mutex<String>>,
}

impl Vmm {
    /// Starts `ember --api-sock <dir>/api.sock` with `args` and waits for the socket.
    fn start(dir: &Path, args: &[&str]) -> Vmm {
        let sock = dir.join("api.sock");
        let mut child = Command::new(ember_bin())
            .arg("--api-sock")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ember");
        let console = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "the API socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Vmm {
            child,
            sock,
            console,
        }
    }

    /// `method path` with `body`, answered as (status, body).
    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        curl(&self.sock, method, path, body)
    }

    /// Asserts that the request succeeds with 204.
    fn ok(&self, method: &str, path: &str, body: &str) {
        let (status, text) = self.call(method, path, body);
        assert_eq!(status, 204, "{method} {path} {body}: {text}");
    }

    /// Asserts that `GET /` still answers.
    fn alive(&self) -> String {
        let (status, body) = self.call("GET", "/", "");
        assert_eq!(status, 200, "GET / after a bad request: {body}");
        body
    }

    /// Pauses the VM for `how_long`, checks that its console stayed silent meanwhile, and
    /// resumes it; returns the console as it was during the pause.
    fn pause_for(&self, how_long: Duration) -> String {
        self.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
        assert!(self.alive().contains("\"state\":\"Paused\""));
        let before = self.console();
        std::thread::sleep(how_long);
        assert_eq!(self.console(), before, "a paused guest ran");
        self.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
        before
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits until the console shows `needle` `count` times.
    fn wait_for(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.console().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} x{count}: {}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the VMM to exit.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.console());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ember did not exit: {}", self.console());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vmm {
    /// A test that fails leaves no VMM behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with curl; status 0 if curl got no answer.
fn curl(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "30",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--unix-socket")
    .arg(sock)
    .arg(format!("http://localhost{path}"));
    if !body.is_empty() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The number that follows the first `key` in `text`.
fn number_after(text: &str, key: &str) -> u64 {
    text.split(key)
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number after {key} in {text}"))
}

/// The guest uptimes the console printed as `UP <seconds>` lines.
fn uptimes(console: &str) -> Vec<f64> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("UP "))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_guest_configured_over_the_socket_pauses_reboots_and_boots_again_from_its_config() {
    let dir = scratch_dir("api-accept");
    let disk = dir.join("scratch.img");
    std::fs::write(&disk, vec![b'A'; 1 << 20]).unwrap();
    let second = dir.join("second.img");
    std::fs::write(&second, vec![b'B'; 1 << 20]).unwrap();
    let log = dir.join("vmm.log");
    let metrics = dir.join("metrics.json");
    let mut vmm = Vmm::start(&dir, &[]);
    let mode = std::fs::metadata(&vmm.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(vmm.alive().contains("\"state\":\"Not started\""));
    let command = "while true; do read u i < /proc/uptime; echo UP $u; \
                   echo 3 > /proc/sys/vm/drop_caches; echo DISK $(head -c 8 /dev/vda); \
                   sleep 0.5; done";
    vmm.ok(
        "PUT",
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path": "{}", "initrd_path": "{}",
                "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet i8042.noaux i8042.nomux i8042.dumbkbd ember_run=\"{command}\""}}"#,
            default_guest("vmlinux").display(),
            default_guest("initramfs.cpio").display(),
        ),
    );
    vmm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vmm.ok(
        "PUT",
        "/drives/scratch",
        &format!(
            r#"{{"drive_id": "scratch", "path_on_host": "{}", "is_root_device": false}}"#,
            disk.display()
        ),
    );
    vmm.ok(
        "PUT",
        "/vsock",
        &format!(
            r#"{{"guest_cid": 3, "uds_path": "{}"}}"#,
            dir.join("v.sock").display()
        ),
    );
    vmm.ok(
        "PUT",
        "/balloon",
        r#"{"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}"#,
    );
    vmm.ok(
        "PUT",
        "/logger",
        &format!(
            r#"{{"log_path": "{}", "level": "Info", "show_level": true, "show_log_origin": true}}"#,
            log.display()
        ),
    );
    vmm.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
    );
    // Requests during boot are answered too.
    let sock = vmm.sock.clone();
    let during_boot = std::thread::spawn(move || curl(&sock, "GET", "/machine-config", "").0);
    vmm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(during_boot.join().unwrap(), 200);
    let (status, text) = vmm.call(
        "PUT",
        "/drives/scratch",
        r#"{"drive_id": "scratch", "path_on_host": "/x", "is_root_device": false}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("once the VM has started"), "{text}");

    vmm.wait_for("UP ", 3);
    let before = vmm.pause_for(Duration::from_secs(4));
    let seen = uptimes(&before).len();
    vmm.wait_for("UP ", seen + 1);
    let times = uptimes(&vmm.console());
    let gap = times[seen] - times[seen - 1];
    assert!(
        gap < 2.5,
        "guest time ran on during the 4 s pause: {} then {}",
        times[seen - 1],
        times[seen]
    );

    // A running drive gets a new backing file and a rate limiter; the guest reads the new
    // file.
    vmm.wait_for("DISK AAAAAAAA", 1);
    vmm.ok(
        "PATCH",
        "/drives/scratch",
        &format!(
            r#"{{"drive_id": "scratch", "path_on_host": "{}",
                "rate_limiter": {{"ops": {{"size": 1000, "refill_time": 100}}}}}}"#,
            second.display()
        ),
    );
    vmm.wait_for("DISK BBBBBBBB", 1);
    // The running balloon inflates to a new target.
    vmm.ok("PATCH", "/balloon", r#"{"amount_mib": 16}"#);
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, stats) = vmm.call("GET", "/balloon/statistics", "");
        assert_eq!(status, 200, "{stats}");
        if stats.contains("\"actual_mib\":16") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the balloon never reached 16 MiB: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    vmm.ok(
        "PATCH",
        "/balloon/statistics",
        r#"{"stats_polling_interval_s": 2}"#,
    );
    for (path, body, needle) in [
        (
            "/balloon/statistics",
            r#"{"stats_polling_interval_s": 0}"#,
            "cannot be turned off",
        ),
        (
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0"}"#,
            "no interface `eth0`",
        ),
    ] {
        let (status, text) = vmm.call("PATCH", path, body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(needle), "{path}: {text}");
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("warn: [") && logged.contains("vm.rs:") && logged.contains("accelerator"),
        "level and origin in the log: {logged}"
    );

    let (status, config) = vmm.call("GET", "/vm/config", "");
    assert!(config.contains("second.img"), "{config}");
    assert_eq!(status, 200, "{config}");
    vmm.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let lines = std::fs::read_to_string(&metrics).unwrap();
    let last = lines.lines().last().expect("a metrics line");
    for needle in [
        // InstanceStart; FlushMetrics itself is counted once answered.
        "\"PUT /actions\":{\"ok\":1}",
        "\"PATCH /vm\":{\"ok\":2}",
        "\"PUT /drives/{id}\":{\"400\":1,\"ok\":1}",
        "\"block_scratch\":{",
        "\"vsock\":{",
        "\"io_out\":",
    ] {
        assert!(last.contains(needle), "{needle} in {last}");
    }
    let block = last.split("\"block_scratch\":{").nth(1).unwrap();
    let block_reads = number_after(block, "\"ops_to_guest\":");
    assert!(block_reads > 0, "the guest read the drive: {last}");
    let console_writes = number_after(last, "\"io_out\":");
    assert!(
        console_writes > 100,
        "the console's port writes are counted: {last}"
    );

    vmm.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    // Requests during shutdown get an answer or lose their connection; none hangs.
    let sock = vmm.sock.clone();
    let during_shutdown = std::thread::spawn(move || {
        while sock.exists() {
            let _ = curl(&sock, "GET", "/", "");
        }
    });
    let sock = vmm.sock.clone();
    let (status, console) = vmm.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "{console}");
    during_shutdown.join().unwrap();
    assert!(!sock.exists(), "the socket outlived the VMM");

    // The saved configuration boots the same guest (same kernel, command line, drive with its
    // new file, balloon, vsock, logger and metrics), whose own configuration is the same.
    let saved = dir.join("saved.json");
    std::fs::write(&saved, &config).unwrap();
    let again = dir.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let mut vmm = Vmm::start(&again, &["--config-file", saved.to_str().unwrap()]);
    vmm.wait_for("DISK BBBBBBBB", 1);
    assert!(vmm.console().contains("EMBER-GUEST-INIT"));
    let (status, config_again) = vmm.call("GET", "/vm/config", "");
    assert_eq!(status, 200, "{config_again}");
    assert_eq!(config_again, config, "the same configuration");
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    let (status, console) = vmm.wait(LIMIT);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{console}");
}

#[test]
fn bad_requests_and_bad_clients_leave_the_vmm_answering() {
    let dir = scratch_dir("api-robust");
    let mut vmm = Vmm::start(&dir, &["--http-api-max-payload-size", "4096"]);
    for (method, path, body, status, needle) in [
        ("PUT", "/machine-config", "{\"vcpu_count\": 1,", 400, "EOF"),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "2", "mem_size_mib": 64}"#,
            400,
            "vcpu_count",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 64, "x": 1}"#,
            400,
            "unknown field `x`",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 64}"#,
            400,
            "duplicate field",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 0, "mem_size_mib": 64}"#,
            400,
            "vcpu_count",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent"}"#,
            400,
            "kernel_image_path",
        ),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id": "b", "path_on_host": "/x", "is_root_device": false}"#,
            400,
            "drive_id",
        ),
        (
            "PUT",
            "/vsock",
            r#"{"guest_cid": 2, "uds_path": "/tmp/x.sock"}"#,
            400,
            "guest_cid",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "Reboot"}"#,
            400,
            "action_type",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "SendCtrlAltDel"}"#,
            400,
            "not started",
        ),
        ("PATCH", "/vm", r#"{"state": "Paused"}"#, 400, "not started"),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
            400,
            "kernel_image_path",
        ),
        ("PUT", "/snapshot/create", "{}", 400, "snapshots"),
        ("PUT", "/mmds", "{}", 400, "MMDS"),
        ("GET", "/no/such/path", "", 404, "no such endpoint"),
        ("DELETE", "/machine-config", "", 405, "does not take"),
    ] {
        let (got, text) = vmm.call(method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {text}");
        assert!(
            text.contains("fault_message") && text.contains(needle),
            "{method} {path}: {text}"
        );
        vmm.alive();
    }
    // Two drives with the same ID are one drive, replaced; two with the same file are two.
    let disk = dir.join("d.img");
    std::fs::write(&disk, [0u8; 512]).unwrap();
    let drive = |root: bool| {
        format!(
            r#"{{"drive_id": "d", "path_on_host": "{}", "is_root_device": {root}}}"#,
            disk.display()
        )
    };
    vmm.ok("PUT", "/drives/d", &drive(false));
    vmm.ok("PUT", "/drives/d", &drive(true));
    let (_, config) = vmm.call("GET", "/vm/config", "");
    assert_eq!(config.matches("\"drive_id\":\"d\"").count(), 1, "{config}");

    // A body over the limit.
    let big = format!(r#"{{"kernel_image_path": "{}"}}"#, "x".repeat(8000));
    let (got, text) = vmm.call("PUT", "/boot-source", &big);
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("exceeds the limit of 4096"), "{text}");
    vmm.alive();

    // Slow, half-open and abandoned clients hold only their own connection.
    let mut slow = UnixStream::connect(&vmm.sock).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let half = UnixStream::connect(&vmm.sock).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut abandoned = UnixStream::connect(&vmm.sock).unwrap();
    abandoned
        .write_all(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"vcpu")
        .unwrap();
    let silent = UnixStream::connect(&vmm.sock).unwrap();
    vmm.alive();
    drop(abandoned);
    vmm.alive();
    slow.write_all(b"\r\n").unwrap();
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    drop((half, silent));

    // 100 clients at once.
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let sock = vmm.sock.clone();
            std::thread::spawn(move || curl(&sock, "GET", "/", "").0)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    vmm.alive();

    // A second VMM on the same socket is refused while this one listens.
    let out = Command::new(ember_bin())
        .arg("--api-sock")
        .arg(&vmm.sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listening"));
    vmm.alive();

    // A config file that cannot boot ends the VMM with 2, and its socket goes too.
    let bad = write_config(
        &dir,
        r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#,
    );
    let other = dir.join("other.sock");
    let out = Command::new(ember_bin())
        .arg("--api-sock")
        .arg(&other)
        .arg("--config-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!other.exists(), "the socket outlived a failed boot");
    vmm.alive();

    // SIGTERM before start: the VMM exits and removes its socket.
    let sock = vmm.sock.clone();
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    let (status, _) = vmm.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(!sock.exists());
    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut vmm = Vmm::start(&dir, &[]);
    vmm.alive();
    // SAFETY: as above.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    vmm.wait(Duration::from_secs(10));
}

/// The backends to test: the software CPU, and KVM where it is usable (else the skip is
/// noted for `test`).
fn backends(test: &str) -> Vec<&'static str> {
    let mut backends = vec!["interp"];
    if kvm_or_skip(test) {
        backends.push("kvm");
    }
    backends
}

/// Starts test guest `guest` with `cmdline` on `accel`, with the API, in a scratch directory
/// named after `test`.
fn start_test_guest(test: &str, guest: &str, cmdline: &str, accel: &str) -> Vmm {
    let dir = scratch_dir(test);
    let config = write_config(&dir, &config_json(&test_guest(guest), None, cmdline, 1, 64));
    Vmm::start(
        &dir,
        &["--accel", accel, "--config-file", config.to_str().unwrap()],
    )
}

#[test]
fn vcpus_pause_and_resume_on_both_backends_wherever_they_are() {
    for accel in backends("api::vcpus_pause_and_resume_on_both_backends") {
        // A long REP instruction, a stream of port and MMIO accesses, a halt, a tight loop.
        for kind in ["l", "i", "h", "j"] {
            let test = format!("api-pause-{accel}-{kind}");
            let mut vmm = start_test_guest(&test, "stall", &format!("stall={kind}"), accel);
            vmm.wait_for(&format!("stall: {kind}"), 1);
            for _ in 0..3 {
                vmm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
                assert!(vmm.alive().contains("Paused"), "{accel} {kind}");
                vmm.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
                assert!(vmm.alive().contains("Running"), "{accel} {kind}");
            }
            vmm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
            let (status, console) = vmm.wait(Duration::from_secs(20));
            assert_eq!(
                status.code(),
                Some(128 + libc::SIGTERM),
                "{accel} {kind}: {console}"
            );
        }
    }
}

#[test]
fn metrics_and_log_go_to_files_and_named_pipes_from_the_command_line_and_the_api() {
    let dir = scratch_dir("api-sinks");
    let log = dir.join("vmm.log");
    let metrics = dir.join("metrics.json");
    let mut vmm = Vmm::start(
        &dir,
        &[
            "--log-path",
            log.to_str().unwrap(),
            "--log-level",
            "Debug",
            "--metrics-path",
            metrics.to_str().unwrap(),
        ],
    );
    vmm.alive();
    vmm.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let line = std::fs::read_to_string(&metrics).unwrap();
    assert!(line.contains("\"GET /\":{\"ok\":1}"), "{line}");
    let (status, text) = vmm.call("PUT", "/metrics", r#"{"metrics_path": "/tmp/other"}"#);
    assert_eq!(status, 400, "a second sink is refused: {text}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("API: GET / -> 200"));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    vmm.wait(Duration::from_secs(10));
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(lines.lines().count(), 2, "one more line at exit: {lines}");

    // A named pipe: opened without a reader, read afterwards.
    let fifo = dir.join("metrics.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut vmm = Vmm::start(&dir, &[]);
    vmm.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path": "{}"}}"#, fifo.display()),
    );
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let mut f = std::fs::File::open(&fifo).unwrap();
        let mut byte = [0u8; 1];
        while f.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        line
    });
    vmm.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let line = reader.join().unwrap();
    assert!(line.contains("\"PUT /metrics\":{\"ok\":1}"), "{line}");
    // SAFETY: as above.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    vmm.wait(Duration::from_secs(10));
}

/// The `tsc: N` values the clock guest printed.
fn tsc_steps(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("tsc: ")?.trim().parse().ok())
        .collect()
}

#[test]
fn a_paused_guest_sees_no_time_pass_on_both_backends() {
    for accel in backends("api::a_paused_guest_sees_no_time_pass") {
        let mut vmm = start_test_guest(&format!("api-clock-{accel}"), "clock", "", accel);
        vmm.wait_for("tsc: ", 3);
        let before = vmm.pause_for(Duration::from_secs(5));
        let seen = tsc_steps(&before).len();
        vmm.wait_for("tsc: ", seen + 2);
        let steps = tsc_steps(&vmm.console());
        if accel == "kvm" && kvm_is_pvm() {
            // kvm_pvm runs the guest's RDTSC natively without an offset: the guest reads the
            // host's TSC (its first value is the host's uptime), which no VMM can stop.
            note_skip(
                "api::a_paused_guest_sees_no_time_pass",
                "accepted a TSC that ran on during a KVM pause: this host's kvm_pvm gives the \
                 guest the host's raw TSC",
            );
            continue;
        }
        for pair in steps.windows(2) {
            assert!(
                pair[1] == pair[0] + 1,
                "{accel}: the guest's TSC jumped from {} to {} (paused after line {seen})",
                pair[0],
                pair[1]
            );
        }
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
        vmm.wait(Duration::from_secs(10));
    }
}
