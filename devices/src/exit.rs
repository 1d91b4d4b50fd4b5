//! How a device asks for the whole VM to end.

use std::sync::Arc;

/// A guest-initiated end of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest reset the machine (keyboard controller or ACPI reset). Like Firecracker,
    /// Ember ends the VM rather than rebooting it.
    Reset,
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest wrote `value` to the debug-exit port; the VMM exits with status
    /// `(value << 1) | 1`, as QEMU's isa-debug-exit does.
    DebugExit(u32),
}

/// Receives exit requests from devices. The first request wins.
pub trait ExitRequester: Send + Sync {
    /// Asks the VMM to stop the VM for `reason`.
    fn request_exit(&self, reason: GuestExit);
}

/// Adapts an [`ExitRequester`] to vm-superio's trigger trait, for devices whose trigger means
/// "reset the machine" (the i8042).
#[derive(Clone)]
pub struct ResetTrigger(pub Arc<dyn ExitRequester>);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(GuestExit::Reset);
        Ok(())
    }
}

/// Records the exit requests of the devices under test.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Recorder(pub std::sync::Mutex<Vec<GuestExit>>);

#[cfg(test)]
impl ExitRequester for Recorder {
    fn request_exit(&self, reason: GuestExit) {
        self.0.lock().unwrap().push(reason);
    }
}
