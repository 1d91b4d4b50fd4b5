//! Linear-address accesses: the software TLB, page walks (32-bit, PAE and 4-level, with
//! accessed/dirty bits and U/S, R/W, NX, SMEP, SMAP and protection-key checks) and MMIO
//! for addresses that are not RAM.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::fault::{Exception, Result};
use super::flags::AC;
use super::state::{
    CR0_WP, CR4_PAE, CR4_PGE, CR4_PKE, CR4_PKS, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_NXE,
};
use super::Core;

/// What an access does, for permission checks and TLB selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Data read.
    Read = 0,
    /// Data write.
    Write = 1,
    /// Instruction fetch.
    Fetch = 2,
}

const TLB_BITS: u32 = 13;
const TLB_SIZE: usize = 1 << TLB_BITS;
/// A tag no lookup matches: its generation bits are never a current generation.
const INVALID: u64 = GENERATION_MASK;
/// The low bits of a tag, below the page address, hold the TLB generation it was filled in.
const GENERATION_MASK: u64 = 0xfff;

#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct Entry {
    /// Linear page address ORed with the generation it was filled in, or INVALID.
    tag: u64,
    /// The page's host address minus its linear address (wrapping): a byte at linear `lin`
    /// in the page is at host `lin + addend`.
    addend: usize,
    /// RAM page index (code tracking).
    page: u32,
    /// Survives CR3 reloads (global page with CR4.PGE).
    global: bool,
    /// log2 of the guest page size the entry came from (12, 21, 22 or 30).
    size_shift: u8,
}

/// Translated code finds an entry at `index << 5` (see [`TlbLayout`]).
const _: () = assert!(std::mem::size_of::<Entry>() == 32);

const EMPTY: Entry = Entry {
    tag: INVALID,
    addend: 0,
    page: 0,
    global: false,
    size_shift: 12,
};

/// Where translated code finds a TLB entry's fields: the table of access kind `access` for
/// privilege `user` starts at `tables + (access * 2 + user) * TABLE_BYTES`, entry `i` at
/// `i * 32` in it.
pub(crate) struct TlbLayout {
    /// Address of the first table.
    pub tables: usize,
    /// Bytes per table.
    pub table_bytes: usize,
    /// Offset of the linear page tag in an entry.
    pub tag: usize,
    /// Offset of the addend (host address minus linear address).
    pub addend: usize,
    /// Offset of the RAM page index (u32).
    pub page: usize,
    /// log2 of the entries per table.
    pub index_bits: u32,
}

/// Translations by access kind and privilege (supervisor/user).
pub struct Tlb {
    entries: Box<[[Entry; TLB_SIZE]; 6]>,
    /// Incremented on every flush, so caches keyed by linear address can tell they are stale.
    pub epoch: u32,
    /// Incremented on flushes that drop global translations too: caches of what was reached
    /// through global translations only are stale when this moves. Never `u32::MAX`, so
    /// that a stamp made with it is never `u64::MAX` (which translated code takes as none).
    pub global_epoch: u32,
    /// The current generation (1..GENERATION_MASK): entries of older ones do not match, so
    /// a flush is a new generation instead of a pass over every entry.
    pub(crate) generation: u64,
    /// Whether an entry of a page larger than 4 KiB may be present (INVLPG must then look
    /// beyond the entries of its own 4 KiB page).
    large: bool,
    /// Where global entries of the current generation may be (table * TLB_SIZE + index),
    /// for a flush to carry them into the next one; global entries past GLOBAL_SLOTS are
    /// not listed and are forgotten at the next flush (a TLB may always forget).
    globals: Vec<u16>,
    /// The list the next flush fills (kept to allocate nothing per flush).
    spare: Vec<u16>,
}

/// Global entries a flush that keeps them carries at most.
const GLOBAL_SLOTS: usize = 1024;

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: Box::new([[EMPTY; TLB_SIZE]; 6]),
            epoch: 0,
            global_epoch: 0,
            generation: 1,
            large: false,
            globals: Vec::with_capacity(GLOBAL_SLOTS),
            spare: Vec::with_capacity(GLOBAL_SLOTS),
        }
    }
}

#[inline(always)]
fn slot(access: Access, user: bool) -> usize {
    access as usize * 2 + user as usize
}

#[inline(always)]
fn index(lin: u64) -> usize {
    (lin >> 12) as usize & (TLB_SIZE - 1)
}

impl Tlb {
    /// The tag an entry for `lin` has in the current generation.
    #[inline(always)]
    fn tag(&self, lin: u64) -> u64 {
        (lin & !0xfff) | self.generation
    }

