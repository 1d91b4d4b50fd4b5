//! The cache of decoded basic blocks.
//!
//! A block is the run of instructions from one entry point to the next control transfer (or
//! a mode-changing instruction, or the end of a page). Blocks are keyed by linear address,
//! CS base and code size, found first through a small direct-mapped cache and then a hash map,
//! and checked against the generation of the RAM pages their bytes came from, so a store to
//! decoded code (by any vCPU) makes them be decoded again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::{Decoder, DecoderError, DecoderOptions};

use super::decode::{lower, Flow};
use super::fault::Result;
use super::insn::Insn;
use super::jit::{self, Stamps};
use super::state::CS;
use super::Core;

/// Most instructions in one block.
const MAX_INSNS: usize = 64;
/// Entries in the direct-mapped cache of recent block lookups.
const JUMP_CACHE: usize = 4096;
/// Past this many blocks the whole cache is dropped and rebuilt on demand.
const MAX_BLOCKS: usize = 1 << 16;

/// A remembered lookup of the block at (`lin`, `cs_base`, `code_bits`): a block's recent
/// successors and the entries of the jump cache. Valid while its stamp is current.
#[derive(Clone, Copy)]
struct Link {
    lin: u64,
    cs_base: u64,
    /// The [`Stamps`] value it is valid for (its global one when `global`).
    stamp: u64,
    code_bits: u32,
    block: u32,
    global: bool,
}

impl Link {
    /// Matches nothing.
    const NONE: Link = Link {
        lin: u64::MAX,
        cs_base: 0,
        stamp: 0,
        code_bits: 0,
        block: 0,
        global: false,
    };

    /// Whether this leads to the block at `lin`, `cs_base`, `code_bits`, still valid now.
    #[inline(always)]
    fn leads_to(&self, lin: u64, cs_base: u64, code_bits: u32, stamps: &Stamps) -> bool {
        self.lin == lin
            && self.stamp == stamps.current(self.global)
            && self.cs_base == cs_base
            && self.code_bits == code_bits
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::NONE
    }
}

/// The hasher of the block map: its keys are a few machine words that need no protection
/// from chosen collisions (SipHash was a visible part of a boot), so each word is mixed in
/// with a multiply.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // The map takes buckets from the low bits: fold the well-mixed high ones in.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        // The constant of Fibonacci hashing; the rotation brings high bits down, where the
        // map takes its bucket index from.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A decoded basic block.
#[derive(Default)]
pub struct Block {
    /// The instructions.
    pub insns: Box<[Insn]>,
    /// The last two distinct blocks that ran after this one (its branch targets, mostly).
    successors: [Link; 2],
    /// RAM pages the bytes came from, with their generation at decode time.
    pages: [(u32, u32); 2],
    /// The linear pages through which `pages` were reached.
    lin_pages: [u64; 2],
    npages: usize,
    /// Host address of the first byte (identifies the physical page it was decoded from).
    host: usize,
    /// Times it ran before being translated.
    runs: u32,
    /// Its translation, once it has run often.
    jit: Option<jit::Code>,
}

/// Decoded blocks of one vCPU.
pub struct BlockCache {
    blocks: Vec<Block>,
    map: HashMap<(u64, u64, u32), u32, BuildHasherDefault<KeyHasher>>,
    /// Recent lookups, direct-mapped by linear address.
    jump: Box<[Link]>,
    /// The translator for hot blocks.
    jit: jit::Jit,
    /// The exit of translated code that asked to be linked to the next block run.
    link_request: Option<jit::LinkRequest>,
    /// Translated code declined to run the instruction at RIP: the next block runs in the
    /// interpreter.
    interpret_next: bool,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache::new(jit::JitOptions::default())
    }
}

