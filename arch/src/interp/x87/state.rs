//! The FPU register file the x87 unit operates on: the interpreter's own.

pub use super::super::fpu::{Fpu, F80};
