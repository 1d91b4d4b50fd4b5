//! Chain slots and the lookup table: where a translated block's exit finds the block that
//! runs next.
//!
//! Each exit with a target known at translation (a Jcc, a direct branch, the end of a block)
//! has a slot holding a stamp, an entry and that target. The exit jumps to `entry` only when
//! `stamp` equals the TLB and code epochs the chain was entered under (masked: see below). A
//! slot starts out leading to its exit's own link request, and the dispatcher links it (after
//! finding and translating the next block) with the epochs of that moment: a flush or a store
//! to code since then makes every link stale at once. A link to a block that lies on the
//! exiting block's first linear page only needs the code epoch: the exiting block runs, so
//! that page still maps what it mapped when both were decoded, and TLB flushes (a CR3 load on
//! every system call under page-table isolation) leave such links alone. A link to a block
//! reached through global translations only (kernel text, which stays global under
//! page-table isolation without PCID) also keeps the global epoch of its moment, and holds
//! while that has not moved. Exits whose target is only known at run time
//! (RET, indirect branches, instructions left to handlers) look the RIP up in a table per
//! privilege level (supervisor, user), filled the same way. A link never outlives the code it
//! points to, as slots, table and code are dropped together.

/// One exit's link, as translated code reads it (field offsets 0, 8, 16, 24, 40 and 49).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct ChainSlot {
    /// `tlb_epoch << 32 | code_epoch` when linked.
    stamp: u64,
    /// Where to jump: a block's body, or the exit's own link request.
    entry: u64,
    /// The RIP the exit leads to.
    target: u64,
    /// What of the chain's stamp must equal `stamp`: all of it, or the code epoch alone.
    mask: u64,
    /// The linear page of the first byte of the exiting block.
    page: u64,
    /// `global_epoch << 32 | code_epoch` for a link to a block reached through global
    /// translations only, else `u64::MAX`.
    global_stamp: u64,
    /// The privilege level of the code the exit belongs to.
    cpl: u8,
    /// Whether the linked block sets the flags before it could observe them: the exit need
    /// not store lazy flags it holds in registers (1) or must (0).
    flags_dead: u8,
}

/// Offset of [`ChainSlot`]'s `flags_dead` byte, which translated code reads.
pub(super) const FLAGS_DEAD_OFFSET: i32 = std::mem::offset_of!(ChainSlot, flags_dead) as i32;

/// The block a slot is linked to: its entry, the privilege level it was made for, and
/// whether it sets the flags before it could observe them.
#[derive(Clone, Copy)]
pub(super) struct LinkTarget {
    pub entry: u64,
    pub cpl: u8,
    pub flags_dead: bool,
}

/// The slots of one code arena: a fixed-capacity table that never moves, emptied with it.
pub(super) struct Slots {
    slots: Vec<ChainSlot>,
}

impl Slots {
    /// Room for `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Slots {
            slots: Vec::with_capacity(capacity),
        }
    }

    /// A new slot for an exit to `target` of code run at privilege `cpl`, in a block whose
    /// first byte is on linear page `page`: its index and address. None when the table is
    /// full.
    pub fn allocate(&mut self, cpl: u8, target: u64, page: u64) -> Option<(u32, u64)> {
        if self.slots.len() == self.slots.capacity() {
            return None;
        }
        let index = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(ChainSlot {
            stamp: 0,
            entry: 0,
            target,
            mask: u64::MAX,
            page,
            global_stamp: u64::MAX,
            cpl,
            flags_dead: 0,
        });
        let address = &self.slots[index as usize] as *const ChainSlot as u64;
        Some((index, address))
    }

    /// Sets slot `index` to lead to its link request at `request`. Called before the code
    /// using it first runs: even a stamp that happens to match then leads to the request.
    pub fn unlink(&mut self, index: u32, request: u64) {
        if let Some(s) = self.slots.get_mut(index as usize) {
            s.entry = request;
            s.stamp = u64::MAX;
        }
    }

    /// Links slot `index` to `to`, run at RIP `rip`, under `stamps`; `page` is the linear page
    /// of that block when it lies on one page. Refused (false) across privilege levels or when
    /// `rip` is not the exit's target (something ran in between).
    pub fn link(
        &mut self,
        index: u32,
        to: LinkTarget,
        rip: u64,
        stamps: LinkStamps,
        page: Option<u64>,
    ) -> bool {
        let LinkTarget {
            entry,
            cpl,
            flags_dead,
        } = to;
        match self.slots.get_mut(index as usize) {
            Some(s) if s.cpl == cpl && s.target == rip => {
                s.mask = if page == Some(s.page) {
                    CODE_EPOCH
                } else {
                    u64::MAX
                };
                s.entry = entry;
                s.flags_dead = u8::from(flags_dead);
                s.stamp = stamps.any & s.mask;
                s.global_stamp = stamps.global.unwrap_or(u64::MAX);
                true
            }
            _ => false,
        }
    }

    /// Drops every slot (with the code that used them).
    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

/// The code epoch's part of a stamp.
const CODE_EPOCH: u64 = 0xffff_ffff;

/// The stamps a link is made under: `tlb_epoch << 32 | code_epoch`, and for a block reached
/// through global translations only, `global_epoch << 32 | code_epoch`.
#[derive(Clone, Copy)]
pub(super) struct LinkStamps {
    pub any: u64,
    pub global: Option<u64>,
}

/// Entries per lookup table (a power of two).
pub(super) const LOOKUP_ENTRIES: usize = 4096;

