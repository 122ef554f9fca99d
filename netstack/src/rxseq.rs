//! Knowing that smoltcp holds no out-of-order segment in a receive buffer.
//!
//! smoltcp stores a segment that arrives ahead of the next expected byte in the
//! receive ring beyond the bytes `recv_queue` counts, and keeps the ranges in an
//! assembler it does not show. Before the pages of an empty-looking receive ring go
//! back to the kernel, the stack must know there is nothing there. It follows each
//! connection's receive sequence space from outside, from what it hands smoltcp:
//!
//! - `next`, the next byte smoltcp expects: the peer's SYN sequence number plus one
//!   when smoltcp took the SYN, then plus every byte that became readable while a
//!   segment was processed (`recv_queue` after minus before: smoltcp only adds to its
//!   ring there, and only what is in order);
//! - `max_end`, the furthest sequence number any segment given to smoltcp reached.
//!
//! Every range the assembler can hold lies in `[next, max_end)`, so `max_end == next`
//! means the assembler is empty. Every doubt keeps the buffer: an unknown start (the
//! stack did not see the SYN taken), a FIN or RST, a segment smoltcp refused (it
//! still moves `max_end`, which then waits for `next` to catch up).

use dataplane::wire::TcpHeader;

const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// Further than any receive window smoltcp advertises (at most 2^30 with window
/// scaling): a segment ending this far ahead cannot have been stored.
const FAR: u32 = 1 << 30;

/// A connection's receive sequence space as far as the stack knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RxSeq {
    next: u32,
    /// Always in `[next, next + FAR)`.
    max_end: u32,
}

impl RxSeq {
    /// No segment beyond the next expected byte can be in the receive buffer.
    pub(crate) fn nothing_out_of_order(&self) -> bool {
        self.max_end == self.next
    }
}

/// The knowledge after smoltcp processed `seg`. `opened`: the segment moved the socket
/// out of LISTEN or SYN-SENT (smoltcp took its SYN); `readable`: how many bytes
/// `recv_queue` grew by while it was processed.
pub(crate) fn after(
    prev: Option<RxSeq>,
    seg: &TcpHeader,
    opened: bool,
    readable: usize,
) -> Option<RxSeq> {
    if seg.flags & (FIN | RST) != 0 {
        return None;
    }
    let readable = u32::try_from(readable).ok().filter(|&r| r < FAR)?;
    let syn = u32::from(seg.flags & SYN != 0);
    let mut r = if opened && syn == 1 {
        let start = seg.seq.wrapping_add(1);
        RxSeq {
            next: start,
            max_end: start,
        }
    } else {
        prev?
    };
    r.next = r.next.wrapping_add(readable);
    // `next` may pass `max_end` (a segment that filled a hole and more).
    if r.max_end.wrapping_sub(r.next) >= FAR {
        r.max_end = r.next;
    }
    if seg.payload > 0 {
        let end = seg
            .seq
            .wrapping_add(syn)
            .wrapping_add(u32::from(seg.payload));
        let ahead = end.wrapping_sub(r.next);
        if ahead >= FAR {
            // Behind `next` (a retransmission of bytes already in order), or so far
            // ahead no window reaches it: nothing of it waits in the buffer.
            return Some(r);
        }
        if ahead > r.max_end.wrapping_sub(r.next) {
            r.max_end = end;
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, payload: u16) -> TcpHeader {
        TcpHeader {
            src: [10, 0, 0, 2],
            sport: 1000,
            dport: 443,
            flags,
            seq,
            payload,
        }
    }
    const ACK: u8 = 0x10;

    #[test]
    fn in_order_data_keeps_it_clean() {
        let r = after(None, &seg(SYN, 100, 0), true, 0).unwrap();
        assert!(r.nothing_out_of_order());
        let r = after(Some(r), &seg(ACK, 101, 500), false, 500).unwrap();
        assert!(r.nothing_out_of_order());
        assert_eq!(r.next, 601);
    }

    #[test]
    fn a_segment_ahead_is_remembered_until_the_hole_fills() {
        let r = after(None, &seg(SYN, 100, 0), true, 0);
        let r = after(r, &seg(ACK, 601, 300), false, 0).unwrap();
        assert!(
            !r.nothing_out_of_order(),
            "bytes 601..901 wait in the buffer"
        );
        let r = after(Some(r), &seg(ACK, 101, 200), false, 200).unwrap();
        assert!(!r.nothing_out_of_order(), "301..601 still missing");
        let r = after(Some(r), &seg(ACK, 301, 300), false, 600).unwrap();
        assert!(
            r.nothing_out_of_order(),
            "the hole filled: all 800 readable"
        );
        assert_eq!(r.next, 901);
    }

    #[test]
    fn a_refused_segment_keeps_the_buffer_until_next_passes_it() {
        let r = after(None, &seg(SYN, 0xffff_fff0, 0), true, 0);
        // Ahead of the window: smoltcp refused it (nothing readable), we cannot tell.
        let r = after(
            r,
            &seg(ACK, 0xffff_fff1u32.wrapping_add(70_000), 10),
            false,
            0,
        )
        .unwrap();
        assert!(!r.nothing_out_of_order());
        // Across the wrap: the sequence space is modular.
        let r = after(Some(r), &seg(ACK, 0xffff_fff1, 40_000), false, 40_000).unwrap();
        let r = after(
            Some(r),
            &seg(ACK, 0xffff_fff1u32.wrapping_add(40_000), 30_010),
            false,
            30_010,
        );
        assert!(r.unwrap().nothing_out_of_order());
    }

    #[test]
    fn retransmissions_and_far_segments_change_nothing() {
        let r = after(None, &seg(SYN, 5, 0), true, 0);
        let r = after(r, &seg(ACK, 6, 100), false, 100);
        let r = after(r, &seg(ACK, 6, 100), false, 0).unwrap();
        assert!(r.nothing_out_of_order());
        let r = after(Some(r), &seg(ACK, 6 + FAR + 10, 100), false, 0).unwrap();
        assert!(r.nothing_out_of_order(), "no window reaches that far");
    }

    #[test]
    fn doubt_forgets() {
        assert_eq!(
            after(None, &seg(ACK, 1, 10), false, 10),
            None,
            "no SYN seen"
        );
        let r = after(None, &seg(SYN, 1, 0), true, 0);
        assert_eq!(after(r, &seg(ACK | FIN, 2, 0), false, 0), None);
        assert_eq!(after(r, &seg(RST, 2, 0), false, 0), None);
        // A SYN smoltcp did not take (a duplicate, or one on an open connection)
        // does not restart the count.
        let r2 = after(r, &seg(SYN, 999, 0), false, 0);
        assert_eq!(r2, r);
    }

    #[test]
    fn a_syn_with_data_counts_its_bytes_after_the_syn() {
        // smoltcp may drop a SYN's data: then it waits as "ahead" until resent.
        let r = after(None, &seg(SYN, 10, 5), true, 0).unwrap();
        assert!(!r.nothing_out_of_order());
        let r = after(None, &seg(SYN, 10, 5), true, 5).unwrap();
        assert!(r.nothing_out_of_order());
        assert_eq!(r.next, 16);
    }
}