    /// Drops every translation, or every non-global one.
    pub fn flush(&mut self, keep_global: bool) {
        if keep_global {
            self.next_generation(|_| true);
        } else {
            self.next_generation(|_| false);
            self.next_global_epoch();
        }
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Starts a new generation, into which only the global entries that `keep` accepts are
    /// carried.
    fn next_generation(&mut self, keep: impl Fn(&Entry) -> bool) {
        let old = self.generation;
        self.large = false;
        self.spare.clear();
        if old + 1 == GENERATION_MASK {
            // Generations would repeat: clear for real, once in 4094 flushes.
            self.entries.iter_mut().for_each(|t| t.fill(EMPTY));
            self.generation = 1;
            self.globals.clear();
            return;
        }
        let new = old + 1;
        self.generation = new;
        for &slot in &self.globals {
            let slot = usize::from(slot);
            let e = &mut self.entries[slot / TLB_SIZE][slot % TLB_SIZE];
            if e.global && e.tag & GENERATION_MASK == old && keep(e) {
                e.tag = (e.tag & !GENERATION_MASK) | new;
                self.large |= e.size_shift > 12;
                self.spare.push(slot as u16);
            }
        }
        std::mem::swap(&mut self.globals, &mut self.spare);
    }

    /// Where its tables are, for translated code (they never move while the TLB lives).
    pub(crate) fn layout(&self) -> TlbLayout {
        TlbLayout {
            tables: self.entries.as_ptr() as usize,
            table_bytes: std::mem::size_of::<[Entry; TLB_SIZE]>(),
            tag: std::mem::offset_of!(Entry, tag),
            addend: std::mem::offset_of!(Entry, addend),
            page: std::mem::offset_of!(Entry, page),
            index_bits: TLB_BITS,
        }
    }

    /// Whether the fetch translation of `lin` for privilege `user` is cached and global.
    pub fn fetch_is_global(&self, lin: u64, user: bool) -> bool {
        let e = &self.entries[slot(Access::Fetch, user)][index(lin)];
        e.tag == self.tag(lin) && e.global
    }

    /// Drops the translations covering linear address `lin` (INVLPG): those of its 4 KiB
    /// page sit at its index; once a larger page may be cached anywhere, the whole
    /// generation goes instead, but for the global entries not covering `lin`.
    pub fn flush_page(&mut self, lin: u64) {
        let covers = |e: &Entry| {
            e.tag != INVALID
                && ((e.tag & !GENERATION_MASK) >> e.size_shift) == (lin >> e.size_shift)
        };
        if self.large {
            self.next_generation(|e| !covers(e));
        } else {
            for table in self.entries.iter_mut() {
                if covers(&table[index(lin)]) {
                    table[index(lin)] = EMPTY;
                }
            }
        }
        self.epoch = self.epoch.wrapping_add(1);
        self.next_global_epoch();
    }

    /// Moves the global epoch on, past `u32::MAX`.
    fn next_global_epoch(&mut self) {
        self.global_epoch = match self.global_epoch.wrapping_add(1) {
            u32::MAX => 0,
            e => e,
        };
    }
}

/// A page-walk result.
#[derive(Debug, Clone, Copy)]
pub struct Translation {
    /// Physical address of the accessed byte.
    pub phys: u64,
    global: bool,
    size_shift: u8,
    /// A user-mode page (U/S set at every level).
    user_page: bool,
}

const PTE_P: u64 = 1;
const PTE_W: u64 = 1 << 1;
const PTE_U: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Physical-address bits above MAXPHYADDR (40, as CPUID 0x8000_0008 says): reserved in
/// every PAE and 4-level paging-structure entry.
const ABOVE_MAXPHYADDR: u64 = 0x000f_ff00_0000_0000;
/// Bit 21 of a 4 MiB page's directory entry (32-bit paging) is reserved.
const PDE32_4M_RESERVED: u64 = 1 << 21;

/// The reserved bits of the PAE or 4-level entry `entry` at the level that translates
/// address bits from `shift` up: PS in a PML4 entry, and the bits between the page offset
/// and bit 13 (PAT) of a 1 GiB or 2 MiB page.
fn reserved_bits(shift: u32, entry: u64) -> u64 {
    let large = entry & PTE_PS != 0;
    ABOVE_MAXPHYADDR
        | match shift {
            39 => PTE_PS,
            30 | 21 if large => ((1 << shift) - 1) & !0x1fff,
            _ => 0,
        }
}

/// Where a piece of a store goes: host address and RAM page, or MMIO physical address.
type Target = std::result::Result<(usize, u32), u64>;

/// Page-fault error code bits.
const PF_P: u32 = 1;
const PF_W: u32 = 1 << 1;
const PF_U: u32 = 1 << 2;
const PF_RSVD: u32 = 1 << 3;
const PF_I: u32 = 1 << 4;
const PF_PK: u32 = 1 << 5;

impl Core {
    fn page_fault(
        &mut self,
        lin: u64,
        access: Access,
        user: bool,
        present: bool,
        rsvd: bool,
    ) -> Exception {
        let mut code = 0;
        if present {
            code |= PF_P;
        }
        if access == Access::Write {
            code |= PF_W;
        }
        if user {
            code |= PF_U;
        }
        if rsvd {
            code |= PF_RSVD | PF_P;
        }
        let nx = self.s.efer & EFER_NXE != 0 && self.s.cr4 & CR4_PAE != 0;
        if access == Access::Fetch && (nx || self.s.cr4 & CR4_SMEP != 0) {
            code |= PF_I;
        }
        self.fault_addr = lin;
        Exception::pf(code)
    }

