//! The guest machine every differential case runs in: its memory map, the infrastructure in
//! memory (GDT, TSS, IDT, exception stubs, 4-level page tables), the prologue before and the
//! terminator after each generated sequence, and the control registers.
//!
//! Both backends get the same bytes: [`write_infrastructure`] once per machine, then the
//! per-case image. Everything is identity-mapped with 4 KiB pages. The pages a case may touch
//! ([`CASE_PAGES`]) start each case with their accessed/dirty bits clear; the prologue (at
//! CPL 0) clears them again *from inside the guest* and reloads CR3, so that a shadow-paging
//! KVM (this host's nested `kvm_pvm`) notices, then `iretq`s into the sequence, which runs at
//! CPL 3 with IOPL 3 (so the terminating `out` is allowed). Exceptions go through interrupt
//! gates to CPL-0 stubs on the TSS's RSP0 stack, the kernel stack page.
//!
//! Why CPL 3: on `kvm_pvm`, supervisor code after a trap is run by KVM's instruction emulator
//! (which, for example, executes LZCNT as BSR and cannot run POPCNT or any SSE/x87
//! instruction), while user code runs natively; on hardware KVM both run natively. The
//! instructions generated behave the same at CPL 3 and CPL 0.

use kvm_bindings::kvm_sregs;

use arch::boot::{gdt, CpuMode, EntryState};

/// Guest RAM size (one slot at guest physical 0).
pub const RAM_SIZE: u64 = 0x2_0000;
/// The GDT: the boot GDT (`arch::boot::gdt`, where [`EntryState::apply_sregs`] points GDTR)
/// followed by user data and code segments.
pub const GDT_ADDR: u64 = arch::layout::BOOT_GDT_ADDR;
/// The 64-bit TSS (base 0, as `arch::boot::gdt` describes it); RSP0 is at offset 4.
pub const TSS_ADDR: u64 = 0;
/// User data segment selector (RPL 3).
pub const USER_DS: u16 = 0x33;
/// User 64-bit code segment selector (RPL 3).
pub const USER_CS: u16 = 0x3b;
/// RFLAGS.IOPL = 3: the sequence may `out` at CPL 3.
pub const IOPL3: u64 = 3 << 12;
/// Where the prologue parks RAX while it reloads CR3.
pub const SCRATCH: u64 = 0x800;
/// The IDT: one interrupt gate per exception vector.
pub const IDT_ADDR: u64 = 0x1000;
/// Exception stubs, [`STUB_SIZE`] bytes per vector.
pub const STUBS: u64 = 0x2000;
/// Bytes per exception stub.
pub const STUB_SIZE: u64 = 8;
/// Exception vectors with a gate.
pub const VECTORS: u8 = 32;
/// PML4, PDPT, PD and the one page table, in consecutive pages.
pub const PML4: u64 = 0x3000;
/// The page table mapping the first 2 MiB.
pub const PT: u64 = 0x6000;
/// Start of the code pages (prologue, sequence, terminator).
pub const CODE_BASE: u64 = 0x8000;
/// End of the code pages.
pub const CODE_END: u64 = 0xc000;
/// Start of the data area every memory operand lands in.
pub const DATA_BASE: u64 = 0x1_0000;
/// End of the data area (the page after it is not present).
pub const DATA_END: u64 = 0x1_4000;
/// The x87 constant page (values the generator knows; see `gen/x87.rs`).
pub const CONST_BASE: u64 = 0x1_5000;
/// End of the constant page.
pub const CONST_END: u64 = 0x1_6000;
/// The kernel stack page (RSP0): the `iretq` frame, then exception frames.
pub const KSTACK_BASE: u64 = 0x1_7000;
/// Top of the kernel stack.
pub const KSTACK_END: u64 = 0x1_8000;
/// Where the prologue's `iretq` frame starts (RSP at the prologue).
pub const IRET_FRAME: u64 = KSTACK_END - 40;
/// Start of the stack pages.
pub const STACK_BASE: u64 = 0x1_8000;
/// End of the stack pages.
pub const STACK_END: u64 = 0x1_a000;
/// The port the terminator writes AL to.
pub const END_PORT: u16 = 0xe0;
/// Exception vector `v`'s stub writes AL to port `EXC_PORT + v`.
pub const EXC_PORT: u16 = 0xa0;

/// Pages whose accessed/dirty bits each case starts clear and the comparison checks.
pub const CASE_PAGES: [u64; 12] = [
    0x8, 0x9, 0xa, 0xb, 0x10, 0x11, 0x12, 0x13, 0x15, 0x17, 0x18, 0x19,
];
/// Accessed bits (bit n: `CASE_PAGES[n]`) that are not compared: the code pages'. The
/// interpreter decodes a whole block before running it, so it may walk to a code page the
/// hardware's fetch never reached when an earlier instruction faults; processors may set
/// accessed bits speculatively, so neither side is wrong.
pub const UNCOMPARED_ACCESSED: u16 = 0b1111;

