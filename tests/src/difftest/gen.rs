//! The seeded generator of random instruction sequences in 64-bit mode.
//!
//! A case is drawn from its seed alone: the initial state ([`InitialState::from_seed`]), the
//! length, where the code goes, and every instruction. Instructions come from lists of iced
//! `Code`s grouped by kind (`catalog.rs`); their operands are filled generically from each
//! `Code`'s `OpCodeInfo` operand kinds (`ops.rs`), with a few kinds built specially so their
//! results are defined (`int.rs`, `string.rs`, `x87.rs`). Every memory operand lands in the
//! data area or the stack pages; R14 (data-area base) and R15 (index) are never written, RSP
//! only by PUSH/POP. No instruction reads a flag that is undefined at that point (`flags.rs`).

mod catalog;
mod div;
pub mod fptables;
mod int;
mod mem;
mod ops;
mod sse;
mod ssefp;
mod string;
pub mod x87;
mod x87fp;

use std::fmt;

use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, Register,
};

use super::flags::{Tracker, ARITH};
use super::layout;
use super::rng::{mix64, Rng};
use super::state::{InitialState, BASE, INDEX, RSP};

pub use catalog::{Catalog, Category};

/// Instruction groups a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Groups(u32);

impl Groups {
    /// Integer ALU, shifts, multiply/divide, bit operations, moves, stack, flags.
    pub const INT: Groups = Groups(1);
    /// String instructions with and without REP prefixes.
    pub const STRING: Groups = Groups(2);
    /// SSE through SSE4.2 (see the exclusions in `catalog.rs`).
    pub const SSE: Groups = Groups(4);
    /// x87 loads, stores and exact arithmetic.
    pub const X87: Groups = Groups(8);
    /// SSE floating-point arithmetic, compares and conversions on special operands, under
    /// every rounding mode, DAZ and FTZ, and with unmasked exceptions (#XM).
    pub const SSE_FP: Groups = Groups(16);
    /// x87 arithmetic, compares, loads and stores on special operands, under every precision
    /// and rounding control, and with unmasked exceptions (#MF).
    pub const X87_FP: Groups = Groups(32);
    /// What the fast test and its recorded corpus use (changing it needs a new recording).
    pub const DEFAULT: Groups = Groups(1 | 2 | 4 | 8);
    /// What the floating-point test and its recorded corpus use.
    pub const FLOAT: Groups = Groups(16 | 32);
    const NAMES: [(&'static str, Groups); 6] = [
        ("int", Self::INT),
        ("string", Self::STRING),
        ("sse", Self::SSE),
        ("x87", Self::X87),
        ("ssefp", Self::SSE_FP),
        ("x87fp", Self::X87_FP),
    ];

    /// Whether every group of `other` is in this set.
    pub fn contains(self, other: Groups) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any group of `other` is in this set.
    pub fn intersects(self, other: Groups) -> bool {
        self.0 & other.0 != 0
    }

    /// The raw bits (for the corpus header).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The set with these bits; None if unknown bits are set or none is.
    pub fn from_bits(bits: u32) -> Option<Self> {
        (bits != 0 && bits & !0x3f == 0).then_some(Groups(bits))
    }

    /// Parses a comma-separated list such as `int,string,sse`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Self::NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, g)) => bits |= g.0,
                None => {
                    let known: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "unknown instruction group `{name}` (known: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Self::from_bits(bits).ok_or_else(|| "no instruction group given".to_string())
    }
}

impl fmt::Display for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, g)| self.contains(*g))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Groups to draw instructions from.
    pub groups: Groups,
    /// Fewest instructions per case.
    pub min_len: u32,
    /// Most instructions per case.
    pub max_len: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            groups: Groups::DEFAULT,
            min_len: 48,
            max_len: 160,
        }
    }
}

/// One generated (or recorded) case: the seed its initial state comes from, and its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The case seed.
    pub seed: u64,
    /// Address of the first generated instruction (the prologue ends here).
    pub code_addr: u64,
    /// The generated instructions.
    pub code: Vec<u8>,
}

impl Case {
    /// The seed of case `index` of a run with `master` seed.
    pub fn seed_for(master: u64, index: u64) -> u64 {
        mix64(master ^ mix64(index.wrapping_add(0x0dd_ba11)))
    }

    /// The address of the terminator.
    pub fn code_end(&self) -> u64 {
        self.code_addr + self.code.len() as u64
    }

    /// Where execution starts: the prologue.
    pub fn entry(&self) -> u64 {
        self.code_addr - layout::PROLOGUE_LEN
    }

    /// Whether the code fits the code pages (recorded cases are checked before use).
    pub fn fits(&self) -> bool {
        let (lo, hi) = layout::code_window();
        self.code_addr >= lo && self.code_end() <= hi
    }

