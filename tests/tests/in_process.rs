//! The VMM as a library: a VM built and run in this process by `vmm::vm::run`, watched by a
//! supervisor of the test's own that pauses it, resumes it and stops it, without the binary
//! or the API in between.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::VmConfig;
use ember_tests::test_guest;
use vmm::cli::Accel;
use vmm::stop::{StopReason, StopSignal};
use vmm::vm::{self, Running, Supervisor, VmOptions};

/// Lets the guest run a moment, pauses it twice, and ends the VM.
struct PauseTwiceThenQuit {
    pauses: usize,
}

impl Supervisor for PauseTwiceThenQuit {
    fn supervise(&mut self, vm: &Running<'_>) -> StopReason {
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..2 {
            vm.pause().expect("the vCPU parks");
            assert!(vm.is_paused());
            std::thread::sleep(Duration::from_millis(50));
            vm.resume().expect("the vCPU goes on");
            assert!(!vm.is_paused());
            self.pauses += 1;
        }
        assert!(
            vm.device_counters().is_empty(),
            "no virtio devices configured"
        );
        vm.stop.stop(StopReason::UserQuit);
        vm.stop.wait()
    }
}

#[test]
fn a_vm_runs_in_process_under_a_supervisor_of_the_callers() {
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "stall=j"}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}}}"#,
        test_guest("stall").display()
    );
    let config = VmConfig::from_json(&json, "test").unwrap();
    let opts = VmOptions {
        accel: Accel::Interp,
        kvm_device: Path::new("/dev/kvm"),
        debug_exit: false,
        jit: true,
    };
    let stop = Arc::new(StopSignal::new().unwrap());
    let mut supervisor = PauseTwiceThenQuit { pauses: 0 };
    let reason = vm::run(&config, &opts, &stop, &mut supervisor).unwrap();
    assert!(matches!(reason, StopReason::UserQuit), "{reason:?}");
    assert_eq!(reason.exit_status(), 0);
    assert_eq!(supervisor.pauses, 2);
}
