//! The default Debian guest on the software CPU (`--accel interp`): it boots from the ELF
//! vmlinux and from the bzImage, with one vCPU and with two, runs a command and powers off,
//! and the VMM exits 0. Twenty boots in a row all reach init. On a host without SSE3 Linux
//! sees no SSE3 and still boots.

use std::path::Path;
use std::time::Duration;

use ember_tests::{
    boot_with_env, config_json, default_guest, run_ember_typing, scratch_dir, write_config, Run,
};

/// A hang guard, not a performance assertion: a boot takes a few seconds.
const LIMIT: Duration = Duration::from_secs(180);

const COMMAND: &str = "uname -a; cat /proc/cpuinfo; ls /";

/// Boots `kernel` with `vcpus` on the software CPU, running `command` in the guest.
fn boot_interp(test: &str, kernel: &Path, vcpus: u8, command: &str) -> Run {
    boot_interp_with(test, kernel, vcpus, command, &[], &[])
}

/// [`boot_interp`] with more `ember` arguments and the environment variables `env`.
fn boot_interp_with(
    test: &str,
    kernel: &Path,
    vcpus: u8,
    command: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let dir = scratch_dir(test);
    let args = format!(
        "console=ttyS0 reboot=k panic=1 pci=off quiet tsc=reliable ember_run=\"{command}\""
    );
    let config = write_config(
        &dir,
        &config_json(
            kernel,
            Some(&default_guest("initramfs.cpio")),
            &args,
            vcpus,
            256,
        ),
    );
    let mut args = vec!["--accel", "interp"];
    args.extend_from_slice(extra);
    boot_with_env(&config, &args, env, b"", LIMIT)
}

/// The command ran to completion in the guest, which then powered off.
fn assert_command_ran(run: &Run, vcpus: u8) {
    assert_eq!(run.code(), 0, "{run:#?}");
    let out = &run.stdout;
    assert!(out.contains("EMBER-GUEST-INIT"), "{run:#?}");
    assert!(out.contains("EMBER-GUEST-EXIT 0"), "{run:#?}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Linux ") && l.contains("x86_64")),
        "uname -a: {run:#?}"
    );
    assert!(
        out.contains("model name\t: Ember software x86-64 CPU"),
        "{run:#?}"
    );
    let processors = out
        .lines()
        .filter(|l| l.starts_with("processor\t:"))
        .count();
    assert_eq!(processors, usize::from(vcpus), "/proc/cpuinfo: {run:#?}");
    for entry in ["bin", "dev", "init", "proc", "sys"] {
        assert!(
            out.split_whitespace().any(|w| w == entry),
            "ls / lacks {entry}: {run:#?}"
        );
    }
}

#[test]
fn elf_vmlinux_boots_to_init_and_runs_a_command() {
    let run = boot_interp("interp-vmlinux", &default_guest("vmlinux"), 1, COMMAND);
    assert_command_ran(&run, 1);
}

#[test]
fn bzimage_boots_to_init_and_runs_a_command() {
    let run = boot_interp("interp-bzimage", &default_guest("vmlinuz"), 1, COMMAND);
    assert_command_ran(&run, 1);
}

#[test]
fn two_vcpus_both_come_up() {
    let run = boot_interp("interp-smp", &default_guest("vmlinux"), 2, COMMAND);
    assert_command_ran(&run, 2);
    assert!(
        run.stdout.contains("siblings\t: 2"),
        "topology in /proc/cpuinfo: {run:#?}"
    );
}

/// On a host without SSE3 (simulated with `EMBER_HOST_CPU_MASK`) Linux sees no SSE3 and
/// nothing that implies it, and still boots.
#[test]
fn linux_sees_no_sse3_where_the_host_lacks_it() {
    let run = boot_interp_with(
        "interp-no-sse3",
        &default_guest("vmlinux"),
        1,
        COMMAND,
        &[],
        &[("EMBER_HOST_CPU_MASK", "sse3")],
    );
    assert_command_ran(&run, 1);
    let flags = run
        .stdout
        .lines()
        .find(|l| l.starts_with("flags\t"))
        .unwrap_or_else(|| panic!("no flags in /proc/cpuinfo: {run:#?}"));
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    assert!(has("sse2") && has("popcnt"), "{flags}");
    for absent in ["pni", "ssse3", "sse4_1", "sse4_2"] {
        assert!(!has(absent), "{absent} in {flags}");
    }
}

#[test]
fn twenty_boots_in_a_row_all_reach_init() {
    for n in 0..20 {
        let run = boot_interp("interp-repeat", &default_guest("vmlinux"), 1, "true");
        assert_eq!(run.code(), 0, "boot {n}: {run:#?}");
        assert!(
            run.stdout.contains("EMBER-GUEST-EXIT 0"),
            "boot {n}: {run:#?}"
        );
    }
}

/// Root in a Linux guest writes 42 to port 0xf4 (iopl and outb). Without `--debug-exit`
/// nothing listens there (as under Firecracker): the guest carries on and powers off, and the
/// VMM exits 0. With it, the guest chooses the status: (42 << 1) | 1.
#[test]
fn a_linux_guest_chooses_the_exit_status_only_with_debug_exit() {
    let write_port = "ember-ioport write 0xf4 42 && echo port-written";
    let vmlinux = default_guest("vmlinux");
    let run = boot_interp("interp-port-f4", &vmlinux, 1, write_port);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("port-written"), "{run:#?}");
    assert!(run.stdout.contains("EMBER-GUEST-EXIT 0"), "{run:#?}");
    let run = boot_interp_with(
        "interp-port-f4",
        &vmlinux,
        1,
        write_port,
        &["--debug-exit"],
        &[],
    );
    assert_eq!(run.code(), 85, "{run:#?}");
}

/// `make run` on a host without KVM: the default guest's config with the default
/// `--accel auto` and a KVM device that does not exist; a user types into its shell.
#[test]
fn auto_falls_back_to_the_software_cpu_when_kvm_is_missing() {
    let config = default_guest("vm.json");
    let args = [
        "--no-api",
        "--config-file",
        config.to_str().unwrap(),
        "--kvm-device",
        "/nonexistent/kvm",
    ];
    let run = run_ember_typing(
        &args,
        Some("/ # "),
        b"echo shell-says-$((6 * 7))\nexit\n",
        LIMIT,
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("EMBER-GUEST-INIT"), "{run:#?}");
    assert!(run.stdout.contains("shell-says-42"), "{run:#?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("accelerator: software CPU"))
        .unwrap_or_else(|| panic!("no accelerator line: {run:#?}"));
    assert!(line.contains("/nonexistent/kvm"), "{line}");
}
