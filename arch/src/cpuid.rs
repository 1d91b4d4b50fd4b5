//! Per-vCPU CPUID: APIC IDs and a topology that matches `vcpu_count` and `smt`.
//!
//! The hypervisor's supported CPUID describes the host; each vCPU must instead see its own
//! APIC ID and a package of `vcpu_count` logical processors, in both the Intel leaves (1, 4,
//! 0xB, 0x1F) and the AMD ones (0x8000_0008, 0x8000_001E), and the hypervisor bit.

use kvm_bindings::kvm_cpuid_entry2;

/// How the vCPUs are arranged: one package of `vcpu_count` logical processors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Logical processors in the package.
    pub vcpu_count: u8,
    /// Logical processors per core: 2 with SMT, else 1.
    pub threads_per_core: u8,
}

impl Topology {
    /// The topology for a machine config's `vcpu_count` and `smt`.
    pub fn new(vcpu_count: u8, smt: bool) -> Self {
        let threads_per_core = if smt && vcpu_count > 1 { 2 } else { 1 };
        Topology {
            vcpu_count,
            threads_per_core,
        }
    }

    /// APIC ID bits used by the thread within a core.
    fn smt_shift(&self) -> u32 {
        u32::from(self.threads_per_core)
            .next_power_of_two()
            .trailing_zeros()
    }

    /// APIC ID bits used by everything within the package.
    fn package_shift(&self) -> u32 {
        u32::from(self.vcpu_count)
            .next_power_of_two()
            .trailing_zeros()
    }

    fn cores(&self) -> u32 {
        u32::from(self.vcpu_count).div_ceil(u32::from(self.threads_per_core))
    }
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// Topology level types in leaf 0xB/0x1F ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Rewrites `entries` (the hypervisor's supported CPUID) for the vCPU with `apic_id`.
pub fn apply_topology(entries: &mut [kvm_cpuid_entry2], apic_id: u8, topo: &Topology) {
    let apic_id32 = u32::from(apic_id);
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0xffff) | (apic_id32 << 24) | (u32::from(topo.vcpu_count) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if topo.vcpu_count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                let cache_level = (e.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 {
                    u32::from(topo.vcpu_count)
                } else {
                    u32::from(topo.threads_per_core)
                };
                e.eax = (e.eax & 0x3fff)
                    | ((sharing - 1) & 0xfff) << 14
                    | ((topo.cores() - 1) & 0x3f) << 26;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = apic_id32;
                (e.eax, e.ebx, e.ecx) = match e.index {
                    0 => (
                        topo.smt_shift(),
                        u32::from(topo.threads_per_core),
                        (LEVEL_SMT << 8),
                    ),
                    1 => (
                        topo.package_shift(),
                        u32::from(topo.vcpu_count),
                        (LEVEL_CORE << 8) | 1,
                    ),
                    index => (0, 0, index),
                };
            }
            LEAF_AMD_SIZES => {
                e.ecx = (e.ecx & !0xf0ff)
                    | (topo.package_shift() << 12)
                    | (u32::from(topo.vcpu_count) - 1);
            }
            LEAF_AMD_EXT_APIC => {
                e.eax = apic_id32;
                e.ebx =
                    (u32::from(topo.threads_per_core - 1) << 8) | (apic_id32 >> topo.smt_shift());
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            // Host-like values that must be replaced (or kept where noted).
            eax: 0x0000_0121,
            ebx: 0x5508_0800,
            ecx: 0x1234_5678,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn four_vcpus_with_smt_form_two_cores_of_two_threads() {
        let topo = Topology::new(4, true);
        let mut entries = vec![
            entry(1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(4, 0),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
        ];
        apply_topology(&mut entries, 3, &topo);
        let leaf1 = entries[0];
        assert_eq!(leaf1.ebx >> 24, 3, "APIC ID");
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        let (smt, core, end) = (entries[1], entries[2], entries[3]);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (1, 2, 0x100, 3));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 3));
        assert_eq!((end.eax, end.ebx, end.ecx & 0xff00), (0, 0, 0));
        let l1 = entries[4];
        assert_eq!((l1.eax >> 26) + 1, 2, "cores per package");
        assert_eq!(
            ((l1.eax >> 14) & 0xfff) + 1,
            2,
            "L1 shared by the SMT siblings"
        );
        assert_eq!(entries[5].ecx & 0xff, 3, "AMD NC = count - 1");
        assert_eq!(entries[6].eax, 3);
        assert_eq!(entries[6].ebx, 0x101, "thread pair, core 1");
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut entries = vec![entry(1, 0)];
        apply_topology(&mut entries, 0, &Topology::new(1, false));
        assert_eq!(entries[0].edx & EDX_HTT, 0);
        assert_eq!(entries[0].ebx >> 16, 1);
    }
}
