//! Giving the pages of a socket's empty buffers back to the kernel.
//!
//! smoltcp fixes a socket's buffers for its life (it has no call to swap or shrink
//! them), so a 64 KiB buffer stays allocated while its connection sits idle. It only
//! takes memory in the pages that were written, but the handshake writes some and a
//! recycled allocation may have been written whole. When both of a socket's rings are
//! empty, nothing in them is ever read before it is written again (a ring reads only
//! what it holds), so the whole pages inside each buffer can go back to the kernel with
//! `madvise(MADV_DONTNEED)`: they read as zeros when next touched, which costs a page
//! fault then. The partial pages at either end of a buffer are shared with the
//! allocator's own headers and stay.

/// The page-aligned inside of each of a socket's two buffers.
pub(crate) struct BufPages {
    ranges: [(usize, usize); 2],
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
    /// Records where `rx` and `tx` lie. The vectors are then handed to the socket,
    /// which keeps their heap storage where it is for its whole life.
    pub(crate) fn of(rx: &[u8], tx: &[u8]) -> Self {
        let page = page_size();
        Self {
            ranges: [inside(rx, page), inside(tx, page)],
        }
    }

    /// Bytes this gives back at most.
    pub(crate) fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// Gives the pages back.
    ///
    /// # Safety
    /// Both buffers must still be alive (their socket not dropped), both of its rings
    /// empty, and nothing may hold a reference into them during the call.
    pub(crate) unsafe fn give_back(&self) {
        for &(addr, len) in &self.ranges {
            if len == 0 {
                continue;
            }
            // SAFETY: [addr, addr + len) lies inside a live heap allocation of
            // private anonymous memory (the caller's promise), page-aligned by
            // construction. MADV_DONTNEED only makes those pages read as zeros
            // later; the ring holds no byte there that it will read back.
            let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            if rc != 0 {
                log::debug!(
                    "madvise(MADV_DONTNEED) on a socket buffer failed: {}",
                    std::io::Error::last_os_error()
                );
            }
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
        assert!(
            n >= page,
            "a 3-page buffer holds at least 2 whole pages minus partials"
        );
        assert_eq!(inside(&v[..10], page).1, 0, "10 bytes hold no whole page");
    }

    #[test]
    fn given_back_pages_read_as_zeros_and_stay_usable() {
        let page = page_size();
        let mut rx = vec![7u8; 8 * page];
        let tx = vec![9u8; 8 * page];
        let p = BufPages::of(&rx, &tx);
        assert!(p.len() >= 2 * 6 * page);
        // SAFETY: both vectors are alive and nothing borrows them during the call.
        unsafe { p.give_back() };
        let (a, n) = p.ranges[0];
        let off = a - rx.as_ptr() as usize;
        assert!(
            rx[off..off + n].iter().all(|&b| b == 0),
            "pages read as zeros"
        );
        if off > 0 {
            assert_eq!(rx[0], 7, "the partial first page stays");
        }
        rx[off] = 1;
        assert_eq!(rx[off], 1, "a given-back page can be written again");
    }
}
