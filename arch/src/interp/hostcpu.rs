//! What the software CPU needs from the host processor, and the SSE level it can therefore
//! offer a guest.
//!
//! Most of the software CPU is plain Rust, but its SSE floating-point arithmetic runs the
//! host's own instruction (`simd/float.rs`): ADDSUBPS/HADDPS/HSUBPS need the host's SSE3,
//! ROUNDPS/DPPS its SSE4.1. Everything else at those levels (MOVDDUP, LDDQU, FISTTP, all of
//! SSSE3, the integer SSE4.1 instructions, SSE4.2) is software, and the x87 code
//! (`x87/host.rs`) uses only instructions every x86-64 processor has.
//!
//! A guest is offered a level only when all of it works, and the levels are cumulative, as
//! compilers and libraries assume (SSSE3 implies SSE3, SSE4.2 implies SSE4.1): a host without
//! SSE3 gives the guest SSE2, a host without SSE4.1 gives it SSSE3. The CPUID table advertises
//! exactly that level and the decoder raises #UD for every instruction above it.
//!
//! `EMBER_HOST_CPU_MASK` (read once per process) names host features to treat as absent,
//! comma-separated (`sse3`, `sse4.1`), so tests can run a guest as on a host that lacks them.

use std::sync::OnceLock;

use iced_x86::{CpuidFeature, Instruction};

/// The environment variable naming host features to treat as absent.
pub const MASK_VARIABLE: &str = "EMBER_HOST_CPU_MASK";

/// The host processor features the software CPU executes directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpu {
    /// SSE3 (ADDSUBPS, HADDPS, HSUBPS and their PD forms).
    pub sse3: bool,
    /// SSE4.1 (ROUNDPS/PD/SS/SD, DPPS, DPPD).
    pub sse41: bool,
}

