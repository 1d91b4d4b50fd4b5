//! The software CPU's second tier: blocks that run often are translated to host x86-64 code.
//!
//! A translated block does exactly what [`super::block::BlockCache::run`] does with the
//! decoded instructions: for each one it sets RIP to the next instruction and executes it, and
//! it stops after an instruction that ends the block or faults (the fault is delivered with
//! RIP at the faulting instruction, as in the interpreter). Instructions the translator knows
//! are emitted as host code (see `emit.rs`); the others call their interpreter handler.
//!
//! A block whose last instruction branches back to its own start, and which holds only
//! instructions that cannot change the processor mode, interrupt state or control flow in any
//! other way, loops in host code. Each iteration checks what the dispatcher would check
//! between blocks: the stop flag, posted interrupts, the TLB and code epochs (a store to the
//! block's code by any vCPU, a TLB flush), and the remaining block budget.

mod arena;
mod emit;

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use iced_x86::code_asm::CodeAssembler;

use super::insn::Insn;
use super::Core;

use arena::Arena;
pub use arena::DEFAULT_ARENA_BYTES;

/// How a vCPU translates: whether it does, after how many runs of a block, and how much
/// memory its code may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitOptions {
    /// Translate hot blocks (false: interpret everything).
    pub enabled: bool,
    /// Runs of a block after which it is translated (1: before its first run).
    pub hot_threshold: u32,
    /// Bytes of translated code per vCPU; when full, every translation is dropped.
    pub code_bytes: usize,
}

impl Default for JitOptions {
    /// On, after 50 runs, with [`DEFAULT_ARENA_BYTES`] of code per vCPU.
    fn default() -> Self {
        JitOptions {
            enabled: true,
            hot_threshold: 50,
            code_bytes: DEFAULT_ARENA_BYTES,
        }
    }
}

impl JitOptions {
    /// Translation off: the interpreter runs every block.
    pub const OFF: JitOptions = JitOptions {
        enabled: false,
        hot_threshold: 0,
        code_bytes: 0,
    };
}

/// Why translated code returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum JitExit {
    /// It ran to the end of the block.
    Done = 0,
    /// An instruction ended the block early (a taken branch, a store to code, a mode change).
    Ended = 1,
    /// An instruction faulted; the exception was delivered.
    Faulted = 2,
    /// An interpreter handler panicked; [`take_panic`] has the payload.
    Panicked = 3,
    /// The code was made for another privilege level and did nothing: interpret the block.
    Declined = 4,
}

/// Translated code: `extern "sysv64" fn(core) -> JitExit as u32`.
#[derive(Debug, Clone, Copy)]
pub struct Code {
    entry: usize,
    generation: u32,
}

impl Code {
    /// Runs the translated block on `core`.
    ///
    /// # Safety
    /// The code must come from the vCPU's current arena generation, translated from the
    /// instructions of a block that is still alive (its `Insn`s are referenced by address).
    pub(crate) unsafe fn run(self, core: &mut Core) -> JitExit {
        // SAFETY: `entry` is the start of a function the translator emitted with the
        // System V calling convention, taking the core and returning a `JitExit` value.
        let f: unsafe extern "sysv64" fn(*mut Core) -> u32 =
            unsafe { std::mem::transmute::<usize, _>(self.entry) };
        // SAFETY: as the caller promised, the code and what it points to are alive.
        match unsafe { f(core) } {
            0 => JitExit::Done,
            1 => JitExit::Ended,
            2 => JitExit::Faulted,
            4 => JitExit::Declined,
            _ => JitExit::Panicked,
        }
    }
}

thread_local! {
    /// The payload of a handler panic caught under translated code, to be resumed outside it
    /// (unwinding through generated frames is not possible).
    static PANIC: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// The panic a translated block caught, if any.
pub fn take_panic() -> Option<Box<dyn Any + Send>> {
    PANIC.with(|p| p.borrow_mut().take())
}

/// Runs one instruction through its interpreter handler, as the block loop does: called from
/// translated code for instructions the translator does not emit itself.
extern "sysv64" fn step(core: *mut Core, insn: *const Insn) -> u32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: translated code passes the vCPU's core (exclusively borrowed by the
        // running block) and one of the block's live instructions.
        let (core, insn) = unsafe { (&mut *core, &*insn) };
        match (insn.exec)(core, insn) {
            Ok(()) if core.end_block => {
                core.end_block = false;
                JitExit::Ended
            }
            Ok(()) => JitExit::Done,
            Err(e) => {
                core.fault_at(insn);
                core.raise(e);
                JitExit::Faulted
            }
        }
    }));
    match outcome {
        Ok(exit) => exit as u32,
        Err(payload) => {
            PANIC.with(|p| *p.borrow_mut() = Some(payload));
            JitExit::Panicked as u32
        }
    }
}

/// A vCPU's translator and the memory its code lives in.
pub struct Jit {
    arena: Option<Arena>,
    arena_bytes: usize,
    /// Runs of a block after which it is translated.
    pub(crate) hot_threshold: u32,
    /// Blocks translated so far (for statistics).
    pub translated: u64,
}

impl Jit {
    /// A translator as `options` say.
    pub fn new(options: JitOptions) -> Self {
        let on = options.enabled && options.code_bytes > 0;
        Jit {
            arena: None,
            arena_bytes: if on { options.code_bytes } else { 0 },
            hot_threshold: options.hot_threshold.max(1),
            translated: 0,
        }
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.arena_bytes > 0
    }

    /// Whether `code` is still in the arena (not dropped by a reset since).
    pub fn is_current(&self, code: Code) -> bool {
        self.arena
            .as_ref()
            .is_some_and(|a| a.generation() == code.generation)
    }

    /// Translates the block `insns`, which starts at `start_rip`. None when the arena is
    /// full (the caller drops every translation and resets, see [`Jit::reset`]) or cannot be
    /// made.
    pub fn translate(&mut self, core: &Core, insns: &[Insn], start_rip: u64) -> Option<Code> {
        if self.arena.is_none() {
            match Arena::new(self.arena_bytes) {
                Ok(a) => self.arena = Some(a),
                Err(e) => {
                    log::warn!("software CPU: no memory for translated code ({e}); interpreting");
                    self.arena_bytes = 0;
                    return None;
                }
            }
        }
        let arena = self.arena.as_mut()?;
        let mut a = CodeAssembler::new(64).ok()?;
        emit::block(&mut a, core, insns, start_rip, step as *const () as usize).ok()?;
        let bytes = a.assemble(arena.next_address() as u64).ok()?;
        let entry = arena.place(&bytes)?;
        self.translated += 1;
        Some(Code {
            entry,
            generation: arena.generation(),
        })
    }

    /// Drops all translated code (after the caller forgot every [`Code`] it held).
    pub fn reset(&mut self) {
        if let Some(a) = self.arena.as_mut() {
            a.reset();
        }
    }
}