    /// The code pages: HLT everywhere, then the prologue, the sequence and the terminator.
    pub fn code_pages(&self) -> Vec<u8> {
        let mut pages = vec![layout::FILL; (layout::CODE_END - layout::CODE_BASE) as usize];
        let at = (self.entry() - layout::CODE_BASE) as usize;
        let prologue = layout::prologue();
        pages[at..at + prologue.len()].copy_from_slice(&prologue);
        let at = at + prologue.len();
        pages[at..at + self.code.len()].copy_from_slice(&self.code);
        let at = at + self.code.len();
        pages[at..at + layout::TERMINATOR_LEN as usize].copy_from_slice(&layout::terminator());
        pages
    }

    /// The instructions, decoded.
    pub fn instructions(&self) -> Vec<Instruction> {
        let mut d = Decoder::with_ip(64, &self.code, self.code_addr, DecoderOptions::NONE);
        d.iter().collect()
    }

    /// The same case cut after its first `n` instructions.
    pub fn prefix(&self, n: usize) -> Case {
        let end = self
            .instructions()
            .get(n)
            .map_or(self.code.len(), |i| (i.ip() - self.code_addr) as usize);
        Case {
            seed: self.seed,
            code_addr: self.code_addr,
            code: self.code[..end].to_vec(),
        }
    }
}

/// Whether `decoded` is the instruction `built` (operands, immediates, prefixes).
fn same(built: &Instruction, decoded: &Instruction) -> bool {
    if built.code() != decoded.code() || built.op_count() != decoded.op_count() {
        return false;
    }
    let operands = (0..built.op_count()).all(|n| {
        built.op_kind(n) == decoded.op_kind(n)
            && match built.op_kind(n) {
                iced_x86::OpKind::Register => built.op_register(n) == decoded.op_register(n),
                iced_x86::OpKind::Memory => {
                    built.memory_base() == decoded.memory_base()
                        && built.memory_index() == decoded.memory_index()
                        && built.memory_index_scale() == decoded.memory_index_scale()
                        && built.memory_displacement64() == decoded.memory_displacement64()
                }
                k if is_immediate(k) => built.immediate(n) == decoded.immediate(n),
                _ => true,
            }
    });
    operands
        && built.has_lock_prefix() == decoded.has_lock_prefix()
        && built.has_rep_prefix() == decoded.has_rep_prefix()
        && built.has_repne_prefix() == decoded.has_repne_prefix()
}

fn is_immediate(k: iced_x86::OpKind) -> bool {
    use iced_x86::OpKind as K;
    matches!(
        k,
        K::Immediate8
            | K::Immediate8_2nd
            | K::Immediate16
            | K::Immediate32
            | K::Immediate64
            | K::Immediate8to16
            | K::Immediate8to32
            | K::Immediate8to64
            | K::Immediate32to64
    )
}

/// Generates the case with `seed`.
pub fn generate(seed: u64, config: &Config) -> Case {
    let init = InitialState::from_seed(seed, config.groups);
    let mut rng = Rng::new(seed ^ 0x6e6e_c0de_0000_0002);
    let len = rng.range(i64::from(config.min_len), i64::from(config.max_len.max(1))) as usize;
    let (lo, _) = layout::code_window();
    let code_addr = lo + rng.below(0x2000);
    let mut g = Gen::new(rng, &init, code_addr, config.groups);
    let mut attempts = 0;
    while g.count < len && !g.full && attempts < len * 20 {
        g.step();
        attempts += 1;
    }
    if g.rng.chance(4) && config.groups.contains(Groups::INT) {
        g.faulting_tail();
    }
    if config.groups.intersects(Groups::FLOAT) {
        g.unmasked_tail();
    }
    Case {
        seed,
        code_addr,
        code: g.code,
    }
}

/// The generator's state while it builds one case.
pub(crate) struct Gen<'a> {
    rng: Rng,
    init: &'a InitialState,
    code: Vec<u8>,
    start: u64,
    limit: u64,
    tracker: Tracker,
    factory: InstructionInfoFactory,
    encoder: Encoder,
    count: usize,
    full: bool,
    /// RSP as the generated code leaves it so far.
    rsp: u64,
    /// RFLAGS.DF as the generated code leaves it so far.
    df: bool,
    groups: Groups,
    catalog: &'static Catalog,
    recent: Vec<u64>,
    x87: x87::Stack,
}

impl<'a> Gen<'a> {
    fn new(rng: Rng, init: &'a InitialState, start: u64, groups: Groups) -> Self {
        Gen {
            rng,
            init,
            code: Vec::new(),
            start,
            limit: layout::code_window().1,
            tracker: Tracker::new(),
            factory: InstructionInfoFactory::new(),
            encoder: Encoder::new(64),
            count: 0,
            full: false,
            rsp: init.gpr[RSP],
            df: init.rflags & (1 << 10) != 0,
            groups,
            catalog: Catalog::get(),
            recent: Vec::new(),
            x87: x87::Stack::default(),
        }
    }

