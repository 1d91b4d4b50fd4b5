//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, 44 little-endian bytes with no
//! padding) that starts every packet on the rx and tx queues, and the values of its fields.

/// Bytes of the header.
pub const HEADER_LEN: usize = 44;
/// The host's context ID: the only destination the guest can reach through this device.
pub const HOST_CID: u64 = 2;
/// `type` of a stream socket, the only kind this device carries.
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// What a packet asks for (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Open a connection.
    Request = 1,
    /// Accept a connection.
    Response = 2,
    /// Refuse or abort a connection.
    Rst = 3,
    /// The sender stops receiving and/or sending (the flags say which).
    Shutdown = 4,
    /// Stream data.
    Rw = 5,
    /// The sender's `buf_alloc` and `fwd_cnt`, unasked or in answer to a credit request.
    CreditUpdate = 6,
    /// Asks the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation with code `op`, if there is one.
    pub fn from_code(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// One packet header, field by field. Any 44 bytes parse; what the fields mean is checked
/// by whoever reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Sender's context ID.
    pub src_cid: u64,
    /// Receiver's context ID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Bytes of payload after the header.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub kind: u16,
    /// Operation code (see [`Op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN's [`SHUTDOWN_RCV`] and [`SHUTDOWN_SEND`]).
    pub flags: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has taken out of that buffer so far (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// Reads a header from its wire form.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header's wire form.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The operation, if the code is one.
    pub fn operation(&self) -> Option<Op> {
        Op::from_code(self.op)
    }

    /// An RST answering `self`: the same type, the addresses swapped, no credit.
    pub fn reset_reply(&self) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: self.kind,
            op: Op::Rst as u16,
            ..Header::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_has_the_specified_layout() {
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 0x1122_3344,
            dst_port: 52,
            len: 7,
            kind: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: SHUTDOWN_SEND,
            buf_alloc: 0x40000,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&b[24..28], &7u32.to_le_bytes());
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(&b[40..44], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn only_known_codes_are_operations() {
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(7), Some(Op::CreditRequest));
        assert_eq!(Op::from_code(8), None);
        assert_eq!(Op::from_code(u16::MAX), None);
    }

    #[test]
    fn a_reset_reply_swaps_the_addresses() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 52,
            len: 9,
            kind: 2,
            op: Op::Request as u16,
            buf_alloc: 5,
            ..Header::default()
        };
        let r = h.reset_reply();
        assert_eq!((r.src_cid, r.dst_cid), (2, 3));
        assert_eq!((r.src_port, r.dst_port), (52, 1000));
        assert_eq!(
            (r.kind, r.operation(), r.len, r.buf_alloc),
            (2, Some(Op::Rst), 0, 0)
        );
    }
}
