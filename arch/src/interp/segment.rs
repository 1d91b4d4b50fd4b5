//! Segmentation: linear addresses from segment:offset with limit and type checks, and loading
//! segment registers from descriptor tables with the protection checks of each mode.

use super::fault::{Exception, Result};
use super::state::{Segment, CS, FS, GS, SS};
use super::Core;

/// Descriptor type bits (low nibble of the access byte) for code/data segments.
const TYPE_CODE: u8 = 0x8;
const TYPE_DATA_WRITABLE: u8 = 0x2;
const TYPE_CODE_READABLE: u8 = 0x2;
const TYPE_DATA_EXPAND_DOWN: u8 = 0x4;
const TYPE_CODE_CONFORMING: u8 = 0x4;

/// Whether a 64-bit linear address is canonical (48-bit).
#[inline(always)]
pub fn is_canonical(lin: u64) -> bool {
    ((lin as i64) << 16 >> 16) as u64 == lin
}

/// Decodes the 8-byte descriptor `raw` (for `selector`) into segment register contents.
pub fn from_descriptor(selector: u16, raw: u64) -> Segment {
    let limit = ((raw & 0xffff) | ((raw >> 32) & 0xf_0000)) as u32;
    let g = ((raw >> 55) & 1) as u8;
    Segment {
        base: ((raw >> 16) & 0xff_ffff) | ((raw >> 32) & 0xff00_0000),
        limit: if g != 0 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((raw >> 40) & 0xf) as u8,
        s: ((raw >> 44) & 1) as u8,
        dpl: ((raw >> 45) & 3) as u8,
        present: ((raw >> 47) & 1) as u8,
        avl: ((raw >> 52) & 1) as u8,
        l: ((raw >> 53) & 1) as u8,
        db: ((raw >> 54) & 1) as u8,
        g,
        unusable: 0,
        padding: 0,
    }
}

