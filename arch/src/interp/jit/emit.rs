//! Host code for one block: its frame, its exits (with chaining), handler calls, and the
//! driver that emits each instruction by template (see `ops.rs`) or through its handler.
//!
//! Register use in translated code: `rbx` holds the core, `rbp` the TLB's read table for the
//! code's privilege level, `r9`-`r11` lazy flags not yet stored (see
//! `Emitter::flags_in_registers`), `r12`-`r15` the guest registers the block keeps in host
//! registers (see `regs.rs`); the stack slot at `rsp` and everything else is scratch. The
//! epochs seen when the chain of blocks was entered are in [`Core::chain_stamp`], the budget
//! of block runs in [`Core::loop_budget`]. Guest state lives in the core, where the handlers
//! expect it: a template reads and writes the same fields its handler would (registers, the
//! lazy flags), so emitted and handled instructions mix freely; a register held on the host
//! goes back to the core before anything else may read it there. RIP is stored only where it
//! is read: before a handler runs and when the block exits.
//!
//! Every exit of a block whose last instruction did not end it early leads through a stub
//! that does what the dispatcher would do between blocks: it leaves when something was posted
//! to the vCPU (a stop request comes with a kick, and a write to a page holding code flags
//! every vCPU's inbox, see `CodePages::notify_writes`) or the block budget is spent (the TLB
//! epoch needs no check: a handler that moves it ends its block, see `step`; nor does an
//! interrupt shadow: every instruction that starts one ends its block). Otherwise, if the
//! exit's chain slot (or, for a target known only at run time, the lookup table's entry for
//! RIP) was linked under the epochs the chain was entered with, it jumps straight into that
//! block's body; if not, it asks the dispatcher to link it (see `chain.rs`).

use std::mem::offset_of;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::super::flags::{FlagOp, Flags, ARITH, FIXED};
use super::super::fpu::Fpu;
use super::super::insn::{Insn, MEM};
use super::super::mmu::{Tlb, TlbLayout};
use super::super::segment::is_canonical;
use super::super::state::{Mode, State};
use super::super::Core;
use super::chain::{Slots, FLAGS_DEAD_OFFSET, LOOKUP_ENTRIES};
use super::classify::{kind, Kind};
use super::regs::{self, Held};
use super::JitExit;

/// The assembler translated code is written with.
pub(super) type Asm = VecAssembler<X64Relocation>;

/// Where things are in the core, from `rbx`.
pub(super) struct Offsets {
    pub gpr: i32,
    pub rip: i32,
    pub cpl: i32,
    pub global_epoch: i32,
    pub tlb_generation: i32,
    pub budget: i32,
    pub chain_request: i32,
    pub chain_stamp: i32,
    pub seg_base: [i32; 6],
    pub f_op: i32,
    pub f_bits: i32,
    pub f_dst: i32,
    pub f_src: i32,
    pub f_res: i32,
    pub f_aux: i32,
    pub f_explicit: i32,
    pub cr0: i32,
    pub cr4: i32,
    pub mxcsr: i32,
    pub xmm: i32,
}

fn offsets() -> Offsets {
    let s = offset_of!(Core, s);
    let f = s + offset_of!(State, flags);
    let i = |v: usize| i32::try_from(v).expect("the core is smaller than 2 GiB");
    let seg = s + offset_of!(State, seg);
    let seg_size = std::mem::size_of::<kvm_bindings::kvm_segment>();
    Offsets {
        gpr: i(s + offset_of!(State, gpr)),
        rip: i(s + offset_of!(State, rip)),
        cpl: i(s + offset_of!(State, mode) + offset_of!(Mode, cpl)),
        global_epoch: i(offset_of!(Core, tlb) + offset_of!(Tlb, global_epoch)),
        tlb_generation: i(offset_of!(Core, tlb) + offset_of!(Tlb, generation)),
        budget: i(offset_of!(Core, loop_budget)),
        chain_request: i(offset_of!(Core, chain_request)),
        chain_stamp: i(offset_of!(Core, chain_stamp)),
        seg_base: std::array::from_fn(|n| {
            i(seg + n * seg_size + offset_of!(kvm_bindings::kvm_segment, base))
        }),
        f_op: i(f + offset_of!(Flags, op)),
        f_bits: i(f + offset_of!(Flags, bits)),
        f_dst: i(f + offset_of!(Flags, dst)),
        f_src: i(f + offset_of!(Flags, src)),
        f_res: i(f + offset_of!(Flags, res)),
        f_aux: i(f + offset_of!(Flags, aux)),
        f_explicit: i(f + offset_of!(Flags, explicit)),
        cr0: i(s + offset_of!(State, cr0)),
        cr4: i(s + offset_of!(State, cr4)),
        mxcsr: i(s + offset_of!(State, fpu) + offset_of!(Fpu, mxcsr)),
        xmm: i(s + offset_of!(State, fpu) + offset_of!(Fpu, xmm)),
    }
}