impl BlockCache {
    /// An empty cache that translates hot blocks as `jit` says.
    pub(crate) fn new(jit: jit::JitOptions) -> Self {
        BlockCache {
            blocks: Vec::new(),
            map: HashMap::default(),
            jump: vec![Link::NONE; JUMP_CACHE].into_boxed_slice(),
            jit: jit::Jit::new(jit),
            link_request: None,
            interpret_next: false,
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

    /// Whether every linear page of `block` is mapped by a cached global fetch translation
    /// (so CR3 loads leave what was cached about it valid).
    fn reached_globally(&self, block: &Block) -> bool {
        let user = self.user();
        block.lin_pages[..block.npages]
            .iter()
            .all(|&p| self.tlb.fetch_is_global(p, user))
    }

    /// Whether the linear pages of `block` beyond its first still map the RAM pages it was
    /// decoded from (the first one's host address is compared by the caller).
    fn block_mapped(&mut self, block: &Block) -> bool {
        let user = self.user();
        (1..block.npages).all(|i| {
            matches!(self.fetch_host(block.lin_pages[i], user),
                Ok(Some((_, page))) if page == block.pages[i].0)
        })
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
        let stamps = Stamps::of(core);
        let from = previous.and_then(|p| self.blocks.get(p as usize));
        if let Some(prev) = from {
            if let Some(s) = prev
                .successors
                .iter()
                .find(|s| s.leads_to(lin, cs_base, code_bits, &stamps))
            {
                return Ok(s.block);
            }
        }
        let link = self.lookup(core, lin, cs_base, code_bits, &stamps)?;
        if let Some(prev) = previous.and_then(|p| self.blocks.get_mut(p as usize)) {
            // Keep the most recent successor first.
            prev.successors[1] = prev.successors[0];
            prev.successors[0] = link;
        }
        Ok(link.block)
    }

    /// The jump-cache and hash-map lookup behind [`BlockCache::find`], decoding on a miss.
    fn lookup(
        &mut self,
        core: &mut Core,
        lin: u64,
        cs_base: u64,
        code_bits: u32,
        stamps: &Stamps,
    ) -> Result<Link> {
        let slot = (lin as usize ^ (lin >> 12) as usize) & (JUMP_CACHE - 1);
        let e = self.jump[slot];
        if e.leads_to(lin, cs_base, code_bits, stamps) {
            return Ok(e);
        }
        let user = core.user();
        let Some((host, page)) = core.fetch_host(lin, user)? else {
            return Err(core.execute_mmio(lin));
        };
        let key = (lin, cs_base, code_bits);
        // A stale jump-cache entry for this key still names the key's block (blocks are
        // replaced in place), which is checked below like one from the map: no map probe.
        let same_key = e.lin == lin && e.cs_base == cs_base && e.code_bits == code_bits;
        let known = if same_key {
            Some(e.block)
        } else {
            self.map.get(&key).copied()
        };
        let idx = match known {
            Some(idx)
                if core.block_current(&self.blocks[idx as usize])
                    && self.blocks[idx as usize].host == host
                    && core.block_mapped(&self.blocks[idx as usize]) =>
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
                            self.blocks.clear();
                            self.map.clear();
                            self.jump.fill(Link::NONE);
                            self.jit.reset();
                            self.link_request = None;
                        }
                        let idx = self.blocks.len() as u32;
                        self.blocks.push(block);
                        self.map.insert(key, idx);
                        idx
                    }
                }
            }
        };
        let block = &self.blocks[idx as usize];
        let global = core.reached_globally(block);
        let link = Link {
            lin,
            cs_base,
            stamp: stamps.current(global),
            code_bits,
            block: idx,
            global,
        };
        self.jump[slot] = link;
        Ok(link)
    }

    /// Runs block `idx` on `core`, at most `limit` instructions of it: returns when it ends
    /// or an instruction faults (the fault is delivered). A whole block (`limit` covers it)
    /// of 64-bit code that has run often is translated first and then runs as host code,
    /// which may go on into other translated blocks up to `budget` times; the result is how
    /// many blocks beyond the first that took.
    pub(crate) fn run(&mut self, idx: u32, core: &mut Core, limit: usize, budget: u64) -> u64 {
        let request = self.link_request.take();
        let interpret = std::mem::take(&mut self.interpret_next);
        let Some(block) = self.blocks.get_mut(idx as usize) else {
            return 0;
        };
        core.end_block = false;
        let whole = limit >= block.insns.len() && !interpret;
        if whole && block.jit.is_none() && self.jit.enabled() && core.s.mode.code_bits == 64 {
            block.runs += 1;
            if block.runs == self.jit.hot_threshold {
                self.translate(idx, core);
            }
        }
        let block = &self.blocks[idx as usize];
        if let Some(code) = block.jit.filter(|&c| whole && self.jit.is_current(c)) {
            let stamps = Stamps::of(core);
            if let Some(request) = request {
                let page = (block.npages == 1).then_some(block.lin_pages[0]);
                let global = core.reached_globally(block);
                self.jit.link(request, code, core, page, &stamps, global);
            }
            core.chain_stamp = stamps.any;
            core.loop_budget = budget.max(1);
            // SAFETY: the code is from the current arena generation.
            let exit = unsafe { code.run(core) };
            self.link_request = self.jit.take_request(core);
            let chained = budget.max(1) - core.loop_budget.max(1);
            match exit {
                jit::JitExit::Declined => {
                    // Nothing ran from RIP on, which may be in another block of the chain:
                    // the dispatcher finds that block, and the interpreter runs it.
                    self.interpret_next = true;
                    return chained;
                }
                jit::JitExit::Panicked => {
                    if let Some(payload) = jit::take_panic() {
                        std::panic::resume_unwind(payload);
                    }
                    return 0;
                }
                _ => return chained,
            }
        }
        for insn in block.insns.iter().take(limit) {
            core.s.rip = insn.next;
            if let Err(e) = (insn.exec)(core, insn) {
                core.fault_at(insn);
                core.raise(e);
                break;
            }
            if core.end_block {
                core.end_block = false;
                break;
            }
        }
        0
    }

    /// Translates block `idx`; when the code arena is full, every translation is dropped
    /// and the arena starts again.
    fn translate(&mut self, idx: u32, core: &Core) {
        let page = self.blocks[idx as usize].lin_pages[0];
        let mut code = self
            .jit
            .translate(core, &self.blocks[idx as usize].insns, page);
        if code.is_none() && self.jit.enabled() {
            // Every block warms up again: one that stayed past the threshold would never be
            // translated again.
            for b in &mut self.blocks {
                b.jit = None;
                b.runs = 0;
            }
            self.jit.reset();
            self.link_request = None;
            code = self
                .jit
                .translate(core, &self.blocks[idx as usize].insns, page);
        }
        self.blocks[idx as usize].jit = code;
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
    /// page `first`. Direct JMPs and CALLs do not end a block: decoding goes on at their
    /// target when it lies on a page the block already uses or there is room for one more.
    fn translate(&mut self, lin: u64, code_bits: u32, host: usize, first: u32) -> Result<Block> {
        let user = self.user();
        let mut pages = BlockPages {
            pages: [(first, self.code.mark(first)), (0, 0)],
            lin: [lin & !0xfff, 0],
            len: 1,
        };
        let ip_mask = match code_bits {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        let mut insns = Vec::with_capacity(8);
        let mut ins = iced_x86::Instruction::default();
        let mut buf = [0u8; MAX_INSNS * 15 + 16];
        let (mut at_lin, mut at_host) = (lin, host);
        'segments: loop {
            let in_page = 0x1000 - (at_lin & 0xfff) as usize;
            // Enough bytes for a block of the longest instructions, within the page.
            let mut avail = in_page.min(MAX_INSNS * 15);
            // SAFETY: `at_host..at_host+avail` lies in the rest of one RAM page of a live
            // mapping.
            unsafe { std::ptr::copy_nonoverlapping(at_host as *const u8, buf.as_mut_ptr(), avail) };
            let mut second_fault = None;
            if in_page < 15 {
                // An instruction may continue on the next page.
                let next = at_lin.wrapping_add(in_page as u64);
                match self.fetch_host(next, user) {
                    Ok(Some((host2, page))) if pages.add(self, next, page) => {
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
                    Ok(_) => {}
                    Err(e) => second_fault = Some(e),
                }
            }
            let rip = if code_bits == 64 {
                at_lin
            } else {
                at_lin.wrapping_sub(self.s.seg[CS].base) & ip_mask
            };
            let mut decoder = Decoder::with_ip(code_bits, &buf[..avail], rip, DecoderOptions::NONE);
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
                    break 'segments;
                }
                let (mut insn, flow) = lower(&ins, code_bits, self.cpuid.simd());
                insn.next &= ip_mask;
                let end = at + ins.len();
                insns.push(insn);
                if flow == Flow::End {
                    match self.direct_target(&ins, ip_mask, &mut pages) {
                        Some((target_lin, target_host)) if insns.len() < MAX_INSNS => {
                            at_lin = target_lin;
                            at_host = target_host;
                            continue 'segments;
                        }
                        _ => break 'segments,
                    }
                }
                if end >= in_page {
                    break 'segments;
                }
            }
            break;
        }
        Ok(Block {
            insns: insns.into_boxed_slice(),
            successors: Default::default(),
            pages: pages.pages,
            lin_pages: pages.lin,
            npages: pages.len,
            host,
            runs: 0,
            jit: None,
        })
    }

    /// Where a direct JMP or CALL in a block goes, if decoding can follow it: its linear
    /// address and host address, on a RAM page the block uses or can still take.
    fn direct_target(
        &mut self,
        ins: &iced_x86::Instruction,
        ip_mask: u64,
        pages: &mut BlockPages,
    ) -> Option<(u64, usize)> {
        use iced_x86::{Mnemonic, OpKind};
        if !matches!(ins.mnemonic(), Mnemonic::Jmp | Mnemonic::Call)
            || !matches!(
                ins.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            )
        {
            return None;
        }
        let target = ins.near_branch_target() & ip_mask;
        let lin = if self.s.mode.code_bits == 64 {
            if !super::segment::is_canonical(target) {
                return None;
            }
            target
        } else {
            if self.s.mode.protected && target > u64::from(self.s.seg[CS].limit) {
                return None;
            }
            self.s.seg[CS].base.wrapping_add(target) & 0xffff_ffff
        };
        // A target that cannot be fetched now faults when it runs, not here.
        let (host, page) = self.fetch_host(lin, self.user()).ok()??;
        pages.add(self, lin, page).then_some((lin, host))
    }
}

/// The RAM pages a block is decoded from (at most two), with their generations and the
/// linear pages they were reached through.
struct BlockPages {
    pages: [(u32, u32); 2],
    lin: [u64; 2],
    len: usize,
}

impl BlockPages {
    /// Makes RAM page `page`, reached at linear `lin`, one of the block's pages; false when
    /// the block has no room for another page.
    fn add(&mut self, core: &Core, lin: u64, page: u32) -> bool {
        let lin_page = lin & !0xfff;
        if self.pages[..self.len]
            .iter()
            .zip(&self.lin)
            .any(|(&(p, _), &l)| p == page && l == lin_page)
        {
            return true;
        }
        if self.len == self.pages.len() {
            return false;
        }
        self.pages[self.len] = (page, core.code.mark(page));
        self.lin[self.len] = lin_page;
        self.len += 1;
        true
    }
}