    /// Translates `lin` for `access` at privilege `user`, setting accessed/dirty bits.
    pub(crate) fn walk(&mut self, lin: u64, access: Access, user: bool) -> Result<Translation> {
        if !self.s.mode.paging {
            return Ok(Translation {
                phys: lin,
                global: false,
                size_shift: 12,
                user_page: false,
            });
        }
        if self.s.cr4 & CR4_PAE == 0 {
            return self.walk32(lin, access, user);
        }
        let nxe = self.s.efer & EFER_NXE != 0;
        // Entries visited, from the top: (physical address of the entry, its value).
        let mut path = [(0u64, 0u64); 4];
        let (mut table, levels, first_shift) = if self.s.mode.long {
            (self.s.cr3 & ADDR_MASK, 4, 39)
        } else {
            // PAE: the PDPT is 32-byte aligned and its entries have no R/W, U/S or NX.
            let pdpte_addr = (self.s.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
            let pdpte = self.ram.read_u64(pdpte_addr).unwrap_or(0);
            if pdpte & PTE_P == 0 {
                return Err(self.page_fault(lin, access, user, false, false));
            }
            path[0] = (pdpte_addr, pdpte | PTE_W | PTE_U);
            (pdpte & ADDR_MASK, 3, 21)
        };
        let start = if self.s.mode.long { 0 } else { 1 };
        let (mut writable, mut usr, mut exec) = (true, true, true);
        let mut shift = first_shift;
        let mut depth = start;
        let leaf = loop {
            let addr = table + ((lin >> shift) & 511) * 8;
            let entry = self.ram.read_u64(addr).unwrap_or(0);
            if entry & PTE_P == 0 {
                return Err(self.page_fault(lin, access, user, false, false));
            }
            if (entry & PTE_NX != 0 && !nxe) || entry & reserved_bits(shift, entry) != 0 {
                return Err(self.page_fault(lin, access, user, true, true));
            }
            path[depth] = (addr, entry);
            writable &= entry & PTE_W != 0;
            usr &= entry & PTE_U != 0;
            exec &= !(nxe && entry & PTE_NX != 0);
            depth += 1;
            let is_leaf = shift == 12 || (entry & PTE_PS != 0 && (shift == 21 || shift == 30));
            if is_leaf {
                break entry;
            }
            table = entry & ADDR_MASK;
            shift -= 9;
        };
        debug_assert!(depth <= levels);
        let key = (leaf >> 59) as u8 & 0xf;
        let key_denied = self.s.mode.long && self.key_denied(access, user, usr, key);
        if key_denied || self.permission_denied(access, user, writable, usr, exec) {
            // The PK bit reports a key violation whether or not the page's rights deny too.
            let code = self.page_fault(lin, access, user, true, false).error();
            let pk = if key_denied { PF_PK } else { 0 };
            return Err(Exception::pf(code.unwrap_or(0) | pk));
        }
        for &(addr, entry) in &path[start..depth] {
            if entry & PTE_A == 0 {
                self.ram.or_u64(addr, PTE_A);
            }
        }
        let (leaf_addr, _) = path[depth - 1];
        if access == Access::Write && leaf & PTE_D == 0 {
            self.ram.or_u64(leaf_addr, PTE_D);
        }
        let page_mask = (1u64 << shift) - 1;
        let base = leaf & ADDR_MASK & !page_mask;
        Ok(Translation {
            phys: base | (lin & page_mask),
            global: leaf & PTE_G != 0 && self.s.cr4 & CR4_PGE != 0,
            size_shift: shift as u8,
            user_page: usr,
        })
    }

    /// 32-bit paging (CR4.PAE clear), with 4 MiB pages when CR4.PSE is set.
    fn walk32(&mut self, lin: u64, access: Access, user: bool) -> Result<Translation> {
        let lin32 = lin & 0xffff_ffff;
        let pde_addr = (self.s.cr3 & 0xffff_f000) + ((lin32 >> 22) & 0x3ff) * 4;
        let pde = u64::from(self.ram.read_u32(pde_addr).unwrap_or(0));
        if pde & PTE_P == 0 {
            return Err(self.page_fault(lin, access, user, false, false));
        }
        if pde & PTE_PS != 0 && self.s.cr4 & CR4_PSE != 0 {
            if pde & PDE32_4M_RESERVED != 0 {
                return Err(self.page_fault(lin, access, user, true, true));
            }
            self.check_permissions(lin, access, user, pde & PTE_W != 0, pde & PTE_U != 0, true)?;
            let mut bits = PTE_A;
            if access == Access::Write {
                bits |= PTE_D;
            }
            if pde & bits != bits {
                self.ram.or_u32(pde_addr, bits as u32);
            }
            // Bits 13..21 of a 4 MiB entry are physical address bits 32..40.
            let base = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32;
            return Ok(Translation {
                phys: base | (lin32 & 0x3f_ffff),
                global: pde & PTE_G != 0 && self.s.cr4 & CR4_PGE != 0,
                size_shift: 22,
                user_page: pde & PTE_U != 0,
            });
        }
        let pte_addr = (pde & 0xffff_f000) + ((lin32 >> 12) & 0x3ff) * 4;
        let pte = u64::from(self.ram.read_u32(pte_addr).unwrap_or(0));
        if pte & PTE_P == 0 {
            return Err(self.page_fault(lin, access, user, false, false));
        }
        let writable = pde & pte & PTE_W != 0;
        let usr = pde & pte & PTE_U != 0;
        self.check_permissions(lin, access, user, writable, usr, true)?;
        if pde & PTE_A == 0 {
            self.ram.or_u32(pde_addr, PTE_A as u32);
        }
        let mut bits = PTE_A;
        if access == Access::Write {
            bits |= PTE_D;
        }
        if pte & bits != bits {
            self.ram.or_u32(pte_addr, bits as u32);
        }
        Ok(Translation {
            phys: (pte & 0xffff_f000) | (lin32 & 0xfff),
            global: pte & PTE_G != 0 && self.s.cr4 & CR4_PGE != 0,
            size_shift: 12,
            user_page: usr,
        })
    }

    fn check_permissions(
        &mut self,
        lin: u64,
        access: Access,
        user: bool,
        writable: bool,
        usr: bool,
        exec: bool,
    ) -> Result<()> {
        if self.permission_denied(access, user, writable, usr, exec) {
            return Err(self.page_fault(lin, access, user, true, false));
        }
        Ok(())
    }

    /// Whether the U/S, R/W, NX, SMEP and SMAP rules forbid `access` at privilege `user` to a
    /// page with the rights `writable`, `usr` (user-mode page) and `exec`.
    fn permission_denied(
        &self,
        access: Access,
        user: bool,
        writable: bool,
        usr: bool,
        exec: bool,
    ) -> bool {
        (user && !usr)
            || (access == Access::Write && !writable && (user || self.s.cr0 & CR0_WP != 0))
            || (access == Access::Fetch && !exec)
            || (!user && usr && self.supervisor_denied(access))
    }

    /// Whether protection key `key` forbids `access` (4-level paging): data accesses to user
    /// pages are limited by PKRU (CR4.PKE), to supervisor pages by IA32_PKRS (CR4.PKS);
    /// access-disable stops them all, write-disable stops user writes and, with CR0.WP,
    /// supervisor ones.
    fn key_denied(&self, access: Access, user: bool, usr: bool, key: u8) -> bool {
        let rights = match (access, usr) {
            (Access::Fetch, _) => return false,
            (_, true) if self.s.cr4 & CR4_PKE != 0 => self.s.pkru,
            (_, false) if self.s.cr4 & CR4_PKS != 0 => self.s.msr.pkrs as u32,
            _ => return false,
        } >> (2 * key);
        let write_disabled = access == Access::Write && (user || self.s.cr0 & CR0_WP != 0);
        rights & 1 != 0 || (rights & 2 != 0 && write_disabled)
    }

    /// Whether SMEP or SMAP forbid a supervisor `access` to a user-mode page: SMEP any
    /// fetch; SMAP data accesses, unless EFLAGS.AC allows them (explicit accesses at CPL < 3;
    /// supervisor accesses at CPL 3 are implicit ones, such as descriptor-table reads).
    fn supervisor_denied(&self, access: Access) -> bool {
        if access == Access::Fetch {
            return self.s.cr4 & CR4_SMEP != 0;
        }
        self.s.cr4 & CR4_SMAP != 0 && (self.s.mode.cpl == 3 || !self.s.flags.has(AC))
    }

    /// Translates and, for RAM, caches the translation. Returns the host address of `lin`
    /// for RAM, or Err(physical address) for MMIO.
    #[inline(never)]
    fn fill(
        &mut self,
        lin: u64,
        access: Access,
        user: bool,
    ) -> Result<std::result::Result<(usize, u32), u64>> {
        let t = self.walk(lin, access, user)?;
        let Some(page) = self.ram.page(t.phys) else {
            return Ok(Err(t.phys));
        };
        let smap_decides = !user && t.user_page && self.s.cr4 & CR4_SMAP != 0;
        if (access == Access::Write && self.code.has_code(page.index)) || smap_decides {
            // Not cached: every store to a page with decoded code goes the slow way, and so
            // does every supervisor access to a user page under SMAP (EFLAGS.AC decides).
            return Ok(Ok((page.host + (t.phys & 0xfff) as usize, page.index)));
        }
        self.tlb.large |= t.size_shift > 12;
        if t.global && self.tlb.globals.len() < GLOBAL_SLOTS {
            let slot = (slot(access, user) * TLB_SIZE + index(lin)) as u16;
            self.tlb.globals.push(slot);
        }
        self.tlb.entries[slot(access, user)][index(lin)] = Entry {
            tag: self.tlb.tag(lin),
            addend: page.host.wrapping_sub((lin & !0xfff) as usize),
            page: page.index,
            global: t.global,
            size_shift: t.size_shift,
        };
        Ok(Ok((page.host + (t.phys & 0xfff) as usize, page.index)))
    }

    /// The host address (or the MMIO physical address) of `lin` for `access`: from the TLB
    /// when it has it, otherwise by a page walk that may fault.
    #[inline(always)]
    fn lookup(&mut self, lin: u64, access: Access, user: bool) -> Result<Target> {
        match self.tlb_hit(lin, access, user) {
            Some(hit) => Ok(Ok(hit)),
            None => self.fill(lin, access, user),
        }
    }

    /// The host address for `lin` if the TLB has it for `access`.
    #[inline(always)]
    fn tlb_hit(&self, lin: u64, access: Access, user: bool) -> Option<(usize, u32)> {
        let e = &self.tlb.entries[slot(access, user)][index(lin)];
        (e.tag == self.tlb.tag(lin)).then(|| (e.addend.wrapping_add(lin as usize), e.page))
    }

    /// Reads `N` (1, 2, 4 or 8) bytes at linear `lin` as an unsigned value.
    #[inline(always)]
    pub(crate) fn read_lin<const N: usize>(&mut self, lin: u64, user: bool) -> Result<u64> {
        if (lin & 0xfff) as usize + N <= 0x1000 {
            if let Some((host, _)) = self.tlb_hit(lin, Access::Read, user) {
                // SAFETY: the TLB only holds addresses inside live RAM mappings, and the
                // access stays within one page.
                return Ok(unsafe { load::<N>(host) });
            }
        }
        self.read_slow::<N>(lin, user)
    }

    #[inline(never)]
    fn read_slow<const N: usize>(&mut self, lin: u64, user: bool) -> Result<u64> {
        let mut bytes = [0u8; 8];
        if (lin & 0xfff) as usize + N <= 0x1000 {
            match self.fill(lin, Access::Read, user)? {
                // SAFETY: as in `read_lin`: `fill` gave RAM, and the access stays in the page.
                Ok((host, _)) => return Ok(unsafe { load::<N>(host) }),
                Err(phys) => self.mmio_read(phys, &mut bytes[..N]),
            }
        } else {
            self.read_bytes(lin, &mut bytes[..N], user)?;
        }
        Ok(u64::from_le_bytes(bytes))
    }

    /// Reads `buf.len()` bytes at `lin`, across pages and MMIO as needed.
    pub(crate) fn read_bytes(&mut self, lin: u64, buf: &mut [u8], user: bool) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = lin.wrapping_add(done as u64);
            let chunk = (0x1000 - (at & 0xfff) as usize).min(buf.len() - done);
            match self.lookup(at, Access::Read, user)? {
                Ok((host, _)) => {
                    // SAFETY: `host..host+chunk` lies within one RAM page of a live mapping.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            host as *const u8,
                            buf[done..].as_mut_ptr(),
                            chunk,
                        )
                    };
                }
                Err(phys) => self.mmio_read(phys, &mut buf[done..done + chunk]),
            }
            done += chunk;
        }
        Ok(())
    }

    /// Reads `size` (1 to 16) bytes at linear `lin` as a little-endian vector operand; within
    /// one page a TLB hit is a plain load.
    #[inline(always)]
    pub(crate) fn read_vec(&mut self, lin: u64, size: usize, user: bool) -> Result<u128> {
        if (lin & 0xfff) as usize + size <= 0x1000 {
            if let Some((host, _)) = self.tlb_hit(lin, Access::Read, user) {
                // SAFETY: as in `read_lin`.
                return Ok(unsafe { load_vec(host, size) });
            }
        }
        let mut bytes = [0u8; 16];
        self.read_bytes(lin, &mut bytes[..size], user)?;
        Ok(u128::from_le_bytes(bytes))
    }

    /// Writes the low `size` (1 to 16) bytes of `value` at linear `lin`; within one page a
    /// TLB hit on a page without decoded code is a plain store.
    #[inline(always)]
    pub(crate) fn write_vec(
        &mut self,
        lin: u64,
        size: usize,
        value: u128,
        user: bool,
    ) -> Result<()> {
        if (lin & 0xfff) as usize + size <= 0x1000 {
            if let Some((host, page)) = self.tlb_hit(lin, Access::Write, user) {
                if !self.code.has_code(page) {
                    // SAFETY: as in `read_lin`.
                    unsafe { store_vec(host, size, value) };
                    return Ok(());
                }
            }
        }
        self.write_bytes(lin, &value.to_le_bytes()[..size], user)
    }

    /// Writes `N` bytes of `value` at linear `lin`.
    #[inline(always)]
    pub(crate) fn write_lin<const N: usize>(
        &mut self,
        lin: u64,
        value: u64,
        user: bool,
    ) -> Result<()> {
        if (lin & 0xfff) as usize + N <= 0x1000 {
            if let Some((host, page)) = self.tlb_hit(lin, Access::Write, user) {
                if !self.code.has_code(page) {
                    // SAFETY: as in `read_lin`.
                    unsafe { store::<N>(host, value) };
                    return Ok(());
                }
            }
        }
        self.write_slow::<N>(lin, value, user)
    }

    /// Reads `N` bytes at `lin` for a read-modify-write: through the write translation, so
    /// a fault reports a write (on a split access, at the second page's first byte, as
    /// hardware does), dirty bits are set, and the store that follows cannot fault.
    #[inline(always)]
    pub(crate) fn read_lin_for_write<const N: usize>(
        &mut self,
        lin: u64,
        user: bool,
    ) -> Result<u64> {
        if (lin & 0xfff) as usize + N <= 0x1000 {
            if let Some((host, _)) = self.tlb_hit(lin, Access::Write, user) {
                // SAFETY: as in `read_lin`.
                return Ok(unsafe { load::<N>(host) });
            }
        }
        self.host_for(lin, Access::Write, user)?;
        let last = lin.wrapping_add(N as u64 - 1);
        if (last ^ lin) & !0xfff != 0 {
            self.host_for(last & !0xfff, Access::Write, user)?;
        }
        self.read_slow::<N>(lin, user)
    }

    #[inline(never)]
    fn write_slow<const N: usize>(&mut self, lin: u64, value: u64, user: bool) -> Result<()> {
        self.write_bytes(lin, &value.to_le_bytes()[..N], user)
    }

    /// Writes `data` at `lin`. Every page is translated (and checked) before any byte is
    /// stored, so a faulting write changes nothing.
    pub(crate) fn write_bytes(&mut self, lin: u64, data: &[u8], user: bool) -> Result<()> {
        // At most three pieces: a store of up to 512 bytes (FXSAVE) spans at most two pages;
        // longer callers split their data themselves.
        let mut pieces = [(
            0usize,
            std::result::Result::<(usize, u32), u64>::Err(0),
            0usize,
        ); 3];
        let mut n = 0;
        let mut done = 0;
        while done < data.len() {
            let at = lin.wrapping_add(done as u64);
            let chunk = (0x1000 - (at & 0xfff) as usize).min(data.len() - done);
            if n == pieces.len() {
                // Very long data: write what is translated so far, then go on.
                self.store_pieces(data, &pieces[..n]);
                n = 0;
            }
            pieces[n] = (done, self.lookup(at, Access::Write, user)?, chunk);
            n += 1;
            done += chunk;
        }
        self.store_pieces(data, &pieces[..n]);
        Ok(())
    }

    fn store_pieces(&mut self, data: &[u8], pieces: &[(usize, Target, usize)]) {
        for &(offset, target, len) in pieces {
            match target {
                Ok((host, page)) => {
                    // SAFETY: `host..host+len` lies within one RAM page of a live mapping.
                    unsafe {
                        std::ptr::copy_nonoverlapping(data[offset..].as_ptr(), host as *mut u8, len)
                    };
                    if self.code.has_code(page) {
                        self.code.written(page);
                        self.end_block = true;
                    }
                }
                Err(phys) => self.mmio_write(phys, &data[offset..offset + len]),
            }
        }
    }

    /// The host address of `N` bytes at `lin` for a locked read-modify-write, or None when the
    /// operand is MMIO, crosses a page or is misaligned (then the caller serializes).
    pub(crate) fn rmw_host(&mut self, lin: u64, bytes: usize, user: bool) -> Result<Option<usize>> {
        if (lin & 0xfff) as usize + bytes > 0x1000 {
            // Translate both pages for the faults, then let the caller go the slow way.
            let _ = self.fill(lin, Access::Write, user)?;
            let _ = self.fill(lin.wrapping_add(bytes as u64 - 1), Access::Write, user)?;
            return Ok(None);
        }
        let Ok((host, page)) = self.lookup(lin, Access::Write, user)? else {
            return Ok(None);
        };
        if self.code.has_code(page) {
            self.code.written(page);
            self.end_block = true;
        }
        Ok((host % bytes == 0).then_some(host))
    }

    fn mmio_read(&mut self, phys: u64, data: &mut [u8]) {
        match self.apic_page() {
            Some(page) if phys & !0xfff == page => self.apic_read(phys & 0xfff, data),
            _ => self.io.mmio_read(phys, data),
        }
    }

    fn mmio_write(&mut self, phys: u64, data: &[u8]) {
        match self.apic_page() {
            Some(page) if phys & !0xfff == page => self.apic_write(phys & 0xfff, data),
            _ => self.io.mmio_write(phys, data),
        }
    }

    /// Translates `lin` for an instruction fetch; returns the host address of the byte and
    /// its RAM page index, or None if it is not RAM (executing MMIO is not supported).
    pub(crate) fn fetch_host(&mut self, lin: u64, user: bool) -> Result<Option<(usize, u32)>> {
        self.host_for(lin, Access::Fetch, user)
    }

    /// Translates `lin` for `access`; returns the host address and RAM page index, or None
    /// for MMIO. Stores through the result must respect code pages themselves.
    pub(crate) fn host_for(
        &mut self,
        lin: u64,
        access: Access,
        user: bool,
    ) -> Result<Option<(usize, u32)>> {
        Ok(self.lookup(lin, access, user)?.ok())
    }
}

