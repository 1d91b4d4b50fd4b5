//! Chain slots: where a translated block's exit finds the block that runs next.
//!
//! Each exit of a translated block has a slot holding a stamp, an entry and a target. The
//! exit jumps to `entry` only when `stamp` equals the TLB and code epochs the chain was
//! entered under and RIP equals `target`. A slot starts out leading to its exit's own link
//! request, and the dispatcher links it (after finding and translating the next block) with
//! the epochs of that moment: a flush or a store to code since then makes every link stale at
//! once, and a link never outlives the code it points to, as slots and code are dropped
//! together.

/// One exit's link, as translated code reads it (field offsets 0, 8 and 16).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct ChainSlot {
    /// `tlb_epoch << 32 | code_epoch` when linked.
    stamp: u64,
    /// Where to jump: a block's body, or the exit's own link request.
    entry: u64,
    /// The RIP the link was made for.
    target: u64,
    /// The privilege level of the code the exit belongs to.
    cpl: u8,
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

    /// A new slot for an exit of code run at privilege `cpl`: its index and address. None
    /// when the table is full.
    pub fn allocate(&mut self, cpl: u8) -> Option<(u32, u64)> {
        if self.slots.len() == self.slots.capacity() {
            return None;
        }
        let index = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(ChainSlot {
            stamp: 0,
            entry: 0,
            target: 0,
            cpl,
        });
        let address = &self.slots[index as usize] as *const ChainSlot as u64;
        Some((index, address))
    }

    /// Sets slot `index` to lead to its link request at `request` and match nothing. Called
    /// before the code using it first runs.
    pub fn unlink(&mut self, index: u32, request: u64) {
        if let Some(s) = self.slots.get_mut(index as usize) {
            s.entry = request;
            // No stamp of the form `tlb << 32 | code` that could be current matches this
            // with the entry pointing elsewhere: the entry is the request itself.
            s.stamp = u64::MAX;
        }
    }

    /// Links slot `index` to code entered at `entry`, made for privilege `cpl`, for RIP
    /// `target` under `stamp`. Refused (false) across privilege levels.
    pub fn link(&mut self, index: u32, entry: u64, cpl: u8, target: u64, stamp: u64) -> bool {
        match self.slots.get_mut(index as usize) {
            Some(s) if s.cpl == cpl => {
                s.entry = entry;
                s.target = target;
                s.stamp = stamp;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_move_and_refuse_when_full() {
        let mut s = Slots::new(2);
        let (a, pa) = s.allocate(0).unwrap();
        let (b, pb) = s.allocate(3).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(pb - pa, std::mem::size_of::<ChainSlot>() as u64);
        assert!(s.allocate(0).is_none());
        assert!(!s.link(b, 0x1000, 0, 0x4000, 7), "cpl 3 exit, cpl 0 target");
        assert!(s.link(a, 0x1000, 0, 0x4000, 7));
        s.clear();
        assert_eq!(s.allocate(0).unwrap().1, pa);
    }
}