/// Present pages that are not case pages (A/D preset).
const INFRA_PAGES: [u64; 7] = [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6];

/// Page-table entry bits.
const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
/// Accessed.
pub const PTE_A: u64 = 1 << 5;
/// Dirty.
pub const PTE_D: u64 = 1 << 6;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// HLT, the filler of unused code bytes (a run-away case halts).
pub const FILL: u8 = 0xf4;

/// Bytes of the prologue that runs before every sequence (see [`prologue`]).
pub const PROLOGUE_LEN: u64 = CASE_PAGES.len() as u64 * 9 + 8 + 3 + 3 + 8 + 2;
/// Bytes of the terminator: `out END_PORT, al; hlt`.
pub const TERMINATOR_LEN: u64 = 3;

/// Where the code of a case goes: the prologue ends at `code_addr`, the sequence follows.
pub fn code_window() -> (u64, u64) {
    (CODE_BASE + PROLOGUE_LEN, CODE_END - TERMINATOR_LEN)
}

/// The page table with every case page's A/D bits clear.
pub fn page_table() -> Vec<u8> {
    let mut pt = vec![0u8; 4096];
    for (pages, bits) in [(&INFRA_PAGES[..], PTE_A | PTE_D), (&CASE_PAGES[..], US)] {
        for &page in pages {
            let pte = (page << 12) | P | RW | bits;
            let at = page as usize * 8;
            pt[at..at + 8].copy_from_slice(&pte.to_le_bytes());
        }
    }
    pt
}

/// Guest memory as both backends see it.
pub trait Memory {
    /// Writes `bytes` at guest physical `addr` (inside RAM by construction).
    fn write(&self, addr: u64, bytes: &[u8]);
    /// Reads `buf.len()` bytes at guest physical `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]);
}

impl Memory for arch::GuestMemory {
    fn write(&self, addr: u64, bytes: &[u8]) {
        use vm_memory::{Bytes, GuestAddress};
        // The layout keeps every region inside RAM; a failure is a harness bug.
        if let Err(e) = self.write_slice(bytes, GuestAddress(addr)) {
            panic!("difftest layout writes outside RAM at {addr:#x}: {e}");
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) {
        use vm_memory::{Bytes, GuestAddress};
        if let Err(e) = self.read_slice(buf, GuestAddress(addr)) {
            panic!("difftest layout reads outside RAM at {addr:#x}: {e}");
        }
    }
}

/// The GDT: the boot table, the upper half of its TSS descriptor (0), user data, user code.
fn gdt_table() -> Vec<u64> {
    let mut t = gdt::table().to_vec();
    t.push(0);
    t.push(0x00cf_f300_0000_ffff);
    t.push(0x00af_fb00_0000_ffff);
    t
}

/// Writes what never changes between cases: GDT, TSS, IDT, exception stubs, the upper paging
/// levels.
pub fn write_infrastructure(mem: &dyn Memory) {
    mem.write(0, &vec![0u8; RAM_SIZE as usize]);
    let gdt: Vec<u8> = gdt_table().iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write(GDT_ADDR, &gdt);
    mem.write(TSS_ADDR + 4, &KSTACK_END.to_le_bytes());
    let mut idt = Vec::with_capacity(usize::from(VECTORS) * 16);
    let mut stubs = vec![FILL; 0x1000];
    for v in 0..VECTORS {
        let stub = STUBS + u64::from(v) * STUB_SIZE;
        let lo = u64::from(gdt::CODE64_SELECTOR) << 16 | (stub & 0xffff);
        let gate = lo | (0x8e << 40) | ((stub >> 16) & 0xffff) << 48;
        idt.extend_from_slice(&gate.to_le_bytes());
        idt.extend_from_slice(&(stub >> 32).to_le_bytes());
        let at = (u64::from(v) * STUB_SIZE) as usize;
        stubs[at] = 0xe6; // out imm8, al
        stubs[at + 1] = (EXC_PORT + u16::from(v)) as u8;
    }
    mem.write(IDT_ADDR, &idt);
    mem.write(STUBS, &stubs);
    for level in 0..3 {
        let table = PML4 + level * 0x1000;
        let entry = (table + 0x1000) | P | RW | US | PTE_A;
        mem.write(table, &entry.to_le_bytes());
    }
    mem.write(PT, &page_table());
}

/// The prologue: clear the case pages' A/D bits from inside the guest, reload CR3 (keeping
/// RAX), then `iretq` through the frame at [`IRET_FRAME`] into the sequence at CPL 3.
pub fn prologue() -> Vec<u8> {
    let mut out = Vec::with_capacity(PROLOGUE_LEN as usize);
    for page in CASE_PAGES {
        // and qword ptr [PT + 8 * page], ~(A | D)
        out.extend_from_slice(&[0x48, 0x83, 0x24, 0x25]);
        out.extend_from_slice(&((PT + page * 8) as u32).to_le_bytes());
        out.push(!(PTE_A | PTE_D) as u8);
    }
    // mov [SCRATCH], rax; mov rax, cr3; mov cr3, rax; mov rax, [SCRATCH]; iretq
    out.extend_from_slice(&[0x48, 0x89, 0x04, 0x25]);
    out.extend_from_slice(&(SCRATCH as u32).to_le_bytes());
    out.extend_from_slice(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]);
    out.extend_from_slice(&[0x48, 0x8b, 0x04, 0x25]);
    out.extend_from_slice(&(SCRATCH as u32).to_le_bytes());
    out.extend_from_slice(&[0x48, 0xcf]);
    out
}

