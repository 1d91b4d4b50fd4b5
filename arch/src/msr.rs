//! Model-specific registers: their numbers and the values a vCPU starts with.

/// `IA32_TIME_STAMP_COUNTER`.
pub const IA32_TSC: u32 = 0x10;
/// `IA32_SYSENTER_CS`.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// `IA32_MISC_ENABLE`.
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_MTRR_DEF_TYPE`.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
/// `IA32_STAR`.
pub const IA32_STAR: u32 = 0xc000_0081;
/// `IA32_LSTAR`.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// `IA32_CSTAR`.
pub const IA32_CSTAR: u32 = 0xc000_0083;
/// `IA32_FMASK`.
pub const IA32_FMASK: u32 = 0xc000_0084;
/// `IA32_KERNEL_GS_BASE`.
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// `IA32_MISC_ENABLE`: fast string operations enabled.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `IA32_MTRR_DEF_TYPE`: MTRRs enabled, default type write-back.
const MTRR_ENABLE_DEFAULT_WB: u64 = (1 << 11) | 6;

/// `(index, value)` of every MSR a vCPU is reset to before it runs: syscall and sysenter
/// state cleared, TSC at zero, fast strings on, and MTRRs enabled with write-back as the
/// default type (Linux otherwise maps all of RAM uncached).
pub fn boot_msrs() -> [(u32, u64); 11] {
    [
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (IA32_STAR, 0),
        (IA32_CSTAR, 0),
        (IA32_KERNEL_GS_BASE, 0),
        (IA32_FMASK, 0),
        (IA32_LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_MTRR_DEF_TYPE, MTRR_ENABLE_DEFAULT_WB),
    ]
}
