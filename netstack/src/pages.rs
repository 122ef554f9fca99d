//! Giving the pages of a socket's empty buffers back to the kernel.
//!
//! smoltcp fixes a socket's buffers for its life (it has no call to swap or shrink
//! them), so a 64 KiB buffer stays allocated while its connection sits idle. It only
//! takes memory in the pages that were written, but a handshake's flight or a response
//! writes some, and a recycled allocation may have been written whole. When the send
//! ring is empty, nothing in it is ever read before it is written again (the ring keeps
//! exactly the unsent and unacknowledged bytes, all counted by `send_queue`), so the whole
//! pages inside it can go back to the kernel with `madvise(MADV_DONTNEED)`: they read as
//! zeros when next touched, which costs a page fault then. The partial pages at either
//! end are shared with the allocator's own headers and stay.
//!
//! The receive ring is the same when `recv_queue` is zero and no segment that arrived
//! out of order waits in it beyond those bytes. smoltcp keeps such segments there and
//! offers no view of them (its assembler is private), so the stack follows the
//! sequence numbers itself (the `rxseq` module) and gives receive pages back only when
//! that tells it nothing can be there.

/// Both buffers' pages of one socket.
pub(crate) struct SocketPages {
    pub(crate) rx: BufPages,
    pub(crate) tx: BufPages,
}

/// The page-aligned inside of a socket buffer.
pub(crate) struct BufPages {
    addr: usize,
    len: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// The whole pages inside `buf`: (start address, length), length 0 when none.
fn inside(buf: &[u8], page: usize) -> (usize, usize) {
    let start = buf.as_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let end = (start + buf.len()) / page * page;
    (first, end.saturating_sub(first))
}

impl BufPages {
    /// Records where the buffer `buf` lies. The vector is then handed to the socket,
    /// which keeps its heap storage where it is for its whole life.
    pub(crate) fn of(buf: &[u8]) -> Self {
        let (addr, len) = inside(buf, page_size());
        Self { addr, len }
    }

    /// Bytes this gives back at most.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives the pages back.
    ///
    /// # Safety
    /// The buffer must still be alive (its socket not dropped), hold nothing the
    /// socket will read before writing it again (an empty send ring; an empty receive
    /// ring with no out-of-order segment), and nothing may hold a reference into it
    /// during the call.
    pub(crate) unsafe fn give_back(&self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: [addr, addr + len) lies inside a live heap allocation of private
        // anonymous memory (the caller's promise), page-aligned by construction.
        // MADV_DONTNEED only makes those pages read as zeros later; the ring holds no
        // byte there that it will read back.
        let rc = unsafe {
            libc::madvise(
                self.addr as *mut libc::c_void,
                self.len,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            log::debug!(
                "madvise(MADV_DONTNEED) on a socket buffer failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_takes_only_whole_pages() {
        let page = 4096;
        let v = vec![0u8; 3 * page];
        let (a, n) = inside(&v, page);
        assert_eq!(a % page, 0);
        assert!(a >= v.as_ptr() as usize);
        assert!(a + n <= v.as_ptr() as usize + v.len());
        assert!(n >= page, "a 3-page buffer holds at least one whole page");
        assert_eq!(inside(&v[..10], page).1, 0, "10 bytes hold no whole page");
    }

    #[test]
    fn given_back_pages_read_as_zeros_and_stay_usable() {
        let page = page_size();
        let mut tx = vec![7u8; 8 * page];
        let p = BufPages::of(&tx);
        assert!(p.len() >= 6 * page);
        // SAFETY: the vector is alive and nothing borrows it during the call.
        unsafe { p.give_back() };
        let off = p.addr - tx.as_ptr() as usize;
        assert!(
            tx[off..off + p.len].iter().all(|&b| b == 0),
            "pages read as zeros"
        );
        if off > 0 {
            assert_eq!(tx[0], 7, "the partial first page stays");
        }
        tx[off] = 1;
        assert_eq!(tx[off], 1, "a given-back page can be written again");
    }
}
