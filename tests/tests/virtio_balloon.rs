//! virtio-balloon with the Debian guest: inflating by 64 MiB lowers the guest's memory and
//! the VMM's resident memory (the pages are released to the host), and deflating gives the
//! memory back to the guest. The guest fills and frees 150 MiB first, so that the pages the
//! balloon takes are ones the host really holds.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_tests::{default_guest, ember_bin, scratch_dir};

/// A hang guard: the guest sleeps about 15 s in all.
const LIMIT: Duration = Duration::from_secs(300);

/// Guest commands: report MemTotal once the boot-time inflation is done, deflate (rmmod),
/// fill and free tmpfs, inflate again (modprobe), deflate again; markers tell the host when
/// to look at its RSS.
/// `S` waits until MemTotal stops changing (the balloon has reached its target).
const COMMANDS: &str = "M() { grep MemTotal /proc/meminfo; }; \
    S() { P=0; while :; do T=$(awk '/MemTotal/ {print $2}' /proc/meminfo); \
    [ $T = $P ] && break; P=$T; sleep 1; done; }; S; M; rmmod virtio_balloon; M; \
    mkdir -p /t; mount -t tmpfs -o size=200m t /t; \
    dd if=/dev/zero of=/t/f bs=1M count=150 2>/dev/null; rm /t/f; echo FILLED; sleep 4; \
    modprobe virtio_balloon; sleep 2; S; M; echo INFLATED; sleep 4; \
    rmmod virtio_balloon; M; echo DEFLATED";

/// The VMM's resident memory in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs the VMM, noting its RSS about a second after the console shows each of `markers`.
fn run_sampling(args: &[&str], markers: &[&str]) -> (String, String, i32, Vec<u64>) {
    let mut child = Command::new(ember_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ember");
    let console = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let reader = {
        let console = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                console
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(marker) = markers.get(samples.len()) {
            if console.lock().unwrap().contains(marker) {
                std::thread::sleep(Duration::from_secs(1));
                samples.push(rss_kib(child.id()).unwrap_or(0));
            }
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("ember did not finish: {}", console.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    let stdout = console.lock().unwrap().clone();
    (
        stdout,
        err_reader.join().unwrap(),
        status.code().unwrap_or(-1),
        samples,
    )
}

/// The MemTotal values (KiB) the guest printed, in order.
fn mem_totals(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("MemTotal:"))
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .collect()
}

#[test]
fn inflating_releases_memory_to_the_host_and_deflating_gives_it_back() {
    let dir = scratch_dir("virtio-balloon");
    let config = dir.join("vm.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}",
                  "boot_args": "console=ttyS0 reboot=k panic=1 pci=off quiet ember_run=\"{COMMANDS}\""}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 256}},
                "balloon": {{"amount_mib": 64, "deflate_on_oom": false,
                             "stats_polling_interval_s": 1}}}}"#,
            default_guest("vmlinux").display(),
            default_guest("initramfs.cpio").display(),
        ),
    )
    .unwrap();
    let args = [
        "--no-api",
        "--config-file",
        config.to_str().unwrap(),
        "--accel",
        "interp",
    ];
    let (stdout, stderr, code, rss) = run_sampling(&args, &["FILLED", "INFLATED"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("DEFLATED"), "{stdout}");
    // MemTotal: inflated at boot, deflated, inflated again, deflated again.
    let totals = mem_totals(&stdout);
    assert_eq!(totals.len(), 4, "{stdout}");
    let mib = |kib: u64| kib / 1024;
    for (inflated, deflated) in [(totals[0], totals[1]), (totals[2], totals[3])] {
        let given = mib(deflated) - mib(inflated);
        assert!(
            (62..=66).contains(&given),
            "the balloon took {given} MiB: {totals:?}"
        );
    }
    // The host got the pages back: the VMM's RSS fell by most of 64 MiB after inflating.
    assert_eq!(rss.len(), 2, "{stdout}");
    let dropped = rss[0].saturating_sub(rss[1]) / 1024;
    println!(
        "VMM RSS after filling: {} MiB, after inflating: {} MiB",
        rss[0] / 1024,
        rss[1] / 1024
    );
    assert!(
        dropped >= 48,
        "RSS after filling {} MiB, after inflating {} MiB: only {dropped} MiB released",
        rss[0] / 1024,
        rss[1] / 1024
    );
}
