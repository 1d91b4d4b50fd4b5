//! The software CPU's own CPUID: an x86-64-v2 processor with exactly the features the
//! interpreter implements on this host (the SSE level depends on the host, see
//! [`super::hostcpu`]), the TSC frequency in leaves 0x15/0x16, and per-vCPU topology.

use kvm_bindings::kvm_cpuid_entry2;

use crate::cpuid::{apply_topology, Topology};

use super::hostcpu::{HostCpu, SimdLevel};
use super::time::TSC_KHZ;

/// Leaf 1 EDX: FPU, DE, PSE, TSC, MSR, PAE, CX8, APIC, SEP, MTRR, PGE, CMOV, PAT, PSE36,
/// CLFSH, MMX, FXSR, SSE, SSE2.
const LEAF1_EDX: u32 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 9)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 15)
    | (1 << 16)
    | (1 << 17)
    | (1 << 19)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26);
/// Leaf 1 ECX apart from the SSE3..SSE4.2 bits ([`SimdLevel::leaf1_ecx`]): CX16, MOVBE,
/// POPCNT, TSC-deadline, RDRAND, hypervisor.
const LEAF1_ECX: u32 = (1 << 13) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 30) | (1 << 31);
/// Leaf 7 EBX: SMEP, ERMS (REP MOVSB/STOSB are fast here: they move whole pages at once),
/// SMAP.
const LEAF7_EBX: u32 = (1 << 7) | (1 << 9) | (1 << 20);
/// Leaf 7 ECX: UMIP, PKU, PKS (protection keys for user and supervisor pages).
const LEAF7_ECX: u32 = (1 << 2) | (1 << 3) | (1 << 31);
/// Leaf 7 ECX: OSPKE, set while CR4.PKE is.
pub const LEAF7_ECX_OSPKE: u32 = 1 << 4;
/// Leaf 0x8000_0001 ECX: LAHF/SAHF in 64-bit mode, LZCNT (ABM), PREFETCHW.
const EXT1_ECX: u32 = (1 << 0) | (1 << 5) | (1 << 8);
/// Leaf 0x8000_0001 EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, long mode.
const EXT1_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);

fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: 0,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        padding: [0; 3],
    }
}

fn ascii(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    [w(0), w(4), w(8)]
}

fn brand(s: &str, part: usize) -> [u32; 4] {
    let mut bytes = [0u8; 48];
    for (b, c) in bytes.iter_mut().zip(s.bytes()) {
        *b = c;
    }
    let w = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let o = part * 16;
    [w(o), w(o + 4), w(o + 8), w(o + 12)]
}

/// The CPUID table of one vCPU.
#[derive(Debug, Clone)]
pub struct CpuidTable {
    entries: Vec<kvm_cpuid_entry2>,
    simd: SimdLevel,
}

impl CpuidTable {
    /// The table for vCPU `apic_id` of a machine with `topology`, with the SSE level this
    /// host supports ([`HostCpu::effective`]).
    pub fn new(apic_id: u8, topology: &Topology) -> Self {
        Self::with_simd(apic_id, topology, HostCpu::effective().simd_level())
    }

