//! x87, MMX and SSE register state, in the layout FXSAVE uses.
//!
//! x87 registers are kept as exact 80-bit values, so loads, stores and FXSAVE/FXRSTOR
//! round-trip bit for bit; arithmetic works in f64 (see docs/SOFTWARE-CPU.md).

/// An 80-bit extended-precision value: 64-bit significand (explicit integer bit), then sign
/// and 15-bit exponent.
pub type F80 = [u8; 10];

/// x87, MMX and SSE state.
#[derive(Debug, Clone)]
pub struct Fpu {
    /// Physical x87 registers R0..R7 (ST(i) is R((TOP + i) % 8)). MMX registers alias their
    /// low 64 bits.
    pub regs: [F80; 8],
    /// Control word.
    pub fcw: u16,
    /// Status word, TOP in bits 11..14.
    pub fsw: u16,
    /// Abridged tag word: bit i set when R(i) is in use.
    pub ftw: u8,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last x87 instruction pointer.
    pub fip: u64,
    /// Last x87 data pointer.
    pub fdp: u64,
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
    /// SSE control and status.
    pub mxcsr: u32,
}

impl Default for Fpu {
    /// The state after FNINIT and with MXCSR at its reset value.
    fn default() -> Self {
        Fpu {
            regs: [[0; 10]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            xmm: [0; 16],
            mxcsr: 0x1f80,
        }
    }
}

impl Fpu {
    /// TOP of the register stack.
    #[inline]
    pub fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }

    /// Sets TOP.
    #[inline]
    pub fn set_top(&mut self, top: usize) {
        self.fsw = (self.fsw & !(7 << 11)) | ((top as u16 & 7) << 11);
    }
}