    fn ip(&self) -> u64 {
        self.start + self.code.len() as u64
    }

    /// One more instruction (or a few: setup, then the instruction), of a random category.
    fn step(&mut self) {
        let weights: Vec<u32> = Category::ALL
            .iter()
            .map(|c| {
                if self.groups.contains(c.group()) {
                    c.weight()
                } else {
                    0
                }
            })
            .collect();
        let cat = Category::ALL[self.rng.weighted(&weights)];
        // A rejected draft just means another draw.
        let emitted = match cat {
            Category::String => self.string_op(),
            Category::X87 => self.x87_op(),
            Category::Sse => self.sse_op(),
            Category::SseFp => self.ssefp_op(),
            Category::X87Fp => self.x87fp_op(),
            _ => {
                let codes = self.catalog.codes(cat);
                match self.rng.pick(codes) {
                    Some(&code) => self.int_op(code),
                    None => false,
                }
            }
        };
        if emitted && cat.sets_flags() && self.rng.chance(25) {
            self.capture_flags();
        }
    }

    /// The end of a floating-point case: exceptions unmasked in MXCSR or the x87 control
    /// word (of a group that is on), then a few instructions that may raise #XM or #MF.
    fn unmasked_tail(&mut self) -> bool {
        let sse = self.groups.contains(Groups::SSE_FP);
        let x87 = self.groups.contains(Groups::X87_FP);
        if sse && (!x87 || self.rng.chance(50)) {
            self.ssefp_unmasked_tail()
        } else {
            self.x87fp_unmasked_tail()
        }
    }

    /// Emits a SETcc of a condition whose flags are all defined here, so the flags an
    /// instruction produced are compared even when nothing else reads them.
    fn capture_flags(&mut self) -> bool {
        const SETCC: [Code; 16] = [
            Code::Seto_rm8,
            Code::Setno_rm8,
            Code::Setb_rm8,
            Code::Setae_rm8,
            Code::Sete_rm8,
            Code::Setne_rm8,
            Code::Setbe_rm8,
            Code::Seta_rm8,
            Code::Sets_rm8,
            Code::Setns_rm8,
            Code::Setp_rm8,
            Code::Setnp_rm8,
            Code::Setl_rm8,
            Code::Setge_rm8,
            Code::Setle_rm8,
            Code::Setg_rm8,
        ];
        for _ in 0..4 {
            let code = SETCC[self.rng.below(16) as usize];
            let reg = self.free_reg(&ops::GPR8);
            let Ok(ins) = Instruction::with1(code, reg) else {
                continue;
            };
            if self.tracker.reads_undefined(&ins) == 0 && self.emit(ins) {
                return true;
            }
        }
        false
    }

    /// Whether `ins` writes a register generated code must leave alone.
    fn writes_reserved(&mut self, ins: &Instruction) -> bool {
        let stack_op = matches!(ins.mnemonic(), Mnemonic::Push | Mnemonic::Pop);
        if ins.mnemonic() == Mnemonic::Pop
            && ins.op_count() == 1
            && ins.op_register(0).full_register() == Register::RSP
        {
            return true;
        }
        let info = self.factory.info(ins);
        info.used_registers().iter().any(|u| {
            let writes = matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            let full = u.register().full_register();
            writes
                && (full == Register::R14
                    || full == Register::R15
                    || (full == Register::RSP && !stack_op))
        })
    }

    /// Appends `ins` if it keeps every rule (defining the flags it reads first if needed);
    /// false if it was rejected.
    pub(crate) fn emit(&mut self, ins: Instruction) -> bool {
        if self.full || self.writes_reserved(&ins) {
            return false;
        }
        let bad = self.tracker.reads_undefined(&ins);
        if bad != 0 && (bad & !ARITH != 0 || !self.define_flags()) {
            return false;
        }
        self.append(ins)
    }

    /// Encodes and appends `ins` without checks.
    fn append(&mut self, mut ins: Instruction) -> bool {
        let ip = self.ip();
        ins.set_ip(ip);
        let Ok(len) = self.encoder.encode(&ins, ip) else {
            return false;
        };
        let bytes = self.encoder.take_buffer();
        // Track what the encoder produced, decoded back, exactly as the comparison will. The
        // encoder turns AH..BH into SPL..DIL when a REX prefix is needed: such an instruction
        // is not the one built, and is refused.
        let mut decoder = Decoder::with_ip(64, &bytes, ip, DecoderOptions::NONE);
        let decoded = decoder.decode();
        if !same(&ins, &decoded) {
            return false;
        }
        if ip + len as u64 > self.limit {
            self.full = true;
            return false;
        }
        self.code.extend_from_slice(&bytes);
        self.tracker.step(&decoded);
        self.rsp = self
            .rsp
            .wrapping_add(decoded.stack_pointer_increment() as i64 as u64);
        match decoded.mnemonic() {
            Mnemonic::Cld => self.df = false,
            Mnemonic::Std => self.df = true,
            _ => {}
        }
        self.count += 1;
        true
    }

