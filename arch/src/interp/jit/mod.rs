//! The software CPU's second tier: blocks that run often are translated to host x86-64 code.
//!
//! A translated block does exactly what [`super::block::BlockCache::run`] does with the
//! decoded instructions: it executes them in order and stops after an instruction that ends
//! the block or faults (the fault is delivered with RIP at the faulting instruction, as in
//! the interpreter). Instructions the translator has a template for are emitted as host code
//! (`ops.rs`); the others call their interpreter handler. Only 64-bit code is translated.
//!
//! A block that runs to its end goes on into the next translated block directly when its
//! exit was linked to it (`chain.rs`), after the checks the dispatcher makes between blocks
//! (`emit.rs`): anything posted to the vCPU (interrupts, kicks, and writes to code, which
//! flag every vCPU's inbox) and the block budget (what moves the TLB epoch ends its block).
//! The translated code, the chain slots and the copies of the instructions the code refers
//! to live and die together: code never refers to anything dropped before it.

mod arena;
mod chain;
mod classify;
mod emit;
mod ops;
mod regs;
mod vector;

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::insn::Insn;
use super::Core;

use arena::Arena;
pub use arena::DEFAULT_ARENA_BYTES;
use chain::{LinkStamps, LinkTarget, Lookup, Slots};

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
    /// The instruction at RIP did not run and must be interpreted: the code was made for
    /// another privilege level, or the guest state rules out a template (see `ops.rs`).
    Declined = 4,
}

/// Translated code: `extern "sysv64" fn(core) -> JitExit as u32` at `entry`; chained
/// blocks enter at `body`, past the frame set-up.
#[derive(Debug, Clone, Copy)]
pub struct Code {
    entry: usize,
    body: usize,
    generation: u32,
    cpl: u8,
    /// Whether the block sets the flags before it could observe those it is entered with.
    flags_dead: bool,
}