/// What the translator knows, at a point in the block, of the lazy flags' operation: set by
/// a template it emitted itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct KnownFlags {
    pub op: FlagOp,
    pub bits: u32,
}

/// An out-of-line slow path: run `insn` through its handler, then go on at `resume`;
/// `guest_mxcsr` when the host MXCSR holds the guest's meanwhile (see `Emitter::mxcsr_open`).
/// `flags_before` and `flags_after` are the flags held in registers (see
/// `Emitter::flags_in_registers`) where the path leaves and where it rejoins.
pub(super) struct Slow {
    pub entry: DynamicLabel,
    pub resume: DynamicLabel,
    pub insn: *const Insn,
    pub guest_mxcsr: bool,
    pub flags_before: Option<KnownFlags>,
    pub flags_after: Option<KnownFlags>,
    /// The flags the code it rejoins finds on the host (see `host_flags_left`), redone there.
    pub host_flags: Option<KnownFlags>,
    /// Held registers the core does not have yet where the path leaves (see `regs.rs`).
    pub dirty: u16,
}

/// An exit of the block, at `label`.
struct ExitStub {
    label: DynamicLabel,
    to: ExitTo,
    /// Flags held in registers, which the core gets on the way out.
    flags: Option<KnownFlags>,
    /// Whether the code it leads to sets the flags before it could observe them (see
    /// `flags_dead_at`): only the way out to the dispatcher stores them then.
    keep_flags: bool,
    /// Held guest registers the core does not have yet, which it gets on the way out.
    dirty: u16,
}

/// Where an exit leads.
enum ExitTo {
    /// Back to the start of this block (a loop): valid as long as its code is.
    Again,
    /// To `target`, through chain slot `slot` at `slot_address`; `request` asks for it to be
    /// linked.
    Static {
        target: u64,
        slot: u32,
        slot_address: u64,
        request: DynamicLabel,
    },
    /// To the RIP already stored, found in the lookup table at `table` (none: back to the
    /// dispatcher); `request` asks for the RIP to be entered there.
    Dynamic {
        table: Option<u64>,
        request: DynamicLabel,
    },
}

/// What translated code leaves in [`Core::chain_request`] to have the dispatcher enter the
/// block about to run in the lookup table of privilege `cpl`: this minus `cpl` (static exits
/// leave their slot plus one, far below).
pub(super) const LOOKUP_REQUEST: u32 = u32::MAX;

/// Addresses of what translated code calls.
#[derive(Clone, Copy)]
pub(super) struct Helpers {
    /// `extern "sysv64" fn(core, insn) -> JitExit`: runs an instruction's handler, with RIP
    /// set to the next instruction first.
    pub step: u64,
    /// `extern "sysv64" fn(core, cc) -> bool`: evaluates a condition code on the lazy flags.
    pub condition: u64,
    /// `extern "sysv64" fn(core) -> u64`: the arithmetic flags as RFLAGS bits.
    pub arith: u64,
}

/// The translation of one block in progress.
pub(super) struct Emitter<'a> {
    pub a: Asm,
    pub o: Offsets,
    pub tlb: TlbLayout,
    pub has_code: u64,
    pub helpers: Helpers,
    pending: u64,
    pub exit: DynamicLabel,
    ended: DynamicLabel,
    declined: DynamicLabel,
    /// Out-of-line exits that decline the instruction at their RIP (see [`JitExit::Declined`]),
    /// with the flags held in registers there and the guest registers the core lacks.
    pub declines: Vec<(DynamicLabel, u64, Option<KnownFlags>, u16)>,
    /// Whether the SSE state checks (CR0.EM/TS, CR4.OSFXSR) were made since the last handler
    /// call: no template changes them.
    pub vector_checked: bool,
    /// Whether the host has BMI2 (RORX).
    pub bmi2: bool,
    /// Whether the host MXCSR holds the guest's rounding and denormal controls and gathers
    /// the exception flags of its SSE arithmetic (see `ops.rs`).
    pub mxcsr_open: bool,
    pub slow: Vec<Slow>,
    exits: Vec<ExitStub>,
    slots: &'a mut Slots,
    lookup: Option<u64>,
    /// The linear page of the block's first byte.
    page: u64,
    /// RIP of the block's first instruction.
    start: u64,
    /// Where its body goes on once the held registers are loaded (a loop jumps back there).
    loaded: DynamicLabel,
    /// The guest registers the block holds in host registers (see `regs.rs`).
    pub held: Held,
    /// Those of them the core does not have yet (a mask of register numbers).
    pub dirty: u16,
    /// Slots this block uses, with the label of the code that asks for each to be linked.
    pub requests: Vec<(u32, DynamicLabel)>,
    pub flags: Option<KnownFlags>,
    /// Whether nothing reads the arithmetic flags the current instruction sets before
    /// another instruction sets them all again (see [`dead_flags`]): its template may skip
    /// them.
    pub flags_dead: bool,
    /// Flags the core does not have yet: their operation, with dst, src and res in `r9`,
    /// `r10` and `r11` (which templates leave alone), and for INC and DEC their carry-in in
    /// `r8` (which a template that needs `r8` stores first). Whatever may observe the flags (a
    /// handler, a helper, an exit, a slow path) first stores them.
    pub flags_in_registers: Option<KnownFlags>,
    /// Set by a template whose last flag-changing host instruction computed the guest's
    /// flags (for the recorded operation), with no join of paths after it: the next
    /// instruction finds them in `host_flags_live`.
    pub host_flags_left: bool,
    /// Whether the host flags are the guest's at the start of this instruction.
    host_flags_live: bool,
    /// Addresses of this block's instructions from which it sets all flags before anything
    /// could observe them (see [`dead_flags`]). Code entered there (this block's own start,
    /// or a block starting there, whose first instructions are these, on the same pages)
    /// never looks at the flags it is entered with: a linked exit to it need not store the
    /// flags held in registers, only its way out to the dispatcher does.
    flags_dead_at: Vec<u64>,
}