    /// Emits a CMP, which defines all six arithmetic flags and writes no register (a setup
    /// instruction may have just loaded one for the instruction that follows).
    fn define_flags(&mut self) -> bool {
        let regs = ops::GPR64;
        let a = regs[self.rng.below(16) as usize];
        let b = regs[self.rng.below(16) as usize];
        let code = if self.rng.chance(50) {
            Code::Cmp_rm64_r64
        } else {
            Code::Cmp_r64_rm64
        };
        match Instruction::with2(code, a, b) {
            Ok(i) => self.append(i),
            Err(_) => false,
        }
    }

    /// A register of `kind`'s size that generated code may write.
    pub(crate) fn free_reg(&mut self, regs: &[Register]) -> Register {
        loop {
            let r = regs[self.rng.below(regs.len() as u64) as usize];
            if ops::is_free(r) {
                return r;
            }
        }
    }

    /// Emits `mov reg, value` (the encoding fitting the register's size).
    pub(crate) fn mov_imm(&mut self, reg: Register, value: u64) -> bool {
        let ins = if reg.is_gpr8() {
            Instruction::with2(Code::Mov_r8_imm8, reg, value as u8 as u32)
        } else if reg.is_gpr16() {
            Instruction::with2(Code::Mov_r16_imm16, reg, value as u16 as u32)
        } else if reg.is_gpr32() {
            Instruction::with2(Code::Mov_r32_imm32, reg, value as u32)
        } else if value <= u64::from(u32::MAX) && (value > i32::MAX as u64 || self.rng.chance(95)) {
            // The short form: a 32-bit move zero-extends.
            let r32 = ops::GPR32[reg as usize - Register::RAX as usize];
            Instruction::with2(Code::Mov_r32_imm32, r32, value as u32)
        } else if value as i64 == value as i32 as i64 {
            Instruction::with2(Code::Mov_rm64_imm32, reg, value as i64 as i32)
        } else {
            Instruction::with2(Code::Mov_r64_imm64, reg, value)
        };
        ins.map(|i| self.emit(i)).unwrap_or(false)
    }

    /// The registers generated code never writes, as the generator knows them.
    pub(crate) fn base_values(&self) -> (u64, u64) {
        (self.init.gpr[BASE], self.init.gpr[INDEX])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_print() {
        let g = Groups::parse("int, sse").unwrap();
        assert!(g.contains(Groups::INT) && g.contains(Groups::SSE));
        assert!(!g.contains(Groups::STRING));
        assert_eq!(g.to_string(), "int,sse");
        assert!(Groups::parse("int,avx").unwrap_err().contains("avx"));
        assert!(Groups::parse("").is_err());
        assert_eq!(Groups::from_bits(0x40), None);
        assert_eq!(Groups::from_bits(15), Some(Groups::DEFAULT));
        assert_eq!(Groups::parse("ssefp,x87fp").unwrap(), Groups::FLOAT);
        assert!(Groups::FLOAT.intersects(Groups::X87_FP) && !Groups::FLOAT.intersects(Groups::SSE));
    }

    #[test]
    fn a_seed_reproduces_its_case() {
        let c = Config::default();
        assert_eq!(generate(99, &c), generate(99, &c));
        assert_ne!(generate(99, &c).code, generate(100, &c).code);
    }

    #[test]
    fn cases_decode_completely_and_fit_their_window() {
        let float = Config {
            groups: Groups::FLOAT,
            ..Config::default()
        };
        for (c, seed) in [Config::default(), float]
            .into_iter()
            .flat_map(|c| (0..300).map(move |seed| (c, seed)))
        {
            let case = generate(seed, &c);
            assert!(case.fits(), "seed {seed}");
            let n = case.instructions().len();
            assert!(n >= c.min_len as usize, "seed {seed}: {n} instructions");
            assert!(case.instructions().iter().all(|i| !i.is_invalid()));
            let pages = case.code_pages();
            assert_eq!(pages.len() as u64, layout::CODE_END - layout::CODE_BASE);
            let p = case.prefix(3);
            assert_eq!(p.instructions().len(), 3);
            assert!(case.code.starts_with(&p.code));
        }
    }
}
