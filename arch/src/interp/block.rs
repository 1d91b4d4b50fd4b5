//! The cache of decoded basic blocks.
//!
//! A block is the run of instructions from one entry point to the next control transfer (or
//! a mode-changing instruction, or the end of a page). Blocks are keyed by linear address,
//! CS base and code size, found first through a small direct-mapped cache and then a hash map,
//! and checked against the generation of the RAM pages their bytes came from, so a store to
//! decoded code (by any vCPU) makes them be decoded again.

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderError, DecoderOptions};

use super::decode::{lower, Flow};
use super::fault::Result;
use super::insn::Insn;
use super::state::CS;
use super::Core;

/// Most instructions in one block.
const MAX_INSNS: usize = 64;
/// Entries in the direct-mapped cache of recent block lookups.
const JUMP_CACHE: usize = 4096;
/// Past this many blocks the whole cache is dropped and rebuilt on demand.
const MAX_BLOCKS: usize = 1 << 16;

/// A block that followed another one, remembered so the next time the lookup is a compare.
#[derive(Clone, Copy, Default)]
struct Successor {
    lin: u64,
    cs_base: u64,
    stamp: u64,
    code_bits: u32,
    block: u32,
}

/// A decoded basic block.
#[derive(Default)]
pub struct Block {
    /// The instructions.
    pub insns: Box<[Insn]>,
    /// The last two distinct blocks that ran after this one (its branch targets, mostly).
    successors: [Successor; 2],
    /// RAM pages the bytes came from, with their generation at decode time.
    pages: [(u32, u32); 2],
    npages: usize,
    /// Host address of the first byte (identifies the physical page it was decoded from).
    host: usize,
}

/// A recent lookup: valid while the TLB (linear-to-physical) and the set of code pages
/// written since (code epoch) are unchanged.
#[derive(Clone, Copy)]
struct JumpEntry {
    lin: u64,
    cs_base: u64,
    epoch: u32,
    code_epoch: u32,
    code_bits: u32,
    block: u32,
}

const NO_ENTRY: JumpEntry = JumpEntry {
    lin: u64::MAX,
    cs_base: 0,
    epoch: 0,
    code_epoch: 0,
    code_bits: 0,
    block: 0,
};

/// Decoded blocks of one vCPU.
pub struct BlockCache {
    blocks: Vec<Block>,
    map: HashMap<(u64, u64, u32), u32>,
    jump: Box<[JumpEntry]>,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            blocks: Vec::new(),
            map: HashMap::new(),
            jump: vec![NO_ENTRY; JUMP_CACHE].into_boxed_slice(),
        }
    }
}

impl Core {
    /// Whether `block` still matches memory: its pages were not written since decoding.
    #[inline(always)]
    fn block_current(&self, block: &Block) -> bool {
        block.pages[..block.npages]
            .iter()
            .all(|&(page, gen)| self.code.generation(page) == gen)
    }
}

impl BlockCache {
    /// The block starting at the vCPU's CS:RIP, decoding it if needed. Errors are faults of
    /// the instruction fetch (#PF).
    pub(crate) fn find(&mut self, core: &mut Core, previous: Option<u32>) -> Result<u32> {
        let cs_base = core.s.seg[CS].base;
        let code_bits = core.s.mode.code_bits;
        let lin = if code_bits == 64 {
            core.s.rip
        } else {
            cs_base.wrapping_add(core.s.rip) & 0xffff_ffff
        };
        let epoch = core.tlb.epoch;
        let code_epoch = core.code.epoch();
        let stamp = (u64::from(epoch) << 32) | u64::from(code_epoch);
        let from = previous.and_then(|p| self.blocks.get(p as usize));
        if let Some(prev) = from {
            for s in &prev.successors {
                if s.lin == lin
                    && s.stamp == stamp
                    && s.cs_base == cs_base
                    && s.code_bits == code_bits
                {
                    return Ok(s.block);
                }
            }
        }
        let idx = self.lookup(core, lin, cs_base, code_bits, epoch, code_epoch)?;
        if let Some(prev) = previous.and_then(|p| self.blocks.get_mut(p as usize)) {
            // Keep the most recent successor first.
            prev.successors[1] = prev.successors[0];
            prev.successors[0] = Successor {
                lin,
                cs_base,
                stamp,
                code_bits,
                block: idx,
            };
        }
        Ok(idx)
    }

