//! x87 floating-point unit for the software x86-64 CPU.
//!
//! * [`state`]: the FPU register file (the interpreter's [`Fpu`](super::fpu::Fpu)).
//! * [`f80`]: the 80-bit format and exact software conversions to and from
//!   f32/f64/integers/packed BCD, honouring the rounding control.
//! * [`stack`]: TOP/tag bookkeeping, status-word and exception-summary logic.
//! * [`ops`]: software instructions (loads, stores, moves, control).
//! * [`compute`]: arithmetic, compares and transcendentals executed bit-exactly
//!   on the host x87 through [`host`], the only module with `unsafe` code.
//! * [`image`]: FXSAVE/FXRSTOR, FNSTENV/FLDENV and FNSAVE/FRSTOR images.
//!
//! The interpreter checks [`stack::mf_pending`] before every waiting x87
//! instruction and raises #MF when it is set.

pub mod compute;
pub mod f80;
pub mod host;
pub mod image;
pub mod ops;
pub mod stack;
pub mod state;

#[cfg(test)]
mod tests;