/// A block's code before it is placed: the bytes (assembled for `base`), where its body
/// starts, and the slots whose initial entry is a label in it.
pub(super) struct Emitted {
    pub bytes: Vec<u8>,
    pub body: usize,
    pub requests: Vec<(u32, usize)>,
    /// Whether the block sets the flags before it could observe those it is entered with.
    pub flags_dead: bool,
}

/// Where a block's code goes and what it uses: assembled to run at `base`, with chain slots
/// from `slots` and the lookup table `lookup` of its privilege level (if it has one).
pub(super) struct Placement<'a> {
    pub base: usize,
    pub helpers: Helpers,
    pub slots: &'a mut Slots,
    pub lookup: Option<u64>,
}

/// Emits the translation of `insns`, 64-bit code run at the vCPU's current privilege level,
/// whose first byte is on linear page `page`. None when a chain slot is not available.
pub(super) fn block(
    core: &Core,
    insns: &[Insn],
    page: u64,
    placement: Placement,
) -> Option<Emitted> {
    let Placement {
        base,
        helpers,
        slots,
        lookup,
    } = placement;
    let mut a = Asm::new(base);
    let o = offsets();
    let pending = core.lapic.inbox().pending_flag() as *const _ as u64;
    let exit = a.new_dynamic_label();
    let ended = a.new_dynamic_label();
    let declined = a.new_dynamic_label();
    let body = a.new_dynamic_label();
    let loaded = a.new_dynamic_label();
    let cpl = core.s.mode.cpl;
    let tlb = core.tlb.layout();
    let read_table = tlb.tables + usize::from(cpl == 3) * tlb.table_bytes;
    dynasm!(a
        ; .arch x64
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; mov rbx, rdi
        // Code emitted for one privilege level runs only at that level.
        ; cmp BYTE [rbx + o.cpl], cpl as i8
        ; jne =>declined
        ; mov rbp, QWORD read_table as i64
        ; =>body
    );
    let mut e = Emitter {
        a,
        tlb,
        has_code: core.code.has_code_bytes() as u64,
        helpers,
        pending,
        exit,
        ended,
        declined,
        declines: Vec::new(),
        vector_checked: false,
        bmi2: std::arch::is_x86_feature_detected!("bmi2"),
        mxcsr_open: false,
        slow: Vec::new(),
        exits: Vec::new(),
        slots,
        lookup,
        page,
        start: insns
            .first()
            .map_or(u64::MAX, |i| i.next.wrapping_sub(u64::from(i.len))),
        loaded,
        held: regs::choose(insns),
        dirty: 0,
        requests: Vec::new(),
        flags: None,
        flags_dead: false,
        flags_in_registers: None,
        host_flags_left: false,
        host_flags_live: false,
        flags_dead_at: Vec::new(),
        o,
    };
    e.load_held();
    dynasm!(e.a ; .arch x64 ; =>loaded);
    e.dirty = e.held.written;
    let (dead, live_before) = dead_flags(insns);
    e.flags_dead_at = insns
        .iter()
        .zip(&live_before)
        .filter(|&(_, &live)| !live)
        .map(|(i, _)| i.next.wrapping_sub(u64::from(i.len)))
        .collect();
    for (k, insn) in insns.iter().enumerate() {
        let last = k + 1 == insns.len();
        // Where RIP points after this instruction: None when its handler stored it.
        e.flags_dead = dead[k];
        if !e.is_vector_template(insn) {
            e.mxcsr_close();
        }
        e.host_flags_live = std::mem::take(&mut e.host_flags_left) && !e.mxcsr_open;
        let rip = match kind(insn.exec) {
            Some(Kind::Jcc(cc)) if is_canonical(insn.imm) => {
                let taken = e.exit_to(Some(insn.imm), cpl)?;
                e.jcc(cc, taken);
                Some(insn.next)
            }
            Some(Kind::JmpRel) if is_canonical(insn.imm) => Some(insn.imm),
            Some(Kind::CallRel) if insn.size == 8 && is_canonical(insn.imm) => {
                e.call_rel(insn);
                Some(insn.imm)
            }
            Some(Kind::Ret) if insn.size == 8 => {
                e.ret(insn);
                None
            }
            Some(k) if e.template(insn, k) => Some(insn.next),
            _ => {
                e.call_handler(insn);
                dynasm!(e.a ; .arch x64 ; test eax, eax ; jnz =>exit);
                None
            }
        };
        if last {
            e.mxcsr_close();
            let out = e.exit_to(rip, cpl)?;
            dynasm!(e.a ; .arch x64 ; jmp =>out);
        }
    }
    if insns.is_empty() {
        dynasm!(e.a ; .arch x64 ; xor eax, eax ; jmp =>exit);
    }
    e.finish(cpl);
    let flags_dead = e.flags_dead_at.contains(&e.start);
    let Emitter { a, requests, .. } = e;
    let body = a.labels().resolve_dynamic(body).ok()?.0;
    let requests = requests
        .into_iter()
        .map(|(slot, l)| Some((slot, a.labels().resolve_dynamic(l).ok()?.0)))
        .collect::<Option<Vec<_>>>()?;
    let bytes = a.finalize().ok()?;
    Some(Emitted {
        bytes,
        body,
        requests,
        flags_dead,
    })
}