impl HostCpu {
    /// Feature names [`HostCpu::masked`] knows.
    const NAMES: [&'static str; 2] = ["sse3", "sse4.1"];

    /// The features this host's processor has.
    pub fn detected() -> HostCpu {
        HostCpu {
            sse3: std::arch::is_x86_feature_detected!("sse3"),
            sse41: std::arch::is_x86_feature_detected!("sse4.1"),
        }
    }

    /// The features the software CPU relies on: [`HostCpu::detected`] minus those named in
    /// `EMBER_HOST_CPU_MASK`.
    ///
    /// # Panics
    ///
    /// If the variable names an unknown feature (a test setting it wrongly must not pass
    /// unnoticed).
    pub fn effective() -> HostCpu {
        static EFFECTIVE: OnceLock<HostCpu> = OnceLock::new();
        *EFFECTIVE.get_or_init(|| {
            let host = HostCpu::detected();
            match std::env::var(MASK_VARIABLE) {
                Ok(mask) => host
                    .masked(&mask)
                    .unwrap_or_else(|e| panic!("{MASK_VARIABLE}: {e}")),
                Err(_) => host,
            }
        })
    }

    /// These features without the ones named in the comma-separated `mask`.
    pub fn masked(self, mask: &str) -> Result<HostCpu, String> {
        let mut host = self;
        for name in mask.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "sse3" => host.sse3 = false,
                "sse4.1" => host.sse41 = false,
                _ => {
                    return Err(format!(
                        "unknown host feature `{name}` (known: {})",
                        Self::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(host)
    }

    /// The SSE level a guest can be offered on this host.
    pub fn simd_level(self) -> SimdLevel {
        match (self.sse3, self.sse41) {
            (false, _) => SimdLevel::Sse2,
            (true, false) => SimdLevel::Ssse3,
            (true, true) => SimdLevel::Sse42,
        }
    }
}

/// The SSE extensions a guest has, cumulative: each level includes those below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// SSE and SSE2 (every x86-64 processor).
    Sse2,
    /// SSE3 (including FISTTP).
    Sse3,
    /// Supplemental SSE3.
    Ssse3,
    /// SSE4.1.
    Sse41,
    /// SSE4.2 (including CRC32; POPCNT has its own CPUID bit).
    Sse42,
}

/// CPUID leaf 1 ECX: SSE3 (bit 0), SSSE3 (9), SSE4.1 (19), SSE4.2 (20).
const LEAF1_ECX_BITS: [(SimdLevel, u32); 4] = [
    (SimdLevel::Sse3, 1 << 0),
    (SimdLevel::Ssse3, 1 << 9),
    (SimdLevel::Sse41, 1 << 19),
    (SimdLevel::Sse42, 1 << 20),
];

impl SimdLevel {
    /// The level `ins` needs: that of its SSE3..SSE4.2 extension, else [`SimdLevel::Sse2`].
    pub fn required_by(ins: &Instruction) -> SimdLevel {
        ins.cpuid_features()
            .iter()
            .map(|f| match f {
                CpuidFeature::SSE3 => SimdLevel::Sse3,
                CpuidFeature::SSSE3 => SimdLevel::Ssse3,
                CpuidFeature::SSE4_1 => SimdLevel::Sse41,
                CpuidFeature::SSE4_2 => SimdLevel::Sse42,
                _ => SimdLevel::Sse2,
            })
            .max()
            .unwrap_or(SimdLevel::Sse2)
    }

    /// The CPUID leaf 1 ECX bits of the extensions up to this level.
    pub fn leaf1_ecx(self) -> u32 {
        LEAF1_ECX_BITS
            .iter()
            .filter(|&&(level, _)| level <= self)
            .fold(0, |acc, &(_, bit)| acc | bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode()
    }

    #[test]
    fn levels_follow_the_host_and_are_cumulative() {
        let all = HostCpu {
            sse3: true,
            sse41: true,
        };
        assert_eq!(all.simd_level(), SimdLevel::Sse42);
        let no41 = all.masked("sse4.1").unwrap();
        assert_eq!(no41.simd_level(), SimdLevel::Ssse3);
        let no3 = all.masked(" sse3 ,").unwrap();
        assert_eq!(no3.simd_level(), SimdLevel::Sse2);
        assert_eq!(
            all.masked("sse3,sse4.1").unwrap().simd_level(),
            SimdLevel::Sse2
        );
        assert_eq!(all.masked("").unwrap(), all);
        let e = all.masked("sse3,avx").unwrap_err();
        assert!(e.contains("`avx`") && e.contains("sse4.1"), "{e}");
    }

    #[test]
    fn cpuid_bits_match_the_level() {
        assert_eq!(SimdLevel::Sse2.leaf1_ecx(), 0);
        assert_eq!(SimdLevel::Sse3.leaf1_ecx(), 1);
        assert_eq!(SimdLevel::Ssse3.leaf1_ecx(), 1 | 1 << 9);
        assert_eq!(SimdLevel::Sse41.leaf1_ecx(), 1 | 1 << 9 | 1 << 19);
        assert_eq!(SimdLevel::Sse42.leaf1_ecx(), 1 | 1 << 9 | 1 << 19 | 1 << 20);
    }

    #[test]
    fn instructions_need_their_extension_level() {
        let cases: [(&[u8], SimdLevel); 11] = [
            (&[0x0f, 0x58, 0xc1], SimdLevel::Sse2),        // addps
            (&[0xf3, 0x0f, 0xb8, 0xc1], SimdLevel::Sse2),  // popcnt
            (&[0x48, 0x01, 0xc8], SimdLevel::Sse2),        // add
            (&[0xf2, 0x0f, 0xd0, 0xc1], SimdLevel::Sse3),  // addsubps
            (&[0xdf, 0x08], SimdLevel::Sse3),              // fisttp m16
            (&[0xf2, 0x0f, 0x12, 0xc1], SimdLevel::Sse3),  // movddup
            (&[0x0f, 0x38, 0x00, 0xc1], SimdLevel::Ssse3), // pshufb mm
            (&[0x66, 0x0f, 0x3a, 0x08, 0xc1, 0x00], SimdLevel::Sse41), // roundps
            (&[0x66, 0x0f, 0x38, 0x40, 0xc1], SimdLevel::Sse41), // pmulld
            (&[0x66, 0x0f, 0x38, 0x37, 0xc1], SimdLevel::Sse42), // pcmpgtq
            (&[0xf2, 0x0f, 0x38, 0xf1, 0xc1], SimdLevel::Sse42), // crc32
        ];
        for (bytes, level) in cases {
            let ins = decode(bytes);
            assert_eq!(SimdLevel::required_by(&ins), level, "{ins}");
        }
    }
}
