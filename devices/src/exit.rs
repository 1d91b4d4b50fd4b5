//! How a device asks for the whole VM to end.

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
