//! The memory translated code lives in: one fixed mapping per vCPU, filled from the start and
//! emptied all at once when full (the blocks that pointed into it are told first), so that
//! code never moves and the JIT's memory stays within a set size.

use std::ptr::NonNull;

/// Default size of a vCPU's code arena.
pub const DEFAULT_ARENA_BYTES: usize = 64 << 20;

/// A mapping of readable, writable and executable memory, handed out front to back.
pub struct Arena {
    base: NonNull<u8>,
    size: usize,
    used: usize,
    /// Incremented on every reset: code addresses from an older generation are gone.
    generation: u32,
}

// SAFETY: the arena owns its mapping; it is used by one vCPU thread at a time (it lives in
// that vCPU's block cache, which moves with the vCPU between threads only as a whole).
unsafe impl Send for Arena {}

impl Arena {
    /// Maps `size` bytes (rounded up to pages).
    pub fn new(size: usize) -> std::io::Result<Self> {
        let size = size.max(4096).next_multiple_of(4096);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(Arena {
            base,
            size,
            used: 0,
            generation: 0,
        })
    }

    /// Copies `code` in and returns its address, or None when the arena is full.
    pub fn place(&mut self, code: &[u8]) -> Option<usize> {
        let start = self.used.next_multiple_of(16);
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping this arena owns, and no code placed
        // later overlaps code placed earlier (it only grows until a reset).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.as_ptr().add(start), code.len())
        };
        self.used = end;
        Some(self.base.as_ptr() as usize + start)
    }

    /// Where the next code will go (for assembling it at its final address).
    pub fn next_address(&self) -> usize {
        self.base.as_ptr() as usize + self.used.next_multiple_of(16)
    }

    /// Forgets all code. The caller must make sure nothing will run it again.
    pub fn reset(&mut self) {
        self.used = 0;
        self.generation = self.generation.wrapping_add(1);
    }

    /// The current generation (see [`Arena::reset`]).
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no code in it runs any more (the
        // arena is dropped with the vCPU's block cache, after its last run).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_placed_aligned_until_full_then_reset() {
        let mut arena = Arena::new(4096).unwrap();
        let a = arena.place(&[0xc3; 10]).unwrap();
        let b = arena.place(&[0xc3; 10]).unwrap();
        assert_eq!(b - a, 16);
        assert!(arena.place(&[0x90; 5000]).is_none(), "does not fit");
        arena.reset();
        assert_eq!(arena.place(&[0xc3]).unwrap(), a);
        assert_eq!(arena.generation(), 1);
    }
}
