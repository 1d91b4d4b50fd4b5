//! SSE templates: 128-bit and scalar moves between XMM registers and memory, the packed
//! and scalar floating-point arithmetic of SSE/SSE2 (ADD, SUB, MUL, DIV, MIN, MAX and the
//! bitwise AND, ANDN, OR, XOR), and SSE2's integer additions, subtractions, compares,
//! logic, minimum/maximum, averages, multiplications, unpacks and packs.
//!
//! The guest's XMM registers live in the core, as the handlers expect. A template runs only
//! where its handler would not fault on the SSE state: CR0.EM and CR0.TS clear, CR4.OSFXSR
//! set, and (for arithmetic) every MXCSR exception masked. The first template of a run checks
//! this; when it does not hold, the block leaves with [`super::JitExit::Declined`] and the
//! interpreter runs the instruction (and raises #UD, #NM or #XM as the handler decides).
//!
//! Arithmetic runs on the host with the guest's rounding control, FTZ and DAZ in the host
//! MXCSR, which then gathers the exception flags the guest's instructions raise; they are
//! ORed into the guest's MXCSR, and the host's own MXCSR (Rust's default, 0x1F80) is back,
//! before any other instruction, handler or exit. STMXCSR is slow on the host (several
//! nanoseconds), so one run of SSE instructions shares one load and one store of it.

use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use iced_x86::Mnemonic;

use super::super::exec::simd::{ALIGNED, MMX};
use super::super::insn::{Insn, MEM, MEM_DST};
use super::super::state::{CR0_EM, CR0_TS, CR4_OSFXSR, FS};
use super::classify::{kind, Kind};
use super::emit::Emitter;
use super::ops::HOST_RAX;
use super::regs::Gpr;

/// MXCSR: the six exception flags.
const FLAGS: i32 = 0x3f;
/// MXCSR: the six exception masks.
const MASKS: i32 = 0x1f80;
/// MXCSR: the controls a guest's arithmetic runs under (RC, FTZ, DAZ).
const CONTROLS: i32 = 0xe040;
/// The host's MXCSR while Rust code runs: every exception masked, round to nearest.
const HOST_MXCSR: i32 = 0x1f80;

/// An SSE arithmetic instruction as the host runs it on `xmm0, xmm1`: its mandatory prefix
/// (0 for none), its opcode after 0F, and whether it depends on MXCSR.
#[derive(Clone, Copy)]
struct HostOp {
    prefix: u8,
    opcode: u8,
    mxcsr: bool,
}

/// The host instruction for mnemonic `m`; None for those without a template.
fn arithmetic(m: Mnemonic) -> Option<HostOp> {
    use Mnemonic as M;
    // Prefixes by operand type: PS none, PD 66, SS F3, SD F2.
    let (opcode, prefix) = match m {
        M::Addps => (0x58, 0),
        M::Addpd => (0x58, 0x66),
        M::Addss => (0x58, 0xf3),
        M::Addsd => (0x58, 0xf2),
        M::Mulps => (0x59, 0),
        M::Mulpd => (0x59, 0x66),
        M::Mulss => (0x59, 0xf3),
        M::Mulsd => (0x59, 0xf2),
        M::Subps => (0x5c, 0),
        M::Subpd => (0x5c, 0x66),
        M::Subss => (0x5c, 0xf3),
        M::Subsd => (0x5c, 0xf2),
        M::Minps => (0x5d, 0),
        M::Minpd => (0x5d, 0x66),
        M::Minss => (0x5d, 0xf3),
        M::Minsd => (0x5d, 0xf2),
        M::Divps => (0x5e, 0),
        M::Divpd => (0x5e, 0x66),
        M::Divss => (0x5e, 0xf3),
        M::Divsd => (0x5e, 0xf2),
        M::Maxps => (0x5f, 0),
        M::Maxpd => (0x5f, 0x66),
        M::Maxss => (0x5f, 0xf3),
        M::Maxsd => (0x5f, 0xf2),
        M::Andps => (0x54, 0),
        M::Andpd => (0x54, 0x66),
        M::Andnps => (0x55, 0),
        M::Andnpd => (0x55, 0x66),
        M::Orps => (0x56, 0),
        M::Orpd => (0x56, 0x66),
        M::Xorps => (0x57, 0),
        M::Xorpd => (0x57, 0x66),
        _ => return None,
    };
    Some(HostOp {
        prefix,
        opcode,
        mxcsr: opcode >= 0x58,
    })
}

