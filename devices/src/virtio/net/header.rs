//! The virtio-net header that precedes every frame on both queues and on the tap, and the
//! offload features: which ones are offered (only those the tap accepts) and which tap
//! offload flags the features a driver acked ask for.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
};

/// Bytes of `virtio_net_hdr_v1`: with VERSION_1 the header always has `num_buffers`, and the
/// tap is told to use the same size.
pub const HEADER_LEN: usize = 12;
/// The largest frame, header included, that goes either way: a 64 KiB IP packet (what TSO
/// produces at most) in a VLAN-tagged Ethernet frame.
pub const MAX_FRAME: usize = HEADER_LEN + 14 + 4 + 65_535;
/// Offset of `num_buffers` (little-endian u16) in the header.
const NUM_BUFFERS_AT: usize = 10;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Offloads of frames the guest sends: the host side (the tap) checksums and segments them.
const TO_HOST: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN);

/// Which tap offload flag (TUNSETOFFLOAD) each guest receive feature needs: with the flag set
/// the tap hands over frames with partial checksums or larger than the MTU.
const TO_GUEST: [(u64, u32); 4] = [
    (bit(VIRTIO_NET_F_GUEST_CSUM), libc::TUN_F_CSUM),
    (bit(VIRTIO_NET_F_GUEST_TSO4), libc::TUN_F_TSO4),
    (bit(VIRTIO_NET_F_GUEST_TSO6), libc::TUN_F_TSO6),
    (bit(VIRTIO_NET_F_GUEST_ECN), libc::TUN_F_TSO_ECN),
];

/// The tap offload sets worth probing, largest first: everything, then checksums only.
pub const PROBED_OFFLOADS: [u32; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
    libc::TUN_F_CSUM,
];

/// The offload features to offer on a tap that accepted the offload flags `tap_flags`: the
/// guest receive features whose flag it accepted and, if it accepted any, checksum and
/// segmentation offload of what the guest sends (a tap with a vnet header takes those).
pub fn offered_offloads(tap_flags: u32) -> u64 {
    if tap_flags & libc::TUN_F_CSUM == 0 {
        return 0;
    }
    let guest = TO_GUEST
        .iter()
        .filter(|(_, flag)| tap_flags & flag != 0)
        .fold(0, |f, (feature, _)| f | feature);
    let host = if tap_flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
        TO_HOST
    } else {
        bit(VIRTIO_NET_F_CSUM)
    };
    guest | host
}

/// The tap offload flags the driver's `acked` features ask for. Segmentation needs checksum
/// offload (the specification's rule, and the tap's), so without GUEST_CSUM it is none.
pub fn tap_offloads(acked: u64) -> u32 {
    if acked & bit(VIRTIO_NET_F_GUEST_CSUM) == 0 {
        return 0;
    }
    let flags = TO_GUEST
        .iter()
        .filter(|(feature, _)| acked & feature != 0)
        .fold(0, |f, (_, flag)| f | flag);
    if flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) == 0 {
        flags & !libc::TUN_F_TSO_ECN
    } else {
        flags
    }
}

/// Sets `num_buffers` in a frame that starts with its header.
pub fn set_num_buffers(frame: &mut [u8], count: u16) {
    if let Some(field) = frame.get_mut(NUM_BUFFERS_AT..HEADER_LEN) {
        field.copy_from_slice(&count.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = PROBED_OFFLOADS[0];

    #[test]
    fn a_tap_without_offloads_gets_none_offered() {
        assert_eq!(offered_offloads(0), 0);
        // Segmentation without checksums is not a combination a tap accepts.
        assert_eq!(offered_offloads(libc::TUN_F_TSO4), 0);
    }

    #[test]
    fn offers_follow_what_the_tap_accepted() {
        let csum_only = offered_offloads(libc::TUN_F_CSUM);
        assert_eq!(
            csum_only,
            bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM)
        );
        let all = offered_offloads(ALL);
        for f in [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
        ] {
            assert_ne!(all & bit(f), 0, "feature {f} not offered");
        }
    }

    #[test]
    fn the_tap_is_set_from_acked_features_only() {
        // What a Linux driver acks when everything is offered.
        assert_eq!(tap_offloads(offered_offloads(ALL)), ALL);
        // Host-side features alone ask nothing of the tap's receive side.
        assert_eq!(tap_offloads(TO_HOST), 0);
        // TSO without GUEST_CSUM (a broken driver) gives no offload at all.
        assert_eq!(tap_offloads(bit(VIRTIO_NET_F_GUEST_TSO4)), 0);
        // ECN without TSO is dropped.
        let csum_ecn = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_ECN);
        assert_eq!(tap_offloads(csum_ecn), libc::TUN_F_CSUM);
        let csum_tso6 = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO6);
        assert_eq!(tap_offloads(csum_tso6), libc::TUN_F_CSUM | libc::TUN_F_TSO6);
    }

    #[test]
    fn num_buffers_is_little_endian_at_offset_10() {
        let mut frame = [0xffu8; 20];
        set_num_buffers(&mut frame, 0x0102);
        assert_eq!(&frame[8..14], &[0xff, 0xff, 0x02, 0x01, 0xff, 0xff]);
        let mut short = [0u8; 4];
        set_num_buffers(&mut short, 3); // too short for a header: left alone
        assert_eq!(short, [0; 4]);
    }
}