/// The `iretq` frame entering the sequence at `rip` with `rflags` and stack pointer `rsp`.
pub fn iret_frame(rip: u64, rflags: u64, rsp: u64) -> [u8; 40] {
    let mut f = [0u8; 40];
    let words = [
        rip,
        u64::from(USER_CS),
        rflags | IOPL3,
        rsp,
        u64::from(USER_DS),
    ];
    for (chunk, w) in f.chunks_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    f
}

/// The terminator after the sequence.
pub fn terminator() -> [u8; 3] {
    [0xe6, END_PORT as u8, FILL]
}

/// The address of the `out` instruction that writes to `port`, if it is one of ours.
pub fn out_address(port: u16, code_end: u64) -> Option<u64> {
    if port == END_PORT {
        Some(code_end)
    } else if (EXC_PORT..EXC_PORT + u16::from(VECTORS)).contains(&port) {
        Some(STUBS + u64::from(port - EXC_PORT) * STUB_SIZE)
    } else {
        None
    }
}

/// Segment, descriptor-table and control registers for 64-bit mode at CPL 0 on this layout.
pub fn sregs(mut s: kvm_sregs) -> kvm_sregs {
    let entry = EntryState {
        mode: CpuMode::Long64,
        rip: 0,
        rsp: 0,
        rax: 0,
        rbx: 0,
        rsi: 0,
    };
    entry.apply_sregs(&mut s);
    s.gdt.limit = (gdt_table().len() * 8 - 1) as u16;
    s.idt.base = IDT_ADDR;
    s.idt.limit = u16::from(VECTORS) * 16 - 1;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = PML4;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    s.cr2 = 0;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologue_length_matches_its_constant() {
        assert_eq!(prologue().len() as u64, PROLOGUE_LEN);
        let (lo, hi) = code_window();
        assert!(lo < hi && hi + TERMINATOR_LEN == CODE_END);
    }

    #[test]
    fn case_pages_start_clear_and_infrastructure_is_preset() {
        for (n, page) in CASE_PAGES.iter().enumerate() {
            let code = (CODE_BASE >> 12..CODE_END >> 12).contains(page);
            assert_eq!(UNCOMPARED_ACCESSED & (1 << n) != 0, code, "page {page:#x}");
        }
        let pt = page_table();
        let pte = |page: u64| {
            let at = page as usize * 8;
            u64::from_le_bytes(pt[at..at + 8].try_into().unwrap())
        };
        for page in CASE_PAGES {
            assert_eq!(pte(page), (page << 12) | P | RW | US);
        }
        assert_eq!(pte(3) & (PTE_A | PTE_D), PTE_A | PTE_D);
        // Guard pages around the data area are not present.
        assert_eq!(pte(0xf) & P, 0);
        assert_eq!(pte(0x14) & P, 0);
        assert_eq!(pte(0x7) & P, 0);
        // Infrastructure is for the supervisor only.
        assert_eq!(pte(0x1) & US, 0);
    }

    #[test]
    fn the_iret_frame_enters_user_mode_with_iopl_3() {
        let f = iret_frame(0x9000, 0x2, 0x19000);
        let word = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 0x9000);
        assert_eq!(word(1) & 3, 3);
        assert_eq!(word(2), 0x3002);
        assert_eq!(word(3), 0x19000);
        assert_eq!(
            gdt_table()[usize::from(USER_CS) / 8] >> 40 & 0x60,
            0x60,
            "DPL 3"
        );
        assert_eq!(
            gdt_table()[usize::from(USER_DS) / 8] >> 40 & 0x60,
            0x60,
            "DPL 3"
        );
    }

    #[test]
    fn out_addresses_name_the_terminator_and_the_stubs() {
        assert_eq!(out_address(END_PORT, 0x9123), Some(0x9123));
        assert_eq!(out_address(EXC_PORT + 13, 0), Some(STUBS + 13 * STUB_SIZE));
        assert_eq!(out_address(0x3f8, 0), None);
    }

    #[test]
    fn sregs_describe_long_mode_with_sse_enabled() {
        let s = sregs(kvm_sregs::default());
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cr3, PML4);
        assert_ne!(s.cr4 & CR4_OSFXSR, 0);
        assert_ne!(s.efer & (1 << 10), 0);
    }
}