    /// The jump-cache and hash-map lookup behind [`BlockCache::find`], decoding on a miss.
    fn lookup(
        &mut self,
        core: &mut Core,
        lin: u64,
        cs_base: u64,
        code_bits: u32,
        epoch: u32,
        code_epoch: u32,
    ) -> Result<u32> {
        let slot = (lin as usize ^ (lin >> 12) as usize) & (JUMP_CACHE - 1);
        let e = self.jump[slot];
        if e.lin == lin
            && e.cs_base == cs_base
            && e.code_bits == code_bits
            && e.epoch == epoch
            && e.code_epoch == code_epoch
        {
            return Ok(e.block);
        }
        let user = core.user();
        let Some((host, page)) = core.fetch_host(lin, user)? else {
            return Err(core.execute_mmio(lin));
        };
        let key = (lin, cs_base, code_bits);
        let idx = match self.map.get(&key).copied() {
            Some(idx)
                if core.block_current(&self.blocks[idx as usize])
                    && self.blocks[idx as usize].host == host =>
            {
                idx
            }
            found => {
                let block = core.translate(lin, code_bits, host, page)?;
                match found {
                    Some(idx) => {
                        self.blocks[idx as usize] = block;
                        idx
                    }
                    None => {
                        if self.blocks.len() >= MAX_BLOCKS {
                            *self = BlockCache::default();
                        }
                        let idx = self.blocks.len() as u32;
                        self.blocks.push(block);
                        self.map.insert(key, idx);
                        idx
                    }
                }
            }
        };
        self.jump[slot] = JumpEntry {
            lin,
            cs_base,
            epoch,
            code_epoch,
            code_bits,
            block: idx,
        };
        Ok(idx)
    }

    /// Runs block `idx` on `core`: returns when it ends or an instruction faults (the fault
    /// is delivered).
    pub(crate) fn run(&self, idx: u32, core: &mut Core) {
        let Some(block) = self.blocks.get(idx as usize) else {
            return;
        };
        core.end_block = false;
        for insn in block.insns.iter() {
            core.s.rip = insn.next;
            if let Err(e) = (insn.exec)(core, insn) {
                let mask = match core.s.mode.code_bits {
                    64 => u64::MAX,
                    32 => 0xffff_ffff,
                    _ => 0xffff,
                };
                core.s.rip = insn.next.wrapping_sub(u64::from(insn.len)) & mask;
                core.end_block = false;
                core.raise(e);
                break;
            }
            if core.end_block {
                core.end_block = false;
                break;
            }
        }
    }
}

impl Core {
    /// An instruction fetch from outside RAM: the VM cannot go on.
    fn execute_mmio(&mut self, lin: u64) -> super::fault::Exception {
        self.shutdown = Some(format!(
            "instruction fetch from non-RAM address (linear {lin:#x})"
        ));
        // Whatever is raised is discarded: the shutdown stops the vCPU first.
        super::fault::Exception::gp0()
    }

    /// Decodes the block at linear `lin` whose first byte is at host address `host`, in RAM
    /// page `first`.
    fn translate(&mut self, lin: u64, code_bits: u32, host: usize, first: u32) -> Result<Block> {
        let user = self.user();
        let gen0 = self.code.mark(first);
        let in_page = 0x1000 - (lin & 0xfff) as usize;
        let mut buf = [0u8; 0x1000 + 16];
        // SAFETY: `host..host+in_page` is the rest of one RAM page of a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(host as *const u8, buf.as_mut_ptr(), in_page) };
        let mut avail = in_page;
        let mut pages = [(first, gen0), (0, 0)];
        let mut npages = 1;
        let mut second_fault = None;
        if in_page < 15 {
            let next = lin.wrapping_add(in_page as u64);
            match self.fetch_host(next, user) {
                Ok(Some((host2, page))) => {
                    pages[1] = (page, self.code.mark(page));
                    npages = 2;
                    // SAFETY: 16 bytes at the start of a RAM page of a live mapping.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            host2 as *const u8,
                            buf[in_page..].as_mut_ptr(),
                            16,
                        )
                    };
                    avail += 16;
                }
                Ok(None) => {}
                Err(e) => second_fault = Some(e),
            }
        }
        let rip = self.s.rip;
        let mut decoder = Decoder::with_ip(code_bits, &buf[..avail], rip, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(8);
        let mut ins = iced_x86::Instruction::default();
        let ip_mask = match code_bits {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        while decoder.can_decode() && insns.len() < MAX_INSNS {
            let at = decoder.position();
            decoder.decode_out(&mut ins);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                // The instruction continues on a page we could not read.
                if insns.is_empty() {
                    if let Some(e) = second_fault {
                        return Err(e);
                    }
                }
                break;
            }
            let (mut insn, flow) = lower(&ins, code_bits);
            insn.next &= ip_mask;
            let crosses = at + ins.len() > in_page;
            insns.push(insn);
            if flow == Flow::End || crosses || at + ins.len() >= in_page {
                break;
            }
        }
        if insns.is_empty() {
            // Nothing decodable within the page: let the fetch fault decide.
            if let Some(e) = second_fault {
                return Err(e);
            }
        }
        Ok(Block {
            insns: insns.into_boxed_slice(),
            successors: Default::default(),
            pages,
            npages,
            host,
        })
    }
}
