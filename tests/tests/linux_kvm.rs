//! The default Debian guest under KVM. On hardware KVM it reaches its init and powers off; on
//! a nested kvm_pvm host (see HOST-NOTES), and only there, it may stop at an instruction KVM
//! cannot emulate, and the VMM must then print the kernel banner it got and a report, and exit
//! with status 4.

use std::time::Duration;

use ember_tests::{
    boot, config_json, default_guest, kvm_could_not_emulate, kvm_or_skip, scratch_dir, write_config,
};

/// Guest time under nested KVM is slow (tens of seconds to the first failure): a hang guard.
const LIMIT: Duration = Duration::from_secs(600);

#[test]
fn debian_kernel_prints_its_banner_then_boots_or_reports_the_failure() {
    if !kvm_or_skip("debian_kernel_prints_its_banner_then_boots_or_reports_the_failure") {
        return;
    }
    let dir = scratch_dir("linux-kvm");
    let config = write_config(
        &dir,
        &config_json(
            &default_guest("vmlinux"),
            Some(&default_guest("initramfs.cpio")),
            "console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1 pci=off ember_run=\"uname -a\"",
            1,
            256,
        ),
    );
    let run = boot(&config, &["--accel", "kvm"], b"", LIMIT);
    assert!(run.stdout.contains("Linux version 6."), "{run:#?}");
    if kvm_could_not_emulate(
        "debian_kernel_prints_its_banner_then_boots_or_reports_the_failure",
        &run,
    ) {
        for needle in [
            "vCPU 0 stopped: KVM_EXIT_INTERNAL_ERROR",
            "(64-bit mode)",
            "instruction: ",
            "RIP 0xffffffff",
            "CR3 0x",
        ] {
            assert!(run.stderr.contains(needle), "missing {needle}: {run:#?}");
        }
    } else {
        assert!(run.stdout.contains("EMBER-GUEST-INIT"), "{run:#?}");
        assert!(run.stdout.contains("EMBER-GUEST-EXIT 0"), "{run:#?}");
        assert_eq!(run.code(), 0, "{run:#?}");
    }
}
