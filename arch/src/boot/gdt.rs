//! The boot GDT and the segment registers that match it.
//!
//! Every boot protocol Ember starts a guest with (Linux 64-bit, PVH, Multiboot) uses the same
//! table; the selectors follow Linux's boot protocol (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18).

use kvm_bindings::kvm_segment;

/// Flat 32-bit code segment (PVH and Multiboot entry).
pub const CODE32_SELECTOR: u16 = 0x08;
/// Flat 64-bit code segment (Linux 64-bit entry).
pub const CODE64_SELECTOR: u16 = 0x10;
/// Flat read/write data segment.
pub const DATA_SELECTOR: u16 = 0x18;
/// 64-bit TSS (base 0); only there so TR holds something valid.
pub const TSS_SELECTOR: u16 = 0x20;

/// Access byte and flags of one descriptor, packed as in a GDT entry's bits 40..56.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// Bits 0..8: type (4 bits), S, DPL (2 bits), P.
    access: u8,
    /// Bits 12..16: AVL, L, D/B, G.
    flags: u8,
}

const CODE32: Kind = Kind {
    access: 0x9b,
    flags: 0xc,
};
const CODE64: Kind = Kind {
    access: 0x9b,
    flags: 0xa,
};
const DATA: Kind = Kind {
    access: 0x93,
    flags: 0xc,
};
const TSS64_BUSY: Kind = Kind {
    access: 0x8b,
    flags: 0x0,
};

/// The boot GDT, in selector order.
const TABLE: [(u16, Kind, u32); 4] = [
    (CODE32_SELECTOR, CODE32, 0xfffff),
    (CODE64_SELECTOR, CODE64, 0xfffff),
    (DATA_SELECTOR, DATA, 0xfffff),
    (TSS_SELECTOR, TSS64_BUSY, 0x67),
];

fn encode(kind: Kind, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (u64::from(kind.access) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (u64::from(kind.flags) << 52)
        | (((base >> 24) & 0xff) << 56)
}

fn segment(selector: u16, kind: Kind, limit: u32) -> kvm_segment {
    let g = (kind.flags >> 3) & 1;
    kvm_segment {
        base: 0,
        // KVM wants the limit in bytes: scale page-granular limits.
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: kind.access & 0xf,
        present: (kind.access >> 7) & 1,
        dpl: (kind.access >> 5) & 3,
        db: (kind.flags >> 2) & 1,
        s: (kind.access >> 4) & 1,
        l: (kind.flags >> 1) & 1,
        g,
        avl: kind.flags & 1,
        unusable: 0,
        padding: 0,
    }
}

/// The GDT as 8-byte entries, starting with the null descriptor.
pub fn table() -> [u64; 5] {
    let mut gdt = [0u64; 5];
    for (sel, kind, limit) in TABLE {
        gdt[usize::from(sel / 8)] = encode(kind, 0, limit);
    }
    gdt
}

/// Segment register contents for a descriptor of the boot GDT.
///
/// # Panics
/// If `selector` is not one of this module's selector constants.
pub fn segment_for(selector: u16) -> kvm_segment {
    let (sel, kind, limit) = TABLE[usize::from(selector / 8) - 1];
    segment(sel, kind, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_classic_flat_descriptors() {
        let gdt = table();
        assert_eq!(gdt[0], 0);
        assert_eq!(gdt[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt[2], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[3], 0x00cf_9300_0000_ffff);
        assert_eq!(gdt[4], 0x0000_8b00_0000_0067);
    }

    #[test]
    fn segments_match_their_descriptors() {
        let cs = segment_for(CODE64_SELECTOR);
        assert_eq!(
            (cs.selector, cs.type_, cs.l, cs.db, cs.g),
            (0x10, 0xb, 1, 0, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let cs32 = segment_for(CODE32_SELECTOR);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let tr = segment_for(TSS_SELECTOR);
        assert_eq!((tr.type_, tr.s, tr.limit, tr.g), (0xb, 0, 0x67, 0));
    }
}