/// How an instruction treats the arithmetic flags, for [`dead_flags`].
#[derive(PartialEq, Eq)]
enum FlagUse {
    /// Neither reads nor writes them, and cannot fault.
    Untouched,
    /// Sets all six from its operands alone, and cannot fault.
    Overwrites,
    /// Sets some of them (or none) and keeps the others, and cannot fault: the flags before
    /// it matter only if those after it do.
    Merges,
    /// Anything else: reads them, keeps some, may fault (an exception pushes RFLAGS), may
    /// leave the block, or is left to a handler.
    Observes,
}

fn flag_use(insn: &Insn) -> FlagUse {
    use super::super::exec::{alu, bits};
    let reg_form = insn.flags & MEM == 0;
    match kind(insn.exec) {
        Some(Kind::Nop | Kind::MovRR | Kind::MovRI | Kind::Lea | Kind::Bswap) => FlagUse::Untouched,
        Some(Kind::Not) if reg_form => FlagUse::Untouched,
        Some(Kind::Extend { .. }) if reg_form => FlagUse::Untouched,
        Some(Kind::AluRR(op) | Kind::AluRI(op)) if !matches!(op, alu::ADC | alu::SBB) => {
            FlagUse::Overwrites
        }
        Some(Kind::Test { .. } | Kind::Imul { .. } | Kind::Neg) if reg_form => FlagUse::Overwrites,
        // INC/DEC keep CF; rotates set only CF and OF; a count of 0 in CL changes nothing.
        Some(Kind::IncDec { .. }) if reg_form => FlagUse::Merges,
        Some(Kind::Shift { cl: true })
            if reg_form
                && matches!(
                    insn.cc,
                    bits::SHL | 6 | bits::SHR | bits::SAR | bits::ROL | bits::ROR
                ) =>
        {
            FlagUse::Merges
        }
        Some(Kind::Shift { cl: false }) if reg_form && matches!(insn.cc, bits::ROL | bits::ROR) => {
            FlagUse::Merges
        }
        Some(Kind::Shift { cl: false })
            if reg_form
                && matches!(insn.cc, bits::SHL | 6 | bits::SHR | bits::SAR)
                && insn.imm & if insn.size == 8 { 63 } else { 31 } != 0 =>
        {
            FlagUse::Overwrites
        }
        _ => FlagUse::Observes,
    }
}

/// For each instruction of a block, whether the flags it sets are dead: overwritten by a
/// later instruction before anything can observe them (the flags leaving the block are
/// live); and whether those entering it are (false: from there on the block sets them all
/// before anything can observe them).
fn dead_flags(insns: &[Insn]) -> (Vec<bool>, Vec<bool>) {
    let mut dead = vec![false; insns.len()];
    let mut live_before = vec![true; insns.len()];
    let mut live = true;
    for (k, insn) in insns.iter().enumerate().rev() {
        dead[k] = !live;
        match flag_use(insn) {
            FlagUse::Untouched => {}
            FlagUse::Overwrites => live = false,
            FlagUse::Merges => {}
            FlagUse::Observes => live = true,
        }
        live_before[k] = live;
    }
    (dead, live_before)
}

