//! The first line a host program writes after connecting to `uds_path`: `CONNECT <port>\n`
//! (the word in any case), naming the guest port it wants. It is read one byte at a time, so
//! that nothing after the newline is taken from the stream, and it is bounded.

use std::io::{self, Read};

/// Longest line accepted, newline included (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_LINE: usize = 32;

/// How far reading the line has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStatus {
    /// No newline yet; more bytes may come.
    Incomplete,
    /// A well-formed line naming this guest port.
    Port(u32),
    /// Garbage, a line too long, or the end of the stream: close the connection.
    Invalid,
}

/// The bytes of a `CONNECT` line read so far.
#[derive(Debug, Default)]
pub struct ConnectLine {
    buf: [u8; MAX_LINE],
    len: usize,
}

impl ConnectLine {
    /// Reads what `stream` has of the line, stopping after the newline.
    pub fn read_from(&mut self, stream: &mut impl Read) -> LineStatus {
        loop {
            let mut byte = [0u8];
            match stream.read(&mut byte) {
                Ok(0) => return LineStatus::Invalid,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineStatus::Incomplete,
                Err(_) => return LineStatus::Invalid,
            }
            if self.len == MAX_LINE {
                return LineStatus::Invalid;
            }
            self.buf[self.len] = byte[0];
            self.len += 1;
            if byte[0] == b'\n' {
                return parse(&self.buf[..self.len]).map_or(LineStatus::Invalid, LineStatus::Port);
            }
        }
    }
}

/// The port of a complete line `CONNECT <port>\n` (any case, blanks between the two words,
/// a `\r` before the newline tolerated).
pub fn parse(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).ok()?;
    let (word, port) = line.split_once([' ', '\t'])?;
    let port = port.trim_start_matches([' ', '\t']);
    if !word.eq_ignore_ascii_case("connect") || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_is_case_insensitive_and_the_port_decimal() {
        assert_eq!(parse(b"CONNECT 52\n"), Some(52));
        assert_eq!(parse(b"connect 1024\n"), Some(1024));
        assert_eq!(parse(b"Connect  4294967295\r\n"), Some(u32::MAX));
        for bad in [
            &b"CONNECT 52"[..],
            b"CONNECT\n",
            b"CONNECT \n",
            b"CONNECT 4294967296\n",
            b"CONNECT -1\n",
            b"CONNECT +5\n",
            b"CONNECT 5 6\n",
            b"CONNEC 5\n",
            b"OPEN 5\n",
            b"CONNECT 0x10\n",
            b"\xffCONNECT 5\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn reading_stops_at_the_newline() {
        let mut line = ConnectLine::default();
        let mut stream: &[u8] = b"CONNECT 5\nhello";
        assert_eq!(line.read_from(&mut stream), LineStatus::Port(5));
        assert_eq!(
            stream, b"hello",
            "the data after the line stays in the stream"
        );
    }

    #[test]
    fn garbage_end_of_stream_and_long_lines_are_invalid() {
        let mut stream: &[u8] = b"CONNECT 5";
        assert_eq!(
            ConnectLine::default().read_from(&mut stream),
            LineStatus::Invalid,
            "the stream ended before the newline"
        );
        let long = [b'7'; 64];
        let mut stream: &[u8] = &long;
        assert_eq!(
            ConnectLine::default().read_from(&mut stream),
            LineStatus::Invalid
        );
        let mut stream: &[u8] = b"GET / HTTP/1.0\n";
        assert_eq!(
            ConnectLine::default().read_from(&mut stream),
            LineStatus::Invalid
        );
    }
}