/// The host instruction for SSE2 integer mnemonic `m` (all 66 0F xx); None for those
/// without a template.
fn integer(m: Mnemonic) -> Option<HostOp> {
    use Mnemonic as M;
    let opcode = match m {
        M::Punpcklbw => 0x60,
        M::Punpcklwd => 0x61,
        M::Punpckldq => 0x62,
        M::Packsswb => 0x63,
        M::Pcmpgtb => 0x64,
        M::Pcmpgtw => 0x65,
        M::Pcmpgtd => 0x66,
        M::Packuswb => 0x67,
        M::Punpckhbw => 0x68,
        M::Punpckhwd => 0x69,
        M::Punpckhdq => 0x6a,
        M::Packssdw => 0x6b,
        M::Punpcklqdq => 0x6c,
        M::Punpckhqdq => 0x6d,
        M::Pcmpeqb => 0x74,
        M::Pcmpeqw => 0x75,
        M::Pcmpeqd => 0x76,
        M::Paddq => 0xd4,
        M::Pmullw => 0xd5,
        M::Psubusb => 0xd8,
        M::Psubusw => 0xd9,
        M::Pminub => 0xda,
        M::Pand => 0xdb,
        M::Paddusb => 0xdc,
        M::Paddusw => 0xdd,
        M::Pmaxub => 0xde,
        M::Pandn => 0xdf,
        M::Pavgb => 0xe0,
        M::Pavgw => 0xe3,
        M::Pmulhuw => 0xe4,
        M::Pmulhw => 0xe5,
        M::Psubsb => 0xe8,
        M::Psubsw => 0xe9,
        M::Pminsw => 0xea,
        M::Por => 0xeb,
        M::Paddsb => 0xec,
        M::Paddsw => 0xed,
        M::Pmaxsw => 0xee,
        M::Pxor => 0xef,
        M::Pmuludq => 0xf4,
        M::Pmaddwd => 0xf5,
        M::Psadbw => 0xf6,
        M::Psubb => 0xf8,
        M::Psubw => 0xf9,
        M::Psubd => 0xfa,
        M::Psubq => 0xfb,
        M::Paddb => 0xfc,
        M::Paddw => 0xfd,
        M::Paddd => 0xfe,
        _ => return None,
    };
    Some(HostOp {
        prefix: 0x66,
        opcode,
        mxcsr: false,
    })
}

