//! Legacy PC devices on the I/O port bus.

pub mod debug_exit;
pub mod i8042;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod testdev;