    /// The table for vCPU `apic_id` of a machine with `topology` offering SSE level `simd`.
    pub fn with_simd(apic_id: u8, topology: &Topology, simd: SimdLevel) -> Self {
        let [v0, v1, v2] = ascii(b"GenuineIntel");
        let [h0, h1, h2] = ascii(b"EmberEmberEm");
        let mhz = (TSC_KHZ / 1000) as u32;
        let name = "Ember software x86-64 CPU";
        // Family 6, model 0x3a (no model-specific quirks Linux acts on), stepping 9.
        let signature = (6 << 8) | (0xa << 4) | (0x3 << 16) | 9;
        let mut entries = vec![
            entry(0, 0, [0x16, v0, v2, v1]),
            entry(
                1,
                0,
                [
                    signature,
                    0x0008_0800,
                    LEAF1_ECX | simd.leaf1_ecx(),
                    LEAF1_EDX,
                ],
            ),
            // Cache parameters: L1D 32 KiB, L1I 32 KiB, L2 256 KiB, L3 8 MiB (line 64).
            entry(4, 0, [0x121, 0x01c0_003f, 0x3f, 0]),
            entry(4, 1, [0x122, 0x01c0_003f, 0x3f, 0]),
            entry(4, 2, [0x143, 0x01c0_003f, 0x1ff, 0]),
            entry(4, 3, [0x163, 0x03c0_003f, 0x1fff, 6]),
            entry(4, 4, [0, 0, 0, 0]),
            entry(7, 0, [0, LEAF7_EBX, LEAF7_ECX, 0]),
            entry(0xb, 0, [0, 1, 0x100, 0]),
            entry(0xb, 1, [0, 1, 0x201, 0]),
            entry(0xb, 2, [0, 0, 2, 0]),
            // TSC = crystal * EBX / EAX; the crystal runs at the TSC frequency.
            entry(0x15, 0, [1, 1, (TSC_KHZ * 1000) as u32, 0]),
            entry(0x16, 0, [mhz, mhz, mhz, 0]),
            entry(0x4000_0000, 0, [0x4000_0000, h0, h1, h2]),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, EXT1_ECX, EXT1_EDX]),
            entry(0x8000_0002, 0, brand(name, 0)),
            entry(0x8000_0003, 0, brand(name, 1)),
            entry(0x8000_0004, 0, brand(name, 2)),
            // Invariant TSC.
            entry(0x8000_0007, 0, [0, 0, 0, 1 << 8]),
            // 40 physical and 48 linear address bits.
            entry(0x8000_0008, 0, [0x3028, 0, 0, 0]),
        ];
        apply_topology(&mut entries, apic_id, topology);
        CpuidTable { entries, simd }
    }

    /// The SSE level the table advertises (instructions above it raise #UD).
    pub fn simd(&self) -> SimdLevel {
        self.simd
    }

    /// EAX, EBX, ECX, EDX for `leaf`/`subleaf`; zeros for leaves that do not exist.
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let indexed = matches!(leaf, 4 | 7 | 0xb);
        self.entries
            .iter()
            .find(|e| e.function == leaf && (!indexed || e.index == subleaf))
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .unwrap_or([0; 4])
    }

    /// The whole table, in the hypervisor interface's format.
    pub fn entries(&self) -> &[kvm_cpuid_entry2] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_features_and_tsc_frequency() {
        let t = CpuidTable::with_simd(0, &Topology::new(1, false), SimdLevel::Sse42);
        let [max, b, c, d] = t.lookup(0, 0);
        assert!(max >= 0x16);
        let mut vendor = Vec::new();
        for r in [b, d, c] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(vendor, b"GenuineIntel");
        let [_, _, ecx, edx] = t.lookup(1, 0);
        assert_ne!(ecx & (1 << 20), 0, "SSE4.2");
        assert_ne!(ecx & (1 << 13), 0, "CMPXCHG16B");
        assert_eq!(ecx & (1 << 26), 0, "no XSAVE");
        assert_eq!(ecx & (1 << 28), 0, "no AVX");
        assert_ne!(edx & (1 << 26), 0, "SSE2");
        let [a, b, crystal, _] = t.lookup(0x15, 0);
        assert_eq!(
            u64::from(crystal) * u64::from(b) / u64::from(a),
            TSC_KHZ * 1000
        );
        assert_eq!(t.lookup(0x1234, 0), [0; 4]);
    }

    #[test]
    fn a_host_without_sse3_or_sse41_hides_them_and_what_implies_them() {
        let all = HostCpu {
            sse3: true,
            sse41: true,
        };
        let leaf1 = |host: HostCpu| {
            let t = CpuidTable::with_simd(0, &Topology::new(1, false), host.simd_level());
            assert_eq!(t.simd(), host.simd_level());
            t.lookup(1, 0)[2]
        };
        let (sse3, ssse3, sse41, sse42, popcnt) = (1, 1 << 9, 1 << 19, 1 << 20, 1 << 23);
        let ecx = leaf1(all);
        assert_eq!(
            ecx & (sse3 | ssse3 | sse41 | sse42 | popcnt),
            sse3 | ssse3 | sse41 | sse42 | popcnt
        );
        let ecx = leaf1(all.masked("sse4.1").unwrap());
        assert_eq!(ecx & (sse3 | ssse3 | sse41 | sse42), sse3 | ssse3);
        let ecx = leaf1(all.masked("sse3").unwrap());
        assert_eq!(ecx & (sse3 | ssse3 | sse41 | sse42), 0);
        assert_ne!(ecx & popcnt, 0, "POPCNT is software");
        assert_ne!(ecx & (1 << 13), 0, "CX16 is software");
    }

    #[test]
    fn leaf_7_offers_the_protections_the_mmu_enforces() {
        let t = CpuidTable::new(0, &Topology::new(1, false));
        let [_, ebx, ecx, _] = t.lookup(7, 0);
        assert_ne!(ebx & (1 << 7), 0, "SMEP");
        assert_ne!(ebx & (1 << 20), 0, "SMAP");
        assert_ne!(ecx & (1 << 2), 0, "UMIP");
        assert_ne!(ecx & (1 << 3), 0, "PKU");
        assert_ne!(ecx & (1 << 31), 0, "PKS");
        assert_eq!(ecx & LEAF7_ECX_OSPKE, 0, "OSPKE follows CR4.PKE");
    }

    #[test]
    fn topology_reaches_every_vcpu() {
        let topo = Topology::new(4, false);
        let t = CpuidTable::new(3, &topo);
        assert_eq!(t.lookup(1, 0)[1] >> 24, 3);
        assert_eq!(t.lookup(0xb, 1)[1], 4);
        assert_eq!(t.lookup(0xb, 0)[3], 3);
    }
}