impl Emitter<'_> {
    /// Offset of XMM register `n`'s slot from `rbx`.
    fn xmm_slot(&self, n: u8) -> i32 {
        self.o.xmm + 16 * i32::from(n & 15)
    }

    /// Whether `insn` is emitted by an SSE template (checked before anything is emitted, so
    /// that other instructions first give the host its MXCSR back).
    pub(super) fn is_vector_template(&self, insn: &Insn) -> bool {
        let memory_ok = insn.flags & MEM == 0
            || (matches!(insn.asize, 4 | 8)
                && (insn.flags & ALIGNED == 0 || usize::from(insn.seg) < FS));
        if insn.flags & MMX != 0 || !memory_ok {
            return false;
        }
        let mem = insn.flags & MEM != 0;
        match kind(insn.exec) {
            Some(Kind::VecMove) => !mem || insn.size == 16,
            Some(Kind::VecMoveScalar) => matches!(insn.size, 4 | 8),
            Some(Kind::VecFloat) => {
                arithmetic(insn.op).is_some() && (!mem || matches!(insn.size, 4 | 8 | 16))
            }
            Some(Kind::VecInt) => integer(insn.op).is_some() && (!mem || insn.size == 16),
            Some(Kind::VecMask) => !mem && insn.r0 < 16,
            _ => false,
        }
    }

    /// Emits SSE template `kind` for `insn` (which [`Emitter::is_vector_template`] accepted).
    pub(super) fn vector_template(&mut self, insn: &Insn, kind: Kind) -> bool {
        self.vector_check(insn);
        match kind {
            Kind::VecMove => self.move128(insn),
            Kind::VecMoveScalar => self.move_scalar(insn),
            Kind::VecMask => self.mask(insn),
            _ => self.xmm_arithmetic(insn),
        }
    }

    /// A label that leaves the block declining `insn` (RIP at its first byte).
    fn decline(&mut self, insn: &Insn) -> DynamicLabel {
        let label = self.a.new_dynamic_label();
        let rip = insn.next.wrapping_sub(u64::from(insn.len));
        self.declines
            .push((label, rip, self.flags_in_registers, self.dirty));
        label
    }

    /// Checks, once per run of templates, that SSE instructions do not fault on CR0/CR4.
    fn vector_check(&mut self, insn: &Insn) {
        if self.vector_checked {
            return;
        }
        let decline = self.decline(insn);
        // (`cr0` and `cr4` would name registers in the assembler's syntax.)
        let (at_cr0, at_cr4) = (self.o.cr0, self.o.cr4);
        dynasm!(self.a
            ; .arch x64
            ; test DWORD [rbx + at_cr0], (CR0_EM | CR0_TS) as i32
            ; jnz =>decline
            ; test DWORD [rbx + at_cr4], CR4_OSFXSR as i32
            ; jz =>decline
        );
        self.vector_checked = true;
    }

    /// Gives the host MXCSR the guest's controls (with clear flags), after checking that the
    /// guest masks every exception; otherwise `insn` is declined.
    fn mxcsr_open(&mut self, insn: &Insn) {
        if self.mxcsr_open {
            return;
        }
        let decline = self.decline(insn);
        let mxcsr = self.o.mxcsr;
        dynasm!(self.a
            ; .arch x64
            ; mov eax, DWORD [rbx + mxcsr]
            ; and eax, MASKS
            ; cmp eax, MASKS
            ; jne =>decline
        );
        self.mxcsr_load_guest();
    }

    /// Loads the host MXCSR with the guest's controls, every exception masked, no flags.
    pub(super) fn mxcsr_load_guest(&mut self) {
        let mxcsr = self.o.mxcsr;
        dynasm!(self.a
            ; .arch x64
            ; mov eax, DWORD [rbx + mxcsr]
            ; and eax, CONTROLS
            ; or eax, MASKS
            ; mov DWORD [rsp], eax
            ; ldmxcsr [rsp]
        );
        self.mxcsr_open = true;
    }

    /// If the host MXCSR holds the guest's: ORs the flags it gathered into the guest's MXCSR
    /// and gives the host its own back. Clobbers `rax` and the host flags.
    pub(super) fn mxcsr_close(&mut self) {
        if !self.mxcsr_open {
            return;
        }
        let mxcsr = self.o.mxcsr;
        dynasm!(self.a
            ; .arch x64
            ; stmxcsr [rsp]
            ; mov eax, DWORD [rsp]
            ; and eax, FLAGS
            ; or DWORD [rbx + mxcsr], eax
            ; mov DWORD [rsp], HOST_MXCSR
            ; ldmxcsr [rsp]
        );
        self.mxcsr_open = false;
        self.host_flags_left = false;
    }

    /// `test esi, 15` and a jump to `slow` when `insn` needs an aligned operand: `rsi` is
    /// the host address, whose low 12 bits are the linear address's (the segment base is 0
    /// for the templates that check).
    fn alignment(&mut self, insn: &Insn, slow: DynamicLabel) {
        if insn.flags & ALIGNED != 0 {
            dynasm!(self.a ; .arch x64 ; test esi, 15 ; jnz =>slow);
        }
    }

    /// MOVAPS/MOVUPS/MOVDQA/MOVDQU/... (`move128`).
    fn move128(&mut self, insn: &Insn) -> bool {
        let (d, s) = (self.xmm_slot(insn.r0), self.xmm_slot(insn.r1));
        if insn.flags & MEM_DST != 0 {
            return self.memory_checked(insn, true, |e, slow| {
                e.alignment(insn, slow);
                dynasm!(e.a ; .arch x64 ; movdqu xmm0, [rbx + s] ; movdqu [rsi], xmm0);
            });
        }
        if insn.flags & MEM != 0 {
            return self.memory_checked(insn, false, |e, slow| {
                e.alignment(insn, slow);
                dynasm!(e.a ; .arch x64 ; movdqu xmm0, [rsi] ; movdqu [rbx + d], xmm0);
            });
        }
        dynasm!(self.a ; .arch x64 ; movdqu xmm0, [rbx + s] ; movdqu [rbx + d], xmm0);
        true
    }

    /// MOVSS/MOVSD (`move_scalar`): register forms merge the low lane, loads zero the rest,
    /// stores write the low lane.
    fn move_scalar(&mut self, insn: &Insn) -> bool {
        let (d, s) = (self.xmm_slot(insn.r0), self.xmm_slot(insn.r1));
        let quad = insn.size == 8;
        if insn.flags & MEM_DST != 0 {
            return self.memory_checked(insn, true, |e, _| {
                if quad {
                    dynasm!(e.a ; .arch x64 ; mov rax, QWORD [rbx + s] ; mov QWORD [rsi], rax);
                } else {
                    dynasm!(e.a ; .arch x64 ; mov eax, DWORD [rbx + s] ; mov DWORD [rsi], eax);
                }
            });
        }
        if insn.flags & MEM != 0 {
            return self.memory_checked(insn, false, |e, _| {
                if quad {
                    dynasm!(e.a ; .arch x64 ; mov rax, QWORD [rsi]);
                } else {
                    dynasm!(e.a ; .arch x64 ; mov eax, DWORD [rsi]);
                }
                dynasm!(e.a
                    ; .arch x64
                    ; mov QWORD [rbx + d], rax
                    ; mov QWORD [rbx + d + 8], 0
                );
            });
        }
        if quad {
            dynasm!(self.a ; .arch x64 ; mov rax, QWORD [rbx + s] ; mov QWORD [rbx + d], rax);
        } else {
            dynasm!(self.a ; .arch x64 ; mov eax, DWORD [rbx + s] ; mov DWORD [rbx + d], eax);
        }
        true
    }

    /// PMOVMSKB/MOVMSKPS/MOVMSKPD: the sign bits of the XMM source's lanes into a general
    /// register (zero-extended to 64 bits).
    fn mask(&mut self, insn: &Insn) -> bool {
        let s = self.xmm_slot(insn.r1);
        let d = Gpr::whole(insn.r0);
        dynasm!(self.a ; .arch x64 ; movdqu xmm0, [rbx + s]);
        match insn.op {
            Mnemonic::Movmskps => dynasm!(self.a ; .arch x64 ; movmskps eax, xmm0),
            Mnemonic::Movmskpd => dynasm!(self.a ; .arch x64 ; movmskpd eax, xmm0),
            _ => dynasm!(self.a ; .arch x64 ; pmovmskb eax, xmm0),
        }
        self.store(HOST_RAX, d, 8);
        true
    }

    /// SSE arithmetic `xmm0 = xmm0 OP xmm1` for `insn`'s destination and source (floating
    /// point or integer).
    fn xmm_arithmetic(&mut self, insn: &Insn) -> bool {
        let Some(op) = arithmetic(insn.op).or_else(|| integer(insn.op)) else {
            return false;
        };
        if op.mxcsr {
            self.mxcsr_open(insn);
        }
        let (d, s) = (self.xmm_slot(insn.r0), self.xmm_slot(insn.r1));
        if insn.flags & MEM != 0 {
            let size = insn.size;
            return self.memory_checked(insn, false, |e, slow| {
                e.alignment(insn, slow);
                match size {
                    4 => dynasm!(e.a ; .arch x64 ; movd xmm1, DWORD [rsi]),
                    8 => dynasm!(e.a ; .arch x64 ; movq xmm1, QWORD [rsi]),
                    _ => dynasm!(e.a ; .arch x64 ; movdqu xmm1, [rsi]),
                }
                dynasm!(e.a ; .arch x64 ; movdqu xmm0, [rbx + d]);
                e.float_op(op);
                dynasm!(e.a ; .arch x64 ; movdqu [rbx + d], xmm0);
            });
        }
        dynasm!(self.a ; .arch x64 ; movdqu xmm0, [rbx + d] ; movdqu xmm1, [rbx + s]);
        self.float_op(op);
        dynasm!(self.a ; .arch x64 ; movdqu [rbx + d], xmm0);
        true
    }

    /// `op xmm0, xmm1`.
    fn float_op(&mut self, op: HostOp) {
        if op.prefix != 0 {
            self.a.push(op.prefix);
        }
        // 0F opcode, ModRM 11 000 001: xmm0, xmm1.
        self.a.extend([0x0f, op.opcode, 0xc1]);
    }
}
