//! Helpers for Ember's end-to-end tests: find the `ember` binary, the test guests and the
//! default Debian guest, write configs, and run the VMM with a hang guard; and the
//! differential test harness of the software CPU against KVM ([`difftest`]).

pub mod chaos;
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

/// The file where tests list what they skipped, or accepted as a limit of this host, and why
/// (one line each). `make test` empties it first and prints it at the end, because the test
/// harness hides what passing tests print.
pub fn skip_log() -> PathBuf {
    workspace().join("target/test-skips.txt")
}

/// Records that `test` skipped something (or accepted a host limitation) for `reason`: on
/// stderr and in [`skip_log`].
pub fn note_skip(test: &str, reason: &str) {
    let line = format!("{test}: {reason}\n");
    eprint!("{line}");
    // One short O_APPEND write per line, so lines from parallel tests do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record the skip in {}: {e}", skip_log().display());
    }
}

/// Whether tests that need KVM can run: `/dev/kvm` opens and answers with the stable API
/// version. Where it does not, such a test records why ([`note_skip`]) and returns without
/// running, unless `EMBER_REQUIRE_KVM` is set (`.ci/run` sets it on hosts that have
/// `/dev/kvm`): then it fails.
pub fn kvm_or_skip(test: &str) -> bool {
    let usable = kvm_ioctls::Kvm::new().map(|kvm| kvm.get_api_version());
    if matches!(usable, Ok(12)) {
        return true;
    }
    assert!(
        std::env::var_os("EMBER_REQUIRE_KVM").is_none(),
        "{test}: /dev/kvm is unusable ({usable:?}) and EMBER_REQUIRE_KVM is set"
    );
    note_skip(
        test,
        &format!("skipped, /dev/kvm is unusable here ({usable:?})"),
    );
    false
}

/// Present when this host's KVM is `kvm_pvm` (shadow paging in a nested guest, no VMX/SVM),
/// whose instruction emulator cannot run some instructions guests use (see HOST-NOTES).
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Whether this host's KVM is `kvm_pvm`, which runs CPL-0 guest code through its instruction
/// emulator and cannot emulate everything guests use.
pub fn kvm_is_pvm() -> bool {
    Path::new(KVM_PVM_MODULE).exists()
}

/// Whether this host's KVM can run the default Debian guest: [`kvm_or_skip`], and not
/// `kvm_pvm` (whose instruction emulator stops that guest); where not, the skip is noted.
pub fn kvm_runs_debian_or_skip(test: &str) -> bool {
    if !kvm_or_skip(test) {
        return false;
    }
    if kvm_is_pvm() {
        note_skip(
            test,
            "skipped: this host's kvm_pvm cannot run the Debian guest",
        );
        return false;
    }
    true
}

/// Whether a KVM run stopped because KVM could not emulate an instruction, on a host whose KVM
/// is known to be unable to (kvm_pvm): then the test may accept it, and this records that it
/// did. The same stop on any other host fails the test: hardware KVM runs every guest here.
pub fn kvm_could_not_emulate(test: &str, run: &Run) -> bool {
    if run.status.code() != Some(4) || !run.stderr.contains("KVM_EXIT_INTERNAL_ERROR") {
        return false;
    }
    assert!(
        kvm_is_pvm(),
        "{test}: KVM could not emulate an instruction, on a host whose KVM is not kvm_pvm: \
         {run:#?}"
    );
    let instruction = run
        .stderr
        .lines()
        .find(|l| l.contains("instruction:"))
        .map_or("(no instruction bytes)", str::trim);
    note_skip(
        test,
        &format!(
            "accepted KVM_EXIT_INTERNAL_ERROR, as this host's KVM is kvm_pvm, which cannot \
             emulate {instruction}"
        ),
    );
    true
}

/// This host's RAM in MiB (`MemTotal` in /proc/meminfo; 0 if it cannot be read).
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The SHA-256 of `data` in hex, as `sha256sum` (coreutils) prints it.
pub fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    // sha256sum prints nothing before its input ends, so writing it all first cannot block.
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
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
    run_ember_with(args, &[], prompt, Prompted::Type(stdin.to_vec()), limit)
}

/// As [`run_ember`], but sends `signal` to the VMM once the guest's console has printed
/// `prompt`.
pub fn run_ember_signalled(args: &[&str], prompt: &str, signal: i32, limit: Duration) -> Run {
    let action = Prompted::Signal {
        signal,
        after: Duration::ZERO,
    };
    run_ember_with(args, &[], Some(prompt), action, limit)
}

/// As [`run_ember`], but lets the guest run for `run_for` after its console has printed
/// `prompt`, then sends the VMM SIGTERM (if it is still running).
pub fn run_ember_for(args: &[&str], prompt: &str, run_for: Duration, limit: Duration) -> Run {
    let action = Prompted::Signal {
        signal: libc::SIGTERM,
        after: run_for,
    };
    run_ember_with(args, &[], Some(prompt), action, limit)
}