impl Emitter<'_> {
    /// A new exit leading to `target` (with a chain slot of its own), or to the RIP already
    /// stored (None); returns the label to jump to.
    fn exit_to(&mut self, target: Option<u64>, cpl: u8) -> Option<DynamicLabel> {
        let label = self.a.new_dynamic_label();
        let request = self.a.new_dynamic_label();
        let to = match target {
            Some(target) if target == self.start => ExitTo::Again,
            Some(target) => {
                let (slot, slot_address) = self.slots.allocate(cpl, target, self.page)?;
                self.requests.push((slot, request));
                ExitTo::Static {
                    target,
                    slot,
                    slot_address,
                    request,
                }
            }
            None => ExitTo::Dynamic {
                table: self.lookup,
                request,
            },
        };
        let keep_flags = target.is_some_and(|t| self.flags_dead_at.contains(&t));
        self.exits.push(ExitStub {
            label,
            to,
            flags: self.flags_in_registers,
            keep_flags,
            dirty: self.dirty,
        });
        Some(label)
    }

    /// Stores the flags held in registers in the core, if any.
    pub(super) fn flush_flags(&mut self) {
        if let Some(known) = self.flags_in_registers.take() {
            self.store_flags(known, [9, 10, 11]);
        }
    }

    /// Stores `flags`, held in registers at a point of the block emitted earlier (an exit,
    /// a declined instruction), in the core.
    fn flush_flags_of(&mut self, flags: Option<KnownFlags>) {
        self.flags_in_registers = flags;
        self.flush_flags();
    }

    /// Records lazy flags `known` in the core, with dst, src and res from the host registers
    /// `regs` (a logic operation's flags depend on its result alone).
    #[allow(clippy::useless_conversion)] // dynasm converts dynamic registers with into()
    pub(super) fn store_flags(&mut self, known: KnownFlags, regs: [u8; 3]) {
        let KnownFlags { op, bits } = known;
        let [dst, src, res] = regs;
        let o = &self.o;
        dynasm!(self.a
            ; .arch x64
            ; mov BYTE [rbx + o.f_op], op as i8
            ; mov DWORD [rbx + o.f_bits], bits as i32
            ; mov QWORD [rbx + o.f_res], Rq(res)
        );
        if op != FlagOp::Logic {
            dynasm!(self.a
                ; .arch x64
                ; mov QWORD [rbx + o.f_dst], Rq(dst)
                ; mov QWORD [rbx + o.f_src], Rq(src)
            );
        }
        if matches!(op, FlagOp::Inc | FlagOp::Dec) {
            // Their carry-in, in r8 (see `flags_in_registers`).
            dynasm!(self.a ; .arch x64 ; mov QWORD [rbx + o.f_aux], r8);
        }
    }

    /// Calls the handler of `insn` through `step` (which sets RIP to the next instruction
    /// first, as the interpreter does), with the flags and held registers in the core around
    /// it; `eax` is then the [`JitExit`].
    pub(super) fn call_handler(&mut self, insn: &Insn) {
        self.flush_flags();
        let dirty = std::mem::take(&mut self.dirty);
        self.store_held(dirty);
        let insn = insn as *const Insn as i64;
        let step = self.helpers.step as i64;
        dynasm!(self.a
            ; .arch x64
            ; mov rdi, rbx
            ; mov rsi, QWORD insn
            ; mov rax, QWORD step
            ; call rax
        );
        self.load_held();
        self.flags = None;
        self.vector_checked = false;
    }

    /// Jcc with condition `cc`: jumps to `taken` when it holds. Flags from a template here
    /// are recomputed on the host from the recorded operands; others are asked for.
    fn jcc(&mut self, cc: u8, taken: DynamicLabel) {
        if !self.flags_still_on_host(cc) && !self.host_flags_for(cc) {
            self.condition_call(cc);
            dynasm!(self.a ; .arch x64 ; test al, al ; jnz =>taken);
            return;
        }
        match cc {
            0 => dynasm!(self.a ; .arch x64 ; jo =>taken),
            1 => dynasm!(self.a ; .arch x64 ; jno =>taken),
            2 => dynasm!(self.a ; .arch x64 ; jb =>taken),
            3 => dynasm!(self.a ; .arch x64 ; jae =>taken),
            4 => dynasm!(self.a ; .arch x64 ; je =>taken),
            5 => dynasm!(self.a ; .arch x64 ; jne =>taken),
            6 => dynasm!(self.a ; .arch x64 ; jbe =>taken),
            7 => dynasm!(self.a ; .arch x64 ; ja =>taken),
            8 => dynasm!(self.a ; .arch x64 ; js =>taken),
            9 => dynasm!(self.a ; .arch x64 ; jns =>taken),
            10 => dynasm!(self.a ; .arch x64 ; jp =>taken),
            11 => dynasm!(self.a ; .arch x64 ; jnp =>taken),
            12 => dynasm!(self.a ; .arch x64 ; jl =>taken),
            13 => dynasm!(self.a ; .arch x64 ; jge =>taken),
            14 => dynasm!(self.a ; .arch x64 ; jle =>taken),
            _ => dynasm!(self.a ; .arch x64 ; jg =>taken),
        }
    }

    /// `al` = whether condition `cc` holds (1 or 0).
    pub(super) fn condition_to_al(&mut self, cc: u8) {
        if !self.flags_still_on_host(cc) && !self.host_flags_for(cc) {
            self.condition_call(cc);
            return;
        }
        match cc {
            0 => dynasm!(self.a ; .arch x64 ; seto al),
            1 => dynasm!(self.a ; .arch x64 ; setno al),
            2 => dynasm!(self.a ; .arch x64 ; setb al),
            3 => dynasm!(self.a ; .arch x64 ; setae al),
            4 => dynasm!(self.a ; .arch x64 ; sete al),
            5 => dynasm!(self.a ; .arch x64 ; setne al),
            6 => dynasm!(self.a ; .arch x64 ; setbe al),
            7 => dynasm!(self.a ; .arch x64 ; seta al),
            8 => dynasm!(self.a ; .arch x64 ; sets al),
            9 => dynasm!(self.a ; .arch x64 ; setns al),
            10 => dynasm!(self.a ; .arch x64 ; setp al),
            11 => dynasm!(self.a ; .arch x64 ; setnp al),
            12 => dynasm!(self.a ; .arch x64 ; setl al),
            13 => dynasm!(self.a ; .arch x64 ; setge al),
            14 => dynasm!(self.a ; .arch x64 ; setle al),
            _ => dynasm!(self.a ; .arch x64 ; setg al),
        }
    }

    /// `al` = condition `cc` on the lazy flags, through the helper.
    fn condition_call(&mut self, cc: u8) {
        self.flush_flags();
        let condition = self.helpers.condition as i64;
        dynasm!(self.a
            ; .arch x64
            ; mov rdi, rbx
            ; mov esi, cc as i32
            ; mov rax, QWORD condition
            ; call rax
        );
    }

    /// Whether the host flags are still the guest's for condition `cc`, as the previous
    /// template left them (see `host_flags_left`); only the first code of an
    /// instruction may ask.
    fn flags_still_on_host(&self, cc: u8) -> bool {
        let uses_cf = matches!(cc >> 1, 1 | 3);
        match (self.host_flags_live, self.flags) {
            (true, Some(known)) => match known.op {
                FlagOp::Inc | FlagOp::Dec => !uses_cf,
                FlagOp::Add | FlagOp::Adc | FlagOp::Sub | FlagOp::Sbb | FlagOp::Logic => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// Sets the host flags as the guest's for condition `cc`, from the operands a template
    /// recorded; false when the flags' origin is unknown here or the host cannot redo it.
    pub(super) fn host_flags_for(&mut self, cc: u8) -> bool {
        let Some(known) = self.flags else {
            return false;
        };
        let uses_cf = matches!(cc >> 1, 1 | 3);
        let o = &self.o;
        macro_rules! sized {
            ($op:ident) => {
                match known.bits {
                    8 => dynasm!(self.a ; .arch x64 ; $op al, cl),
                    16 => dynasm!(self.a ; .arch x64 ; $op ax, cx),
                    32 => dynasm!(self.a ; .arch x64 ; $op eax, ecx),
                    _ => dynasm!(self.a ; .arch x64 ; $op rax, rcx),
                }
            };
        }
        let held = self.flags_in_registers.is_some();
        match known.op {
            FlagOp::Logic => {
                // The result, tested against itself.
                if held {
                    dynasm!(self.a ; .arch x64 ; mov rax, r11);
                } else {
                    dynasm!(self.a ; .arch x64 ; mov rax, QWORD [rbx + o.f_res]);
                }
                dynasm!(self.a ; .arch x64 ; mov rcx, rax);
                sized!(test);
            }
            FlagOp::Sub | FlagOp::Add | FlagOp::Inc | FlagOp::Dec => {
                if uses_cf && matches!(known.op, FlagOp::Inc | FlagOp::Dec) {
                    return false;
                }
                if held {
                    dynasm!(self.a ; .arch x64 ; mov rax, r9 ; mov rcx, r10);
                } else {
                    dynasm!(self.a
                        ; .arch x64
                        ; mov rax, QWORD [rbx + o.f_dst]
                        ; mov rcx, QWORD [rbx + o.f_src]
                    );
                }
                if matches!(known.op, FlagOp::Add | FlagOp::Inc) {
                    sized!(add);
                } else {
                    sized!(cmp);
                }
            }
            FlagOp::Explicit => {
                let arith = (ARITH | FIXED) as i32;
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD [rbx + o.f_explicit]
                    ; and eax, arith
                    ; push rax
                    ; popfq
                );
            }
            _ => return false,
        }
        true
    }

    /// For a link (at `rax`) whose TLB-epoch stamp did not match: jumps to `request` unless
    /// its global stamp, at offset `at`, is `global_epoch << 32 | code_epoch` (the code
    /// epoch, in the chain stamp's low half, was checked already). Clobbers `rcx`, `rdx`.
    fn global_stamp_check(&mut self, at: i32, request: DynamicLabel) {
        let (global_epoch, stamp) = (self.o.global_epoch, self.o.chain_stamp);
        dynasm!(self.a
            ; .arch x64
            ; mov edx, DWORD [rbx + global_epoch]
            ; shl rdx, 32
            ; mov ecx, DWORD [rbx + stamp]
            ; or rdx, rcx
            ; cmp rdx, QWORD [rax + at]
            ; jne =>request
        );
    }

    /// Emits the out-of-line code: slow paths, exit stubs and the shared return paths.
    fn finish(&mut self, cpl: u8) {
        let (exit, ended, declined) = (self.exit, self.ended, self.declined);
        for s in std::mem::take(&mut self.slow) {
            dynasm!(self.a ; .arch x64 ; =>s.entry);
            // Handlers run under the host's MXCSR.
            self.mxcsr_open = s.guest_mxcsr;
            self.mxcsr_close();
            // The call stores the flags held in registers first.
            self.flags_in_registers = s.flags_before;
            self.dirty = s.dirty;
            // SAFETY: the pointer is one of the block's instructions, alive for the whole
            // translation.
            self.call_handler(unsafe { &*s.insn });
            dynasm!(self.a ; .arch x64 ; test eax, eax ; jnz =>exit);
            if s.guest_mxcsr {
                self.mxcsr_load_guest();
            }
            if s.flags_after.is_some() {
                // The code it rejoins holds them in registers: the core has them now (the
                // handler recorded what the template would have).
                let o = &self.o;
                dynasm!(self.a
                    ; .arch x64
                    ; mov r9, QWORD [rbx + o.f_dst]
                    ; mov r10, QWORD [rbx + o.f_src]
                    ; mov r11, QWORD [rbx + o.f_res]
                );
                if let Some(KnownFlags {
                    op: FlagOp::Inc | FlagOp::Dec,
                    ..
                }) = s.flags_after
                {
                    dynasm!(self.a ; .arch x64 ; mov r8, QWORD [rbx + o.f_aux]);
                }
            }
            if let Some(known) = s.host_flags {
                self.flags = Some(known);
                self.flags_in_registers = s.flags_after;
                // (Every flag but CF for INC and DEC, which never get here.)
                self.host_flags_for(4);
            }
            dynasm!(self.a ; .arch x64 ; jmp =>s.resume);
        }
        let o_rip = self.o.rip;
        for (label, rip, flags, dirty) in std::mem::take(&mut self.declines) {
            dynasm!(self.a ; .arch x64 ; =>label);
            self.flush_flags_of(flags);
            self.store_held(dirty);
            dynasm!(self.a
                ; .arch x64
                ; mov rax, QWORD rip as i64
                ; mov QWORD [rbx + o_rip], rax
                ; jmp =>declined
            );
        }
        for stub in std::mem::take(&mut self.exits) {
            self.exit_stub(&stub, cpl);
        }
        dynasm!(self.a
            ; .arch x64
            ; =>declined
            ; mov eax, JitExit::Declined as i32
            ; jmp =>exit
            ; =>ended
            ; mov eax, JitExit::Ended as i32
            ; =>exit
            ; add rsp, 8
            ; pop r15
            ; pop r14
            ; pop r13
            ; pop r12
            ; pop rbp
            ; pop rbx
            ; ret
        );
    }

    /// One exit: the dispatcher's checks, then the chained jump or the link request. The
    /// target RIP of a static exit is stored only on the way out to the dispatcher: blocks
    /// store RIP where they read it.
    fn exit_stub(&mut self, stub: &ExitStub, cpl: u8) {
        let ended = self.ended;
        let leave = match stub.to {
            ExitTo::Static { .. } | ExitTo::Again => self.a.new_dynamic_label(),
            ExitTo::Dynamic { .. } => ended,
        };
        dynasm!(self.a ; .arch x64 ; =>stub.label);
        let (written, again) = (self.held.written, matches!(stub.to, ExitTo::Again));
        // Flags held in registers go to the core on the way out to the dispatcher, but a
        // linked jump to code that sets them before it could observe them leaves them: known
        // here for a target in this block (`keep_flags`), else in the slot at link time.
        let static_exit = matches!(stub.to, ExitTo::Static { .. });
        let deferred = stub.keep_flags || (static_exit && stub.flags.is_some());
        if !deferred {
            self.flush_flags_of(stub.flags);
        }
        // The core gets the held registers, but for a loop back into this block's body those
        // its start takes as not in the core yet (see `regs.rs`), which it gets on leaving.
        self.store_held(if again {
            stub.dirty & !written
        } else {
            stub.dirty
        });
        let (o_rip, o_chain_request) = (self.o.rip, self.o.chain_request);
        let (stamp, budget) = (self.o.chain_stamp, self.o.budget);
        dynasm!(self.a
            ; .arch x64
            ; mov rax, QWORD self.pending as i64
            ; cmp BYTE [rax], 0
            ; jne =>leave
        );
        let (request, code) = match stub.to {
            ExitTo::Again => {
                // This very block: its code is current until a write to code, which flags
                // the inbox polled above.
                let (loaded, start) = (self.loaded, self.start);
                dynasm!(self.a
                    ; .arch x64
                    ; sub QWORD [rbx + budget], 1
                    ; jbe =>leave
                    ; jmp =>loaded
                    ; =>leave
                );
                if deferred {
                    self.flush_flags_of(stub.flags);
                }
                self.store_held(stub.dirty & written);
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD start as i64
                    ; mov QWORD [rbx + o_rip], rax
                    ; jmp =>ended
                );
                return;
            }
            ExitTo::Static {
                slot,
                slot_address,
                request,
                ..
            } => {
                let linked = self.a.new_dynamic_label();
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD slot_address as i64
                    ; mov rcx, QWORD [rbx + stamp]
                    ; and rcx, QWORD [rax + 24]
                    ; cmp rcx, QWORD [rax]
                    ; je =>linked
                );
                self.global_stamp_check(40, request);
                dynasm!(self.a ; .arch x64 ; =>linked);
                (request, slot + 1)
            }
            ExitTo::Dynamic {
                table: Some(table),
                request,
            } => {
                // The entry of lookup_index(rip), 32 bytes each.
                let mask = (LOOKUP_ENTRIES - 1) as i32;
                dynasm!(self.a
                    ; .arch x64
                    ; mov rcx, QWORD [rbx + o_rip]
                    ; mov rdx, rcx
                    ; shr rdx, 12
                    ; xor rdx, rcx
                    ; and edx, mask
                    ; shl edx, 5
                    ; mov rax, QWORD table as i64
                    ; add rax, rdx
                    ; cmp rcx, QWORD [rax + 16]
                    ; jne =>request
                );
                let linked = self.a.new_dynamic_label();
                dynasm!(self.a
                    ; .arch x64
                    ; mov rcx, QWORD [rbx + stamp]
                    ; cmp rcx, QWORD [rax]
                    ; je =>linked
                );
                self.global_stamp_check(24, request);
                dynasm!(self.a ; .arch x64 ; =>linked);
                (request, LOOKUP_REQUEST - u32::from(cpl))
            }
            ExitTo::Dynamic { table: None, .. } => {
                dynasm!(self.a ; .arch x64 ; jmp =>ended);
                return;
            }
        };
        dynasm!(self.a
            ; .arch x64
            ; sub QWORD [rbx + budget], 1
            ; jbe =>leave
        );
        if deferred && !stub.keep_flags {
            // (rax: the slot.)
            let go = self.a.new_dynamic_label();
            dynasm!(self.a
                ; .arch x64
                ; cmp BYTE [rax + FLAGS_DEAD_OFFSET], 0
                ; jne =>go
            );
            self.flush_flags_of(stub.flags);
            dynasm!(self.a ; .arch x64 ; =>go);
        }
        dynasm!(self.a
            ; .arch x64
            ; jmp QWORD [rax + 8]
            ; =>request
            ; mov DWORD [rbx + o_chain_request], code as i32
        );
        match stub.to {
            ExitTo::Static { target, .. } => {
                dynasm!(self.a ; .arch x64 ; =>leave);
                if deferred {
                    self.flush_flags_of(stub.flags);
                }
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD target as i64
                    ; mov QWORD [rbx + o_rip], rax
                    ; jmp =>ended
                );
            }
            ExitTo::Dynamic { .. } | ExitTo::Again => {
                dynasm!(self.a ; .arch x64 ; jmp =>ended)
            }
        }
    }
}