/// Loads `N` bytes little-endian from `host`.
///
/// # Safety
/// `host..host+N` must be mapped guest RAM.
#[inline(always)]
pub(crate) unsafe fn load<const N: usize>(host: usize) -> u64 {
    // SAFETY: the caller guarantees the range is mapped; unaligned access is fine on x86.
    unsafe {
        match N {
            1 => u64::from(std::ptr::read(host as *const u8)),
            2 => u64::from(std::ptr::read_unaligned(host as *const u16)),
            4 => u64::from(std::ptr::read_unaligned(host as *const u32)),
            _ => std::ptr::read_unaligned(host as *const u64),
        }
    }
}

/// Loads `size` (1 to 16) bytes at `host` as a little-endian value.
///
/// # Safety
/// `host..host+size` must be mapped and readable.
#[inline(always)]
unsafe fn load_vec(host: usize, size: usize) -> u128 {
    // SAFETY: the caller guarantees the range is mapped; unaligned access is fine on x86.
    unsafe {
        match size {
            16 => std::ptr::read_unaligned(host as *const u128),
            8 => u128::from(std::ptr::read_unaligned(host as *const u64)),
            4 => u128::from(std::ptr::read_unaligned(host as *const u32)),
            _ => {
                let mut bytes = [0u8; 16];
                std::ptr::copy_nonoverlapping(host as *const u8, bytes.as_mut_ptr(), size);
                u128::from_le_bytes(bytes)
            }
        }
    }
}

