//! Exact semantics of the x86 SSE/SSE2/SSE3/SSSE3/SSE4.1/SSE4.2 instructions
//! (and their MMX integer forms) for the software CPU.
//!
//! - [`int`]: integer lane arithmetic, compares, packs, shuffles and shifts.
//! - [`data`]: moves, inserts/extracts, blends, masks, PTEST, the SSE4.2 string
//!   compares and CRC32.
//! - [`float`]: floating-point arithmetic, compares and conversions, executed on
//!   the host FPU under the guest's MXCSR so that results and exception flags
//!   are bit-exact.
//!
//! Registers are passed by value (`u128` for XMM, `u64` for MMX, lane 0 in the
//! low bits); memory operands are loaded by the caller.

pub mod data;
mod exact;
pub mod float;
pub mod int;
mod lanes;
#[cfg(test)]
pub(crate) mod testutil;