/// One entry of a lookup table, as translated code reads it (offsets 0, 8, 16 and 24; 32
/// bytes).
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(super) struct LookupEntry {
    /// `tlb_epoch << 32 | code_epoch` when filled.
    stamp: u64,
    /// The body of the block at `target`.
    entry: u64,
    /// The RIP it is for: a non-canonical value, which RIP never is in 64-bit code, when
    /// empty.
    target: u64,
    /// `global_epoch << 32 | code_epoch` when the block was reached through global
    /// translations only, else `u64::MAX`.
    global_stamp: u64,
}

impl LookupEntry {
    const EMPTY: LookupEntry = LookupEntry {
        stamp: u64::MAX,
        entry: 0,
        target: 1 << 63,
        global_stamp: u64::MAX,
    };
}

/// The index of `rip` in a lookup table (translated code computes the same).
pub(super) fn lookup_index(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (LOOKUP_ENTRIES - 1)
}

/// The lookup tables for supervisor (CPL 0) and user (CPL 3) code; code at CPL 1 and 2 has
/// none.
pub(super) struct Lookup {
    tables: Box<[[LookupEntry; LOOKUP_ENTRIES]; 2]>,
}

impl Lookup {
    /// Empty tables.
    pub fn new() -> Self {
        Lookup {
            tables: Box::new([[LookupEntry::EMPTY; LOOKUP_ENTRIES]; 2]),
        }
    }

    /// The address of the table for code run at `cpl`, if it has one (it never moves).
    pub fn table(&self, cpl: u8) -> Option<u64> {
        let t = match cpl {
            0 => &self.tables[0],
            3 => &self.tables[1],
            _ => return None,
        };
        Some(t.as_ptr() as u64)
    }

    /// Makes RIP `rip` in the table of `cpl` lead to `entry` under `stamps`.
    pub fn fill(&mut self, cpl: u8, rip: u64, entry: u64, stamps: LinkStamps) {
        let t = match cpl {
            0 => &mut self.tables[0],
            3 => &mut self.tables[1],
            _ => return,
        };
        t[lookup_index(rip)] = LookupEntry {
            stamp: stamps.any,
            entry,
            target: rip,
            global_stamp: stamps.global.unwrap_or(u64::MAX),
        };
    }

    /// Empties both tables (with the code they led to).
    pub fn clear(&mut self) {
        for t in self.tables.iter_mut() {
            t.fill(LookupEntry::EMPTY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_move_and_refuse_when_full() {
        let mut s = Slots::new(2);
        let (a, pa) = s.allocate(0, 0x4000, 0x4000).unwrap();
        let (b, pb) = s.allocate(3, 0x4000, 0x4000).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(pb - pa, std::mem::size_of::<ChainSlot>() as u64);
        assert!(s.allocate(0, 0x4000, 0x4000).is_none());
        let stamps = |any, global| LinkStamps { any, global };
        let to = |cpl| LinkTarget {
            entry: 0x1000,
            cpl,
            flags_dead: false,
        };
        assert!(
            !s.link(b, to(0), 0x4000, stamps(7, None), None),
            "cpl 3 exit, cpl 0 target"
        );
        assert!(
            !s.link(a, to(0), 0x5000, stamps(7, None), None),
            "not the exit's target"
        );
        assert!(s.link(a, to(0), 0x4000, stamps((5 << 32) | 7, None), None));
        assert_eq!(
            (s.slots[0].stamp, s.slots[0].mask, s.slots[0].global_stamp),
            ((5 << 32) | 7, u64::MAX, u64::MAX)
        );
        assert!(s.link(
            a,
            LinkTarget {
                flags_dead: true,
                ..to(0)
            },
            0x4000,
            stamps((5 << 32) | 7, Some(9)),
            Some(0x4000)
        ));
        assert_eq!(
            (s.slots[0].stamp, s.slots[0].mask, s.slots[0].global_stamp),
            (7, CODE_EPOCH, 9),
            "same page, global"
        );
        assert_eq!(s.slots[0].flags_dead, 1);
        // Translated code reads the fields at these offsets.
        assert_eq!(std::mem::offset_of!(ChainSlot, mask), 24);
        assert_eq!(std::mem::offset_of!(ChainSlot, global_stamp), 40);
        assert_eq!(
            std::mem::offset_of!(ChainSlot, flags_dead) as i32,
            FLAGS_DEAD_OFFSET
        );
        s.clear();
        assert_eq!(s.allocate(0, 0, 0).unwrap().1, pa);
    }

    #[test]
    fn lookup_entries_are_32_bytes_and_start_empty() {
        assert_eq!(std::mem::size_of::<LookupEntry>(), 32);
        let mut l = Lookup::new();
        assert!(l.table(1).is_none());
        assert_eq!(l.table(3).unwrap(), l.tables[1].as_ptr() as u64);
        l.fill(
            3,
            0x40_1000,
            0x1234,
            LinkStamps {
                any: 9,
                global: None,
            },
        );
        let e = l.tables[1][lookup_index(0x40_1000)];
        assert_eq!(
            (e.stamp, e.entry, e.target, e.global_stamp),
            (9, 0x1234, 0x40_1000, u64::MAX)
        );
        assert_eq!(std::mem::offset_of!(LookupEntry, global_stamp), 24);
        l.clear();
        assert_eq!(l.tables[1][lookup_index(0x40_1000)].target, 1 << 63);
    }
}
