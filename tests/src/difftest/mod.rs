//! Differential testing of Ember's software CPU against hardware.
//!
//! A seeded generator (`gen`) draws random sequences of 64-bit instructions with a random
//! initial state; each case runs on KVM (`kvm`) and on `arch::interp::Cpu` (`interp`) in the
//! same tiny machine (`layout`: a CPL-0 prologue, then the sequence at CPL 3), and `compare`
//! checks every architecturally defined result: general registers, RIP, the defined RFLAGS
//! bits (`flags`), the data area, the stacks, the accessed/dirty bits of the pages involved,
//! XMM registers, MXCSR, x87 state, and the exception that ended the case, if any (`report`
//! explains a difference). Where `/dev/kvm` is missing, `corpus` holds KVM's results
//! recorded on a machine that has it. `session` runs many cases and keeps statistics; `suite`
//! names the fixed runs the tests compare (and whose KVM results are recorded).

pub mod compare;
pub mod corpus;
pub mod digest;
pub mod flags;
pub mod gen;
pub mod interp;
pub mod kvm;
pub mod layout;
pub mod report;
pub mod rng;
pub mod session;
pub mod state;
pub mod suite;