/// Stores the low `size` (1 to 16) bytes of `value` at `host`.
///
/// # Safety
/// `host..host+size` must be mapped and writable.
#[inline(always)]
unsafe fn store_vec(host: usize, size: usize, value: u128) {
    // SAFETY: the caller guarantees the range is mapped; unaligned access is fine on x86.
    unsafe {
        match size {
            16 => std::ptr::write_unaligned(host as *mut u128, value),
            8 => std::ptr::write_unaligned(host as *mut u64, value as u64),
            4 => std::ptr::write_unaligned(host as *mut u32, value as u32),
            _ => std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), host as *mut u8, size),
        }
    }
}

/// Stores the low `N` bytes of `value` at `host`.
///
/// # Safety
/// `host..host+N` must be mapped guest RAM.
#[inline(always)]
pub(crate) unsafe fn store<const N: usize>(host: usize, value: u64) {
    // SAFETY: the caller guarantees the range is mapped; unaligned access is fine on x86.
    unsafe {
        match N {
            1 => std::ptr::write(host as *mut u8, value as u8),
            2 => std::ptr::write_unaligned(host as *mut u16, value as u16),
            4 => std::ptr::write_unaligned(host as *mut u32, value as u32),
            _ => std::ptr::write_unaligned(host as *mut u64, value),
        }
    }
}