impl Code {
    /// Runs the translated block on `core`.
    ///
    /// # Safety
    /// The code must come from the vCPU's current arena generation (its instructions, chain
    /// slots and the code it chains to are then alive).
    pub(crate) unsafe fn run(self, core: &mut Core) -> JitExit {
        // SAFETY: `entry` is the start of a function the translator emitted with the
        // System V calling convention, taking the core and returning a `JitExit` value.
        let f: unsafe extern "sysv64" fn(*mut Core) -> u32 =
            unsafe { std::mem::transmute::<usize, _>(self.entry) };
        // SAFETY: as the caller promised, the code and everything it refers to are alive.
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
/// translated code for instructions the translator does not emit itself. A handler that
/// moved the TLB epoch (a CR3 load, INVLPG, a paging mode change) ends the block, so
/// translated code never goes on under another epoch than the one its chain was entered
/// with, and its exits need not check.
extern "sysv64" fn step(core: *mut Core, insn: *const Insn) -> u32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: translated code passes the vCPU's core (exclusively borrowed by the
        // running block) and one of the block's live instructions.
        let (core, insn) = unsafe { (&mut *core, &*insn) };
        // Handlers run with RIP at the next instruction, as the interpreter runs them.
        core.s.rip = insn.next;
        let tlb_epoch = core.tlb.epoch;
        match (insn.exec)(core, insn) {
            Ok(()) if core.end_block || core.tlb.epoch != tlb_epoch => {
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

/// Evaluates condition code `cc` on the lazy flags, for translated Jcc whose flags come from
/// a handler.
extern "sysv64" fn condition(core: *const Core, cc: u32) -> bool {
    // SAFETY: translated code passes the vCPU's core, exclusively borrowed by the running
    // block.
    let core = unsafe { &*core };
    core.s.flags.condition(cc as u8)
}

/// The arithmetic flags as RFLAGS bits, for translated code merging some flags of its own.
extern "sysv64" fn arith(core: *const Core) -> u64 {
    // SAFETY: as in `condition`.
    let core = unsafe { &*core };
    core.s.flags.arith()
}

/// What cached lookups are checked against: the TLB epoch (or, for blocks reached through
/// global translations only, the global TLB epoch, which CR3 reloads leave alone) with the
/// code epoch.
#[derive(Clone, Copy)]
pub(crate) struct Stamps {
    pub any: u64,
    pub global: u64,
}

impl Stamps {
    /// The stamps of `core` now.
    pub(crate) fn of(core: &Core) -> Self {
        let code = u64::from(core.code.epoch());
        Stamps {
            any: (u64::from(core.tlb.epoch) << 32) | code,
            global: (u64::from(core.tlb.global_epoch) << 32) | code,
        }
    }

    /// The stamp a cached lookup of a block reached through global translations only
    /// (`global`), or of any other, must have.
    #[inline(always)]
    pub(crate) fn current(&self, global: bool) -> u64 {
        if global {
            self.global
        } else {
            self.any
        }
    }
}

/// A link the dispatcher was asked for, by code of arena generation `generation`: the next
/// block that runs should be entered in chain slot `slot`, or (`slot` None) in the lookup
/// table of privilege `cpl`.
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest {
    slot: Option<u32>,
    cpl: u8,
    generation: u32,
}

/// Bytes of code per chain slot and per instruction copy the tables are sized for.
const CODE_BYTES_PER_SLOT: usize = 256;
const CODE_BYTES_PER_INSN: usize = 64;

/// A vCPU's translator and the memory its code lives in.
pub struct Jit {
    arena: Option<Arena>,
    arena_bytes: usize,
    /// The chain slots of the arena's code.
    slots: Slots,
    /// Where exits with run-time targets find the next block (allocated with the arena).
    lookup: Option<Lookup>,
    /// Copies of the translated instructions, which handler calls in the code point to; a
    /// fixed-capacity table that never moves, emptied with the arena.
    insns: Vec<Insn>,
    /// Runs of a block after which it is translated.
    pub(crate) hot_threshold: u32,
}

impl Jit {
    /// A translator as `options` say.
    pub fn new(options: JitOptions) -> Self {
        let on = options.enabled && options.code_bytes > 0;
        Jit {
            arena: None,
            arena_bytes: if on { options.code_bytes } else { 0 },
            slots: Slots::new(0),
            lookup: None,
            insns: Vec::new(),
            hot_threshold: options.hot_threshold.max(1),
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

    /// Translates the block `insns` of 64-bit code for the vCPU's current privilege level,
    /// whose first byte is on linear page `page`. None when the arena or its tables are full
    /// (the caller drops every translation and resets, see [`Jit::reset`]) or the code
    /// cannot be made.
    pub fn translate(&mut self, core: &Core, insns: &[Insn], page: u64) -> Option<Code> {
        if self.arena.is_none() {
            match Arena::new(self.arena_bytes) {
                Ok(a) => {
                    self.arena = Some(a);
                    self.slots = Slots::new(self.arena_bytes / CODE_BYTES_PER_SLOT);
                    self.lookup = Some(Lookup::new());
                    self.insns = Vec::with_capacity(self.arena_bytes / CODE_BYTES_PER_INSN);
                }
                Err(e) => {
                    log::warn!("software CPU: no memory for translated code ({e}); interpreting");
                    self.arena_bytes = 0;
                    return None;
                }
            }
        }
        if self.insns.capacity() - self.insns.len() < insns.len() {
            return None;
        }
        let first = self.insns.len();
        self.insns.extend_from_slice(insns);
        let arena = self.arena.as_mut()?;
        let helpers = emit::Helpers {
            step: step as *const () as u64,
            condition: condition as *const () as u64,
            arith: arith as *const () as u64,
        };
        let base = arena.next_address();
        let table = self.lookup.as_ref()?.table(core.s.mode.cpl);
        let placement = emit::Placement {
            base,
            helpers,
            slots: &mut self.slots,
            lookup: table,
        };
        let emitted = emit::block(core, &self.insns[first..], page, placement)?;
        let entry = arena.place(&emitted.bytes)?;
        debug_assert_eq!(entry, base);
        for (slot, request) in emitted.requests {
            self.slots.unlink(slot, (entry + request) as u64);
        }
        Some(Code {
            entry,
            body: entry + emitted.body,
            generation: arena.generation(),
            cpl: core.s.mode.cpl,
            flags_dead: emitted.flags_dead,
        })
    }

    /// The link request the code that just ran left in `core`, if any.
    pub fn take_request(&self, core: &mut Core) -> Option<LinkRequest> {
        let raw = std::mem::take(&mut core.chain_request);
        let generation = self.arena.as_ref()?.generation();
        let lookup_cpl = emit::LOOKUP_REQUEST.wrapping_sub(raw);
        if lookup_cpl <= 3 {
            return Some(LinkRequest {
                slot: None,
                cpl: lookup_cpl as u8,
                generation,
            });
        }
        Some(LinkRequest {
            slot: Some(raw.checked_sub(1)?),
            cpl: 0,
            generation,
        })
    }

    /// Links the exit of `request` to `code`, the block about to run at the core's RIP (on
    /// linear page `page` alone, if it lies on one page; reached through global translations
    /// only when `global`), valid while `stamps` hold (see `chain.rs` for when the TLB epoch
    /// does not matter).
    pub(crate) fn link(
        &mut self,
        request: LinkRequest,
        code: Code,
        core: &Core,
        page: Option<u64>,
        stamps: &Stamps,
        global: bool,
    ) {
        if !self.is_current(code) || request.generation != code.generation {
            return;
        }
        let stamps = LinkStamps {
            any: stamps.any,
            global: global.then_some(stamps.global),
        };
        let (entry, rip) = (code.body as u64, core.s.rip);
        match request.slot {
            Some(slot) => {
                let to = LinkTarget {
                    entry,
                    cpl: code.cpl,
                    flags_dead: code.flags_dead,
                };
                self.slots.link(slot, to, rip, stamps, page);
            }
            None if request.cpl == code.cpl => {
                if let Some(lookup) = self.lookup.as_mut() {
                    lookup.fill(code.cpl, rip, entry, stamps);
                }
            }
            None => {}
        }
    }

    /// Drops all translated code (after the caller forgot every [`Code`] it held).
    pub fn reset(&mut self) {
        if let Some(a) = self.arena.as_mut() {
            a.reset();
        }
        self.slots.clear();
        if let Some(lookup) = self.lookup.as_mut() {
            lookup.clear();
        }
        self.insns.clear();
    }
}
