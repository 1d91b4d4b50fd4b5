//! Instruction handlers, grouped by kind.

pub mod alu;
pub mod bits;
pub mod control;
pub mod data;
pub mod simd;
pub mod string;
pub mod system;
pub mod x87;