/// A locked compare-and-exchange of `bytes` (1, 2, 4 or 8) at aligned `host`: returns the
/// old value; the store happened if it equals `expected`.
pub(crate) fn atomic_cmpxchg(host: usize, bytes: usize, expected: u64, new: u64) -> u64 {
    // SAFETY (all arms): `host` is aligned to `bytes` and inside live guest RAM (`rmw_host`).
    unsafe {
        match bytes {
            1 => {
                let a = AtomicU8::from_ptr(host as *mut u8);
                u64::from(
                    match a.compare_exchange(
                        expected as u8,
                        new as u8,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) | Err(v) => v,
                    },
                )
            }
            2 => {
                let a = AtomicU16::from_ptr(host as *mut u16);
                u64::from(
                    match a.compare_exchange(
                        expected as u16,
                        new as u16,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) | Err(v) => v,
                    },
                )
            }
            4 => {
                let a = AtomicU32::from_ptr(host as *mut u32);
                u64::from(
                    match a.compare_exchange(
                        expected as u32,
                        new as u32,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) | Err(v) => v,
                    },
                )
            }
            _ => {
                let a = AtomicU64::from_ptr(host as *mut u64);
                match a.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{index, slot, Access, Entry, Tlb, GENERATION_MASK, TLB_SIZE};

    /// A TLB holding `lin` (4 KiB page, `global` or not) for supervisor reads.
    fn holding(tlb: &mut Tlb, lin: u64, global: bool, size_shift: u8) {
        tlb.large |= size_shift > 12;
        if global && tlb.globals.len() < super::GLOBAL_SLOTS {
            tlb.globals
                .push((slot(Access::Read, false) * TLB_SIZE + index(lin)) as u16);
        }
        tlb.entries[slot(Access::Read, false)][index(lin)] = Entry {
            tag: tlb.tag(lin),
            addend: 0x1000usize.wrapping_sub((lin & !0xfff) as usize),
            page: 1,
            global,
            size_shift,
        };
    }

    fn has(tlb: &Tlb, lin: u64) -> bool {
        tlb.entries[slot(Access::Read, false)][index(lin)].tag == tlb.tag(lin)
    }

    #[test]
    fn flushes_are_new_generations_that_keep_only_global_entries() {
        let mut tlb = Tlb::default();
        holding(&mut tlb, 0x4000, false, 12);
        holding(&mut tlb, 0xffff_8000_0000_1000, true, 12);
        tlb.flush(true);
        assert!(!has(&tlb, 0x4000));
        assert!(
            has(&tlb, 0xffff_8000_0000_1000),
            "global entries survive a CR3 load"
        );
        tlb.flush(false);
        assert!(!has(&tlb, 0xffff_8000_0000_1000));
        // Thousands of flushes later an old entry must not come back to life.
        holding(&mut tlb, 0x7000, false, 12);
        for _ in 0..2 * GENERATION_MASK {
            tlb.flush(false);
            assert!(!has(&tlb, 0x7000));
        }
    }

    #[test]
    fn invlpg_drops_the_page_and_large_pages_covering_it() {
        let mut tlb = Tlb::default();
        holding(&mut tlb, 0x4000, false, 12);
        holding(&mut tlb, 0x5000, false, 12);
        tlb.flush_page(0x4abc);
        assert!(!has(&tlb, 0x4000) && has(&tlb, 0x5000));
        // A 2 MiB page entry cached for an address far from the one INVLPG names.
        holding(&mut tlb, 0x20_1000, false, 21);
        holding(&mut tlb, 0xffff_8000_0000_1000, true, 12);
        holding(&mut tlb, 0xffff_8000_0000_2000, true, 12);
        tlb.flush_page(0x3f_f000);
        assert!(!has(&tlb, 0x20_1000));
        assert!(
            has(&tlb, 0xffff_8000_0000_1000),
            "a global entry elsewhere stays"
        );
        tlb.flush_page(0xffff_8000_0000_2000);
        assert!(!has(&tlb, 0xffff_8000_0000_2000));
        assert!(has(&tlb, 0xffff_8000_0000_1000));
    }

    #[test]
    fn global_entries_past_the_list_are_forgotten_never_kept_stale() {
        let mut tlb = Tlb::default();
        let pages: Vec<u64> = (0..super::GLOBAL_SLOTS as u64 + 100)
            .map(|n| 0xffff_8000_0000_0000 + (n << 12))
            .collect();
        for &p in &pages {
            holding(&mut tlb, p, true, 12);
        }
        let (listed, unlisted) = pages.split_at(super::GLOBAL_SLOTS);
        tlb.flush(true);
        tlb.flush(true);
        assert!(listed.iter().all(|&p| has(&tlb, p)));
        assert!(unlisted.iter().all(|&p| !has(&tlb, p)));
        tlb.flush(false);
        assert!(pages.iter().all(|&p| !has(&tlb, p)));
    }

    use super::super::segment::from_descriptor;
    use super::super::state::{
        CR0_PG, CR4_PAE, CR4_PKE, CR4_PKS, CR4_PSE, CR4_SMAP, CR4_SMEP, CS, EFER_LMA, EFER_LME,
    };
    use super::super::testmachine::TestMachine;
    use super::super::Exit;

    /// Page directory (32-bit paging, 4 MiB pages).
    const PD: u64 = 0x3000;
    /// The #PF handler: pop eax (the error code); mov ebx,cr2; hlt.
    const PF_HANDLER: u64 = 0x2000;
    const IDT: u64 = 0x600;
    /// The user-mode alias of physical 0..4 MiB.
    const USER: u32 = 0x40_0000;
    /// In long mode, the alias of physical 0..2 MiB with protection key 1.
    const KEY1: u32 = 0x20_0000;

    /// Flat 32-bit ring 0 with paging: 0..4 MiB supervisor, 4..8 MiB the same memory as
    /// user pages; CR4 gets `cr4` too. #PF stops with its error code in EAX, CR2 in EBX.
    fn paged(code: &[u8], cr4: u64) -> TestMachine {
        let mut m = TestMachine::flat32(code, &[]);
        m.write(PD, &0x83u32.to_le_bytes());
        m.write(PD + 4, &0x87u32.to_le_bytes());
        m.write(PF_HANDLER, &[0x58, 0x0f, 0x20, 0xd3, 0xf4]);
        let gate = (PF_HANDLER & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((PF_HANDLER >> 16) << 48);
        m.write(IDT + 14 * 8, &gate.to_le_bytes());
        let core = &mut m.cpu.core;
        core.s.idt.base = IDT;
        core.s.idt.limit = 0xff;
        core.s.cr3 = PD;
        core.s.cr4 |= CR4_PSE | cr4;
        core.s.cr0 |= CR0_PG;
        core.s.gpr[4] = 0x8000;
        core.s.update_mode();
        m
    }

    fn user(addr: u32) -> [u8; 4] {
        (USER + addr).to_le_bytes()
    }

    /// Runs `m` to the #PF handler's HLT: (error code, CR2).
    fn page_fault(m: &mut TestMachine) -> (u64, u64) {
        assert_eq!(m.run(), Exit::Halted);
        let r = m.cpu.regs();
        (r.rax, r.rbx)
    }

    #[test]
    fn smap_lets_supervisor_data_accesses_to_user_pages_through_only_with_ac() {
        let mut code = vec![0x0f, 0x01, 0xcb, 0x8b, 0x15]; // stac; mov edx,[user 0x2800]
        code.extend(user(0x2800));
        code.extend([0x0f, 0x01, 0xca, 0xa1]); // clac; mov eax,[user 0x2800]
        code.extend(user(0x2800));
        code.push(0xf4);
        let mut m = paged(&code, CR4_SMAP);
        m.write(0x2800, &0x1122_3344u32.to_le_bytes());
        // The AC=1 read left nothing in the TLB that lets the AC=0 one through.
        assert_eq!(page_fault(&mut m), (1, u64::from(USER + 0x2800)));
        assert_eq!(m.cpu.regs().rdx, 0x1122_3344);
    }

    #[test]
    fn smap_off_allows_supervisor_reads_of_user_pages() {
        let mut code = vec![0xa1]; // mov eax,[user 0x2800]
        code.extend(user(0x2800));
        code.push(0xf4);
        let mut m = paged(&code, 0);
        m.write(0x2800, &7u32.to_le_bytes());
        assert_eq!(m.run(), Exit::Halted);
        assert_eq!(m.cpu.regs().rax, 7);
    }

    #[test]
    fn smep_stops_supervisor_fetches_from_user_pages() {
        let mut code = vec![0xb8]; // mov eax,user 0x1010; jmp eax
        code.extend(user(0x1010));
        code.extend([0xff, 0xe0]);
        let mut m = paged(&code, CR4_SMEP);
        // Present, instruction fetch, supervisor.
        assert_eq!(page_fault(&mut m), (0x11, u64::from(USER + 0x1010)));
    }

    /// Long mode, ring 0 over 2 MiB pages of physical 0..2 MiB: at 0 supervisor pages with
    /// protection key 0, at [`KEY1`] supervisor pages with key 1, at [`USER`] user pages with
    /// key 2; CR4 gets `cr4` too. #PF stops with its error code in RAX, CR2 in RBX.
    fn long_mode(code: &[u8], cr4: u64) -> TestMachine {
        const CODE64: u64 = 0x00af_9b00_0000_ffff;
        let mut m = TestMachine::flat32(code, &[CODE64]);
        m.write(0x3000, &0x4007u64.to_le_bytes());
        m.write(0x4000, &0x5007u64.to_le_bytes());
        m.write(0x5000, &0x83u64.to_le_bytes());
        m.write(0x5008, &(0x83u64 | 1 << 59).to_le_bytes());
        m.write(0x5010, &(0x87u64 | 2 << 59).to_le_bytes());
        m.write(PF_HANDLER, &[0x58, 0x0f, 0x20, 0xd3, 0xf4]);
        let gate = (PF_HANDLER & 0xffff) | (0x18 << 16) | (0x8e << 40) | ((PF_HANDLER >> 16) << 48);
        m.write(IDT + 14 * 16, &gate.to_le_bytes());
        let core = &mut m.cpu.core;
        core.s.idt.base = IDT;
        core.s.idt.limit = 0xfff;
        core.s.cr3 = 0x3000;
        core.s.cr4 |= CR4_PAE | cr4;
        core.s.efer |= EFER_LME | EFER_LMA;
        core.s.cr0 |= CR0_PG;
        core.s.seg[CS] = from_descriptor(0x18, CODE64);
        core.s.gpr[4] = 0x8000;
        core.s.update_mode();
        m
    }

    /// mov `reg`,[abs `addr`] (reg 0 = EAX, 2 = EDX).
    fn load(reg: u8, addr: u32) -> Vec<u8> {
        let mut v = vec![0x8b, 0x04 | (reg << 3), 0x25];
        v.extend(addr.to_le_bytes());
        v
    }

    /// xor ecx,ecx; xor edx,edx; mov eax,`pkru`; wrpkru.
    fn wrpkru(pkru: u32) -> Vec<u8> {
        let mut v = vec![0x31, 0xc9, 0x31, 0xd2, 0xb8];
        v.extend(pkru.to_le_bytes());
        v.extend([0x0f, 0x01, 0xef]);
        v
    }

    #[test]
    fn pkru_access_disable_stops_reads_of_user_pages_with_that_key() {
        // Key 1 (supervisor pages) is not PKRU's business; key 2 is access-disabled.
        let mut code = wrpkru(0x10 | 0x4);
        code.extend(load(2, KEY1 + 0x2800));
        code.extend(load(0, USER + 0x2800));
        code.push(0xf4);
        let mut m = long_mode(&code, CR4_PKE);
        m.write(0x2800, &9u32.to_le_bytes());
        assert_eq!(page_fault(&mut m), (0x21, u64::from(USER + 0x2800)));
        assert_eq!(m.cpu.regs().rdx, 9);
        assert_eq!(m.cpu.core.s.pkru, 0x14);
    }

    #[test]
    fn pkru_write_disable_stops_supervisor_writes_with_cr0_wp() {
        let mut code = wrpkru(0x20);
        // mov dword [abs user 0x2800], 5
        code.extend([0xc7, 0x04, 0x25]);
        code.extend((USER + 0x2800).to_le_bytes());
        code.extend(5u32.to_le_bytes());
        code.push(0xf4);
        let mut m = long_mode(&code, CR4_PKE);
        m.cpu.core.s.cr0 |= super::super::state::CR0_WP;
        assert_eq!(page_fault(&mut m), (0x23, u64::from(USER + 0x2800)));
    }

    #[test]
    fn pkrs_access_disable_stops_reads_of_supervisor_pages_with_that_key() {
        // Key 0 pages (code, stack, tables) stay usable; key 1 is access-disabled.
        let mut code = load(0, KEY1 + 0x2800);
        code.push(0xf4);
        let mut m = long_mode(&code, CR4_PKS);
        assert!(m.cpu.set_msr(0x6e1, 0x4));
        assert_eq!(page_fault(&mut m), (0x21, u64::from(KEY1 + 0x2800)));
    }

    #[test]
    fn reserved_bits_in_a_4_mib_page_entry_fault_with_rsvd() {
        let mut code = vec![0xa1]; // mov eax,[user 0x2800]
        code.extend(user(0x2800));
        code.push(0xf4);
        let mut m = paged(&code, 0);
        m.write(PD + 4, &(0x87u32 | 1 << 21).to_le_bytes());
        // Present, reserved bit, supervisor read.
        assert_eq!(page_fault(&mut m), (0x9, u64::from(USER + 0x2800)));
    }

    #[test]
    fn address_bits_above_maxphyaddr_fault_with_rsvd() {
        let mut code = load(0, KEY1 + 0x2800);
        code.push(0xf4);
        let mut m = long_mode(&code, 0);
        m.write(0x5008, &(0x83u64 | 1 << 51).to_le_bytes());
        assert_eq!(page_fault(&mut m), (0x9, u64::from(KEY1 + 0x2800)));
    }

    #[test]
    fn reserved_bits_of_a_2_mib_page_fault_but_pat_does_not() {
        let mut code = load(2, KEY1 + 0x2800);
        code.extend(load(0, USER + 0x2800));
        code.push(0xf4);
        let mut m = long_mode(&code, 0);
        m.write(0x5008, &(0x83u64 | 1 << 12).to_le_bytes());
        m.write(0x5010, &(0x87u64 | 1 << 13).to_le_bytes());
        m.write(0x2800, &3u32.to_le_bytes());
        assert_eq!(page_fault(&mut m), (0x9, u64::from(USER + 0x2800)));
        assert_eq!(m.cpu.regs().rdx, 3);
    }

    #[test]
    fn a_key_violation_sets_pk_even_when_the_page_denies_the_write_too() {
        let mut code = wrpkru(0x10);
        // mov dword [abs user 0x2800], 5: to a read-only page whose key is access-disabled.
        code.extend([0xc7, 0x04, 0x25]);
        code.extend((USER + 0x2800).to_le_bytes());
        code.extend(5u32.to_le_bytes());
        code.push(0xf4);
        let mut m = long_mode(&code, CR4_PKE);
        m.write(0x5010, &(0x85u64 | 2 << 59).to_le_bytes());
        m.cpu.core.s.cr0 |= super::super::state::CR0_WP;
        assert_eq!(page_fault(&mut m), (0x23, u64::from(USER + 0x2800)));
    }
}
