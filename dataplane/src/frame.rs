//! [`Frame`]: one Ethernet frame owned by the data plane, either a DPDK mbuf or a heap
//! buffer (the in-memory wire, and frames copied for steering).

use core::fmt;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// One Ethernet frame. Dropping it returns its buffer (an mbuf goes back to its pool).
pub struct Frame {
    repr: Repr,
}

enum Repr {
    Heap(Vec<u8>),
    Mbuf {
        mbuf: NonNull<dpdk_sys::rte_mbuf>,
        data: NonNull<u8>,
        len: u32,
    },
}

// SAFETY: an mbuf is owned by exactly one Frame; DPDK mempools are multi-producer /
// multi-consumer, so an mbuf may be freed on another thread than the one that got it.
unsafe impl Send for Frame {}

impl Frame {
    /// A frame backed by a heap buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self {
            repr: Repr::Heap(bytes),
        }
    }

    /// Takes ownership of a single-segment mbuf.
    ///
    /// # Safety
    /// `mbuf` must be a valid mbuf owned by the caller; `data`/`len` must describe its
    /// data area.
    pub(crate) unsafe fn from_mbuf(
        mbuf: NonNull<dpdk_sys::rte_mbuf>,
        data: NonNull<u8>,
        len: u32,
    ) -> Self {
        Self {
            repr: Repr::Mbuf { mbuf, data, len },
        }
    }

    /// Gives the mbuf back to the caller (for `tx_burst`), or `Err(self)` for a heap frame.
    pub(crate) fn into_mbuf(self) -> Result<NonNull<dpdk_sys::rte_mbuf>, Frame> {
        match self.repr {
            Repr::Mbuf { mbuf, .. } => {
                core::mem::forget(self);
                Ok(mbuf)
            }
            Repr::Heap(_) => Err(self),
        }
    }

    /// Shortens the frame to `len` bytes (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        match &mut self.repr {
            Repr::Heap(v) => v.truncate(len),
            Repr::Mbuf { mbuf, len: l, .. } => {
                if (len as u32) < *l {
                    // SAFETY: we own the mbuf and len < its data length.
                    unsafe { dpdk_sys::tlsa_mbuf_trim_to(mbuf.as_ptr(), len as u16) };
                    *l = len as u32;
                }
            }
        }
    }

    /// Copies the frame into a heap buffer, e.g. to hand it to another core.
    pub fn to_heap(&self) -> Frame {
        Frame::from_vec(self.to_vec())
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.repr {
            Repr::Heap(v) => v,
            // SAFETY: data/len describe the mbuf's data area, which lives as long as we own it.
            Repr::Mbuf { data, len, .. } => unsafe {
                core::slice::from_raw_parts(data.as_ptr(), *len as usize)
            },
        }
    }
}

impl DerefMut for Frame {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.repr {
            Repr::Heap(v) => v,
            // SAFETY: as above, and we own the mbuf exclusively.
            Repr::Mbuf { data, len, .. } => unsafe {
                core::slice::from_raw_parts_mut(data.as_ptr(), *len as usize)
            },
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Repr::Mbuf { mbuf, .. } = self.repr {
            // SAFETY: we own the mbuf; it returns to its pool.
            unsafe { dpdk_sys::tlsa_mbuf_free(mbuf.as_ptr()) };
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.repr {
            Repr::Heap(_) => "heap",
            Repr::Mbuf { .. } => "mbuf",
        };
        write!(f, "Frame({kind}, {} bytes)", self.len())
    }
}