/// As [`run_ember`], but runs `action` on a thread of its own once the guest's console has
/// printed `prompt` (a host side that must wait for the guest, such as a client of a server
/// in the guest). Once the VMM has exited, the action is waited for (up to `limit`); if it
/// panicked, the run is printed and the panic goes on in the caller. The thread starts in
/// the caller's network namespace.
pub fn run_ember_calling(
    args: &[&str],
    prompt: &str,
    action: impl FnOnce() + Send + 'static,
    limit: Duration,
) -> Run {
    let (tell, done) = std::sync::mpsc::channel();
    let action = Prompted::Call(Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action));
        let _ = tell.send(outcome);
    }));
    let run = run_ember_with(args, &[], Some(prompt), action, limit);
    // Nothing is sent if the prompt never came (the action was dropped unrun).
    match done.recv_timeout(limit) {
        Ok(Err(panic)) => {
            eprintln!("the host side failed during this run: {run:#?}");
            std::panic::resume_unwind(panic);
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the host side did not finish within {limit:?} after the VMM: {run:#?}")
        }
        _ => run,
    }
}

/// As [`run_ember_typing`], but with standard input on a pseudo-terminal, as when a user runs
/// the VMM in a shell (so the console's Ctrl-A escapes apply); `input` is typed once the
/// console has printed `prompt`.
pub fn run_ember_on_terminal(args: &[&str], prompt: &str, input: &[u8], limit: Duration) -> Run {
    run_ember_with(
        args,
        &[],
        Some(prompt),
        Prompted::TypeOnTerminal(input.to_vec()),
        limit,
    )
}

/// A new pseudo-terminal: the controlling side and the terminal a program gets as its
/// standard input.
fn pty_pair() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut controller, mut terminal) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors it opened into the two ints; the name,
    // termios and winsize arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            std::fs::File::from_raw_fd(terminal),
        )
    }
}

/// What to do to a running VMM once its guest has printed the prompt.
enum Prompted {
    /// Write these bytes to its standard input (a pipe).
    Type(Vec<u8>),
    /// Write these bytes to its standard input (a pseudo-terminal).
    TypeOnTerminal(Vec<u8>),
    /// Send it `signal`, `after` the prompt.
    Signal { signal: i32, after: Duration },
    /// Run this on a new thread.
    Call(Box<dyn FnOnce() + Send>),
}

/// Runs `ember` with `args` and the environment variables `env`, doing `action` once the
/// console has printed `prompt`, killing it after `limit`.
fn run_ember_with(
    args: &[&str],
    env: &[(&str, &str)],
    prompt: Option<&str>,
    action: Prompted,
    limit: Duration,
) -> Run {
    // The controlling side stays open until the VMM has exited: closing it would hang up
    // the VMM's terminal.
    let (stdin, terminal) = match action {
        Prompted::TypeOnTerminal(_) => {
            let (controller, terminal) = pty_pair();
            (Stdio::from(terminal), Some(Arc::new(controller)))
        }
        _ => (Stdio::piped(), None),
    };
    let mut child = Command::new(ember_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(stdin)
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
    let mut stdin = child.stdin.take();
    let mut action = Some(action);
    let mut prompted_at = None;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // The console is searched only until the prompt has been seen.
        let prompted =
            || prompt.is_none_or(|p| String::from_utf8_lossy(&console.lock().unwrap()).contains(p));
        if action.is_some() && prompted_at.is_none() && prompted() {
            prompted_at = Some(Instant::now());
        }
        let due = match (&action, prompted_at) {
            (Some(Prompted::Signal { after, .. }), Some(at)) => at.elapsed() >= *after,
            (Some(_), Some(_)) => true,
            _ => false,
        };
        if due {
            match action.take() {
                Some(Prompted::Type(data)) => {
                    if let Some(mut pipe) = stdin.take() {
                        // The guest may exit before reading everything.
                        std::thread::spawn(move || {
                            let _ = pipe.write_all(&data);
                        });
                    }
                }
                Some(Prompted::TypeOnTerminal(data)) => {
                    if let Some(tty) = terminal.clone() {
                        // Writes block while the VMM reads nothing.
                        std::thread::spawn(move || {
                            let _ = (&*tty).write_all(&data);
                        });
                    }
                }
                Some(Prompted::Call(action)) => {
                    std::thread::spawn(action);
                }
                Some(Prompted::Signal { signal, .. }) => {
                    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
                    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
                }
                None => {}
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
    drop(stdin);
    drop(terminal);
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
    run_ember_with(&all, env, None, Prompted::Type(stdin.to_vec()), limit)
}