fn selector_error(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

impl Core {
    /// The linear address of `offset` in segment `seg` for an access of `size` bytes,
    /// after the mode's limit, type and canonical checks.
    #[inline(always)]
    pub(crate) fn linear(&self, seg: usize, offset: u64, size: u32, write: bool) -> Result<u64> {
        if self.s.mode.code_bits == 64 {
            let base = if seg >= FS { self.s.seg[seg].base } else { 0 };
            let lin = base.wrapping_add(offset);
            if !is_canonical(lin) {
                return Err(if seg == SS {
                    Exception::ss(0)
                } else {
                    Exception::gp0()
                });
            }
            return Ok(lin);
        }
        self.linear_legacy(seg, offset, size, write)
    }

    fn linear_legacy(&self, seg: usize, offset: u64, size: u32, write: bool) -> Result<u64> {
        let s = &self.s.seg[seg];
        let fault = || {
            if seg == SS {
                Exception::ss(0)
            } else {
                Exception::gp0()
            }
        };
        if self.s.mode.protected && !self.s.mode.v86 {
            if s.unusable != 0 || s.present == 0 {
                return Err(fault());
            }
            let code = s.type_ & TYPE_CODE != 0;
            if write && (code || s.type_ & TYPE_DATA_WRITABLE == 0) {
                return Err(fault());
            }
            if !write && code && s.type_ & TYPE_CODE_READABLE == 0 {
                return Err(fault());
            }
        }
        let last = offset.wrapping_add(u64::from(size.max(1)) - 1);
        let limit = u64::from(s.limit);
        let expand_down = s.type_ & (TYPE_CODE | TYPE_DATA_EXPAND_DOWN) == TYPE_DATA_EXPAND_DOWN;
        if expand_down {
            let upper = if s.db != 0 { 0xffff_ffff } else { 0xffff };
            if offset <= limit || last > upper {
                return Err(fault());
            }
        } else if last > limit {
            return Err(fault());
        }
        Ok(s.base.wrapping_add(offset) & 0xffff_ffff)
    }

    /// Reads the 8-byte descriptor for `selector` from the GDT or LDT; #GP(selector) (or
    /// `fault` vector) when it lies beyond the table limit.
    pub(crate) fn read_descriptor(&mut self, selector: u16, fault: u8) -> Result<(u64, u64)> {
        let (base, limit) = if selector & 4 != 0 {
            if self.s.ldt.unusable != 0 || self.s.ldt.present == 0 {
                return Err(Exception::with_error(fault, selector_error(selector)));
            }
            (self.s.ldt.base, u64::from(self.s.ldt.limit))
        } else {
            (self.s.gdt.base, u64::from(self.s.gdt.limit))
        };
        let offset = u64::from(selector & 0xfff8);
        if offset + 7 > limit {
            return Err(Exception::with_error(fault, selector_error(selector)));
        }
        let addr = base.wrapping_add(offset);
        let raw = self.read_lin::<8>(addr, false)?;
        Ok((raw, addr))
    }

    /// Sets the accessed bit of the descriptor at linear `addr` if it is clear.
    pub(crate) fn mark_accessed(&mut self, addr: u64, raw: u64) -> Result<()> {
        if raw & (1 << 40) == 0 {
            let byte = ((raw >> 40) as u8) | 1;
            self.write_lin::<1>(addr + 5, u64::from(byte), false)?;
        }
        Ok(())
    }

    /// A far transfer in real or virtual-8086 mode: CS becomes `selector` (base
    /// `selector << 4`, cached limits and attributes kept) and RIP `ip`.
    pub(crate) fn jump_real(&mut self, selector: u16, ip: u64) {
        let s = &mut self.s.seg[CS];
        s.selector = selector;
        s.base = u64::from(selector) << 4;
        self.s.rip = ip;
    }

    /// Loads data segment register `seg` (DS, ES, FS, GS or SS) with `selector`, as MOV/POP do.
    pub(crate) fn load_segment(&mut self, seg: usize, selector: u16) -> Result<()> {
        if !self.s.mode.protected || self.s.mode.v86 {
            let s = &mut self.s.seg[seg];
            s.selector = selector;
            s.base = u64::from(selector) << 4;
            if self.s.mode.v86 {
                // Virtual-8086 segments are always 64 KiB, read/write, DPL 3.
                *s = Segment {
                    limit: 0xffff,
                    type_: 3,
                    s: 1,
                    dpl: 3,
                    present: 1,
                    ..*s
                };
            }
            s.unusable = 0;
            if seg == SS {
                self.s.update_mode();
            }
            return Ok(());
        }
        let cpl = self.s.mode.cpl;
        if selector & 0xfffc == 0 {
            // Null selector: allowed except for SS outside 64-bit mode, at CPL 3, or with an
            // RPL other than the CPL.
            if seg == SS && (self.s.mode.code_bits != 64 || cpl == 3 || (selector & 3) as u8 != cpl)
            {
                return Err(Exception::gp0());
            }
            let s = &mut self.s.seg[seg];
            *s = Segment {
                selector,
                unusable: 1,
                // In 64-bit mode a null SS keeps its attributes; DPL tracks RPL.
                dpl: (selector & 3) as u8,
                ..*s
            };
            return Ok(());
        }
        let (raw, addr) = self.read_descriptor(selector, super::fault::GP)?;
        let desc = from_descriptor(selector, raw);
        let rpl = (selector & 3) as u8;
        let code = desc.type_ & TYPE_CODE != 0;
        let err = selector_error(selector);
        if seg == SS {
            let writable_data = desc.s != 0 && !code && desc.type_ & TYPE_DATA_WRITABLE != 0;
            if rpl != cpl || desc.dpl != cpl || !writable_data {
                return Err(Exception::gp(err));
            }
            if desc.present == 0 {
                return Err(Exception::ss(err));
            }
        } else {
            let readable = desc.s != 0 && (!code || desc.type_ & TYPE_CODE_READABLE != 0);
            if !readable {
                return Err(Exception::gp(err));
            }
            let conforming = code && desc.type_ & TYPE_CODE_CONFORMING != 0;
            if !conforming && (rpl > desc.dpl || cpl > desc.dpl) {
                return Err(Exception::gp(err));
            }
            if desc.present == 0 {
                return Err(Exception::np(err));
            }
        }
        self.mark_accessed(addr, raw)?;
        self.s.seg[seg] = Segment {
            type_: desc.type_ | 1,
            ..desc
        };
        if seg == SS {
            self.s.update_mode();
        }
        Ok(())
    }

    /// Loads CS for a far transfer to `selector` (already checked by the caller) from its
    /// descriptor `raw`, with RPL set to the new CPL.
    pub(crate) fn set_cs(&mut self, selector: u16, raw: u64, cpl: u8) {
        let desc = from_descriptor((selector & !3) | u16::from(cpl), raw);
        self.s.seg[CS] = Segment {
            type_: desc.type_ | 1,
            ..desc
        };
        self.s.update_mode();
    }

    /// Checks a code-segment descriptor as a far JMP/CALL/RET/IRET target at `cpl`:
    /// returns #GP/#NP like the hardware.
    pub(crate) fn check_code_descriptor(
        &self,
        selector: u16,
        raw: u64,
        cpl: u8,
        same_privilege: bool,
    ) -> Result<()> {
        let desc = from_descriptor(selector, raw);
        let err = selector_error(selector);
        if desc.s == 0 || desc.type_ & TYPE_CODE == 0 {
            return Err(Exception::gp(err));
        }
        let conforming = desc.type_ & TYPE_CODE_CONFORMING != 0;
        if same_privilege {
            if conforming && desc.dpl > cpl {
                return Err(Exception::gp(err));
            }
            if !conforming && (desc.dpl != cpl || (selector & 3) as u8 > cpl) {
                return Err(Exception::gp(err));
            }
        }
        if self.s.mode.long && desc.l != 0 && desc.db != 0 {
            return Err(Exception::gp(err));
        }
        if desc.present == 0 {
            return Err(Exception::np(err));
        }
        Ok(())
    }

    /// Clears data segment registers whose DPL is below the new, less privileged `cpl`
    /// (after a return to an outer level).
    pub(crate) fn invalidate_segments_for(&mut self, cpl: u8) {
        for seg in [super::state::ES, super::state::DS, FS, GS] {
            let s = &mut self.s.seg[seg];
            let conforming_code =
                s.type_ & (TYPE_CODE | TYPE_CODE_CONFORMING) == (TYPE_CODE | TYPE_CODE_CONFORMING);
            if s.unusable == 0 && s.dpl < cpl && !conforming_code {
                s.selector = 0;
                s.unusable = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xaaaa_aaaa_aaaa_aaaa));
    }

    #[test]
    fn decodes_flat_descriptors() {
        let code64 = from_descriptor(0x10, 0x00af_9b00_0000_ffff);
        assert_eq!(
            (code64.l, code64.db, code64.type_, code64.dpl),
            (1, 0, 0xb, 0)
        );
        assert_eq!(code64.limit, 0xffff_ffff);
        let data = from_descriptor(0x18, 0x00cf_9300_0000_ffff);
        assert_eq!((data.db, data.type_, data.present), (1, 3, 1));
        let tss = from_descriptor(0x40, 0x0000_8b12_3456_0067);
        assert_eq!((tss.base, tss.limit, tss.s), (0x12_3456, 0x67, 0));
    }
}
