//! A fixed-size byte ring: the bytes a connection received from the guest that its host
//! socket has not taken yet. Its storage is allocated once, when the connection is made.

use std::io::{self, Write};

/// Bytes waiting for a writer, oldest first, in a buffer that never grows.
pub struct Ring {
    buf: Box<[u8]>,
    /// Index of the oldest byte.
    start: usize,
    /// Bytes held.
    len: usize,
}

impl Ring {
    /// An empty ring of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Ring {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            len: 0,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that still fit.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends as much of `data` as fits; returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let cap = self.buf.len();
        let end = (self.start + self.len) % cap.max(1);
        let first = n.min(cap - end);
        self.buf[end..end + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    /// Writes the held bytes, oldest first, to `out` until it would block or the ring is
    /// empty; returns how many were written. An error other than would-block is returned
    /// only if nothing was written.
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        while self.len > 0 {
            let chunk = self.len.min(self.buf.len() - self.start);
            match out.write(&self.buf[self.start..self.start + chunk]) {
                Ok(0) => break,
                Ok(n) => {
                    self.start = (self.start + n) % self.buf.len();
                    self.len -= n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if written == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if self.len == 0 {
            self.start = 0;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then would block.
    struct Slow {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let mut ring = Ring::new(8);
        assert_eq!(ring.push(b"abcdef"), 6);
        let mut out = Slow {
            room: 4,
            got: Vec::new(),
        };
        assert_eq!(ring.write_to(&mut out).unwrap(), 4);
        assert_eq!(ring.free(), 6);
        assert_eq!(ring.push(b"ghijklmn"), 6, "only what fits");
        assert_eq!(ring.free(), 0);
        out.room = 100;
        assert_eq!(ring.write_to(&mut out).unwrap(), 8);
        assert_eq!(out.got, b"abcdefghijkl");
        assert!(ring.is_empty());
    }

    #[test]
    fn a_broken_writer_is_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut ring = Ring::new(4);
        ring.push(b"ab");
        assert!(ring.write_to(&mut Broken).is_err());
        assert_eq!(
            ring.write_to(&mut Slow {
                room: 0,
                got: vec![]
            })
            .unwrap(),
            0
        );
    }
}
