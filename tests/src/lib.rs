//! Helpers for Ember's end-to-end tests: find the `ember` binary, the test guests and the
//! default Debian guest, write configs, and run the VMM with a hang guard; and the
//! differential test harness of the software CPU against KVM ([`difftest`]).

pub mod difftest;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `ember` binary built in the same profile as this test (or `$EMBER_BIN`).
pub fn ember_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EMBER_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/<test> -> target/<profile>/ember
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ember");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p vmm, with --release for release tests)",
        bin.display()
    );
    bin
}

/// A test guest built from `tests/guests/<name>.S`.
pub fn test_guest(name: &str) -> PathBuf {
    Path::new(env!("EMBER_TEST_GUESTS")).join(format!("{name}.elf"))
}

/// A file of the default guest built by `resources/build-guest.sh` (`$EMBER_GUEST_DIR` or
/// `build/guest`).
pub fn default_guest(file: &str) -> PathBuf {
    let dir = std::env::var_os("EMBER_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("build/guest"));
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run resources/build-guest.sh (make test does)",
        path.display()
    );
    path
}

/// A fresh directory for one test's files, unique even among tests running in parallel.
pub fn scratch_dir(test: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = workspace()
        .join("target/test-scratch")
        .join(format!("{}-{n}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether tests that need KVM can run: `/dev/kvm` opens and answers with the stable API
/// version. Where it does not, such a test says so on stderr and returns without running,
/// unless `EMBER_REQUIRE_KVM` is set (`.ci/run` sets it on hosts that have `/dev/kvm`): then
/// it fails.
pub fn kvm_or_skip(test: &str) -> bool {
    let usable = kvm_ioctls::Kvm::new().map(|kvm| kvm.get_api_version());
    if matches!(usable, Ok(12)) {
        return true;
    }
    assert!(
        std::env::var_os("EMBER_REQUIRE_KVM").is_none(),
        "{test}: /dev/kvm is unusable ({usable:?}) and EMBER_REQUIRE_KVM is set"
    );
    eprintln!("{test}: skipped, /dev/kvm is unusable here ({usable:?})");
    false
}

/// Writes `json` as `<dir>/vm.json` and returns its path.
pub fn write_config(dir: &Path, json: &str) -> PathBuf {
    let path = dir.join("vm.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// A config booting `kernel` with `boot_args`, `vcpus` and `mem_mib`.
pub fn config_json(
    kernel: &Path,
    initrd: Option<&Path>,
    boot_args: &str,
    vcpus: u8,
    mem_mib: u64,
) -> String {
    let initrd = initrd
        .map(|p| format!(r#", "initrd_path": "{}""#, p.display()))
        .unwrap_or_default();
    format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"{initrd}, "boot_args": "{}"}},
            "machine-config": {{"vcpu_count": {vcpus}, "mem_size_mib": {mem_mib}}}}}"#,
        kernel.display(),
        boot_args.replace('"', "\\\"")
    )
}

/// What a finished `ember` run left behind.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// The guest's console.
    pub stdout: String,
    /// The VMM's messages.
    pub stderr: String,
}

impl Run {
    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("ember was killed: {self:#?}"))
    }
}

/// Runs `ember` with `args`, feeding `stdin`, and kills it after `limit` (a hang guard, not
/// a performance assertion: a run that hits it fails the test with everything it printed).
pub fn run_ember(args: &[&str], stdin: &[u8], limit: Duration) -> Run {
    run_ember_typing(args, None, stdin, limit)
}

/// As [`run_ember`], but holds `stdin` back until the guest's console has printed `prompt`
/// (when given), as a user types only once a shell is there: bytes sent while the guest's
/// UART driver starts up may be discarded by it.
pub fn run_ember_typing(args: &[&str], prompt: Option<&str>, stdin: &[u8], limit: Duration) -> Run {
    run_ember_in(args, &[], prompt, stdin, limit)
}

/// [`run_ember_typing`] with the environment variables `env` set for `ember`.
fn run_ember_in(
    args: &[&str],
    env: &[(&str, &str)],
    prompt: Option<&str>,
    stdin: &[u8],
    limit: Duration,
) -> Run {
    let mut child = Command::new(ember_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ember");
    let console = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let out_reader = {
        let console = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                console.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut input = Some((child.stdin.take().unwrap(), stdin.to_vec()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // The console is searched only until the input has been sent.
        let prompted =
            || prompt.is_none_or(|p| String::from_utf8_lossy(&console.lock().unwrap()).contains(p));
        if input.is_some() && prompted() {
            if let Some((mut pipe, data)) = input.take() {
                // The guest may exit before reading everything.
                std::thread::spawn(move || {
                    let _ = pipe.write_all(&data);
                });
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = out_reader.join();
            let stdout = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
            panic!("ember did not finish within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = out_reader.join();
    let stdout = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    Run {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

/// Boots the config at `config` with `--no-api` and extra `args`.
pub fn boot(config: &Path, args: &[&str], stdin: &[u8], limit: Duration) -> Run {
    boot_with_env(config, args, &[], stdin, limit)
}

/// As [`boot`], with the environment variables `env` set for `ember`.
pub fn boot_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
    limit: Duration,
) -> Run {
    let config = config.to_str().unwrap();
    let mut all = vec!["--no-api", "--config-file", config];
    all.extend_from_slice(args);
    run_ember_in(&all, env, None, stdin, limit)
}
