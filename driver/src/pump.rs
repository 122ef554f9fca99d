//! The engine-to-socket pump: TLS bytes from a transport into an engine, and the
//! engine's output back to the transport. It exists once; the appliance's server
//! side, its client side towards backends and loadgen's own engine all use it.
//!
//! A [`Transport`] is anything with a non-blocking byte stream: a `netstack` (smoltcp)
//! TCP socket here, a kernel socket in loadgen. A [`TlsWire`] is either role of the
//! `tls` engine. Plaintext is the caller's business (where it goes differs per
//! connection kind); so is driving the engine's state machine (`process`).

use std::io;

use netstack::TcpSocket;

/// A non-blocking byte stream.
pub trait Transport {
    /// Offers at most `max` received bytes to `take`, which returns how many it used;
    /// returns that count (0: nothing to read now). A transport that can only learn
    /// of the peer's end by reading (a kernel socket) reports it as
    /// `ErrorKind::UnexpectedEof`; a `netstack` socket reports its peer's FIN through
    /// its state and returns 0. Failures are errors.
    fn recv_with(&mut self, max: usize, take: &mut dyn FnMut(&[u8]) -> usize) -> io::Result<usize>;
    /// Sends what fits now; `Ok(0)` when nothing fits.
    fn send(&mut self, data: &[u8]) -> io::Result<usize>;
}

impl Transport for TcpSocket<'_> {
    fn recv_with(&mut self, max: usize, take: &mut dyn FnMut(&[u8]) -> usize) -> io::Result<usize> {
        if !self.can_recv() {
            return Ok(0);
        }
        self.recv(|buf| {
            let n = take(&buf[..buf.len().min(max)]);
            (n, n)
        })
        .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))
    }

    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.can_send() {
            return Ok(0);
        }
        self.send_slice(data)
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))
    }
}

/// The TLS side of an engine: protected bytes in and out.
pub trait TlsWire {
    /// How many TLS bytes the engine takes now.
    fn tls_room(&self) -> usize;
    /// Takes TLS bytes; returns how many.
    fn read_tls(&mut self, data: &[u8]) -> usize;
    /// Protected bytes waiting to go out.
    fn pending_tls(&self) -> &[u8];
    fn consume_tls(&mut self, n: usize);
}

macro_rules! tls_wire {
    ($t:ty) => {
        impl TlsWire for $t {
            fn tls_room(&self) -> usize {
                <$t>::tls_room(self)
            }
            fn read_tls(&mut self, data: &[u8]) -> usize {
                <$t>::read_tls(self, data)
            }
            fn pending_tls(&self) -> &[u8] {
                <$t>::pending_tls(self)
            }
            fn consume_tls(&mut self, n: usize) {
                <$t>::consume_tls(self, n)
            }
        }
    };
}
tls_wire!(tls::ServerConn);
tls_wire!(tls::ClientConn);

/// Moves what the transport has received into the engine, as much as the engine
/// takes. Two rounds: a ring buffer hands out at most two contiguous pieces. Returns
/// the bytes moved; the transport's end or failure is an error, unless bytes moved
/// first (they are the engine's to process; an end or a failure shows again on the
/// next call).
pub fn fill<T: Transport + ?Sized, E: TlsWire + ?Sized>(
    from: &mut T,
    e: &mut E,
) -> io::Result<usize> {
    let mut moved = 0;
    for _ in 0..2 {
        let room = e.tls_room();
        if room == 0 {
            break;
        }
        let n = match from.recv_with(room, &mut |buf| e.read_tls(buf)) {
            Ok(n) => n,
            Err(_) if moved > 0 => break,
            Err(err) => return Err(err),
        };
        if n == 0 {
            break;
        }
        moved += n;
    }
    Ok(moved)
}

/// Writes the engine's pending output to the transport, as much as fits. Returns
/// whether everything went.
pub fn flush<E: TlsWire + ?Sized, T: Transport + ?Sized>(
    e: &mut E,
    to: &mut T,
) -> io::Result<bool> {
    while !e.pending_tls().is_empty() {
        let n = to.send(e.pending_tls())?;
        if n == 0 {
            return Ok(false);
        }
        e.consume_tls(n);
    }
    Ok(true)
}

/// Moves what fits from one transport's received bytes to another's send buffer (the
/// L4 proxy's pump). Returns the bytes moved.
pub fn relay<A: Transport + ?Sized, B: Transport + ?Sized>(from: &mut A, to: &mut B) -> usize {
    let mut moved = 0;
    for _ in 0..2 {
        let n = from
            .recv_with(usize::MAX, &mut |buf| to.send(buf).unwrap_or(0))
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        moved += n;
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport over two byte vectors: what it has received, and what was sent,
    /// taking at most `window` bytes per send.
    struct Mem {
        inbound: Vec<u8>,
        sent: Vec<u8>,
        window: usize,
    }

    impl Transport for Mem {
        fn recv_with(
            &mut self,
            max: usize,
            take: &mut dyn FnMut(&[u8]) -> usize,
        ) -> io::Result<usize> {
            let n = take(&self.inbound[..self.inbound.len().min(max)]);
            self.inbound.drain(..n);
            Ok(n)
        }
        fn send(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(self.window);
            self.sent.extend_from_slice(&data[..n]);
            Ok(n)
        }
    }

    /// An engine that takes up to `room` bytes and echoes them as its output.
    struct Echo {
        room: usize,
        out: Vec<u8>,
    }

    impl TlsWire for Echo {
        fn tls_room(&self) -> usize {
            self.room
        }
        fn read_tls(&mut self, data: &[u8]) -> usize {
            let n = data.len().min(self.room);
            self.room -= n;
            self.out.extend_from_slice(&data[..n]);
            n
        }
        fn pending_tls(&self) -> &[u8] {
            &self.out
        }
        fn consume_tls(&mut self, n: usize) {
            self.out.drain(..n);
        }
    }

    #[test]
    fn fill_stops_at_the_engines_room_and_flush_at_the_window() {
        let mut t = Mem {
            inbound: b"hello world".to_vec(),
            sent: Vec::new(),
            window: 4,
        };
        let mut e = Echo {
            room: 5,
            out: Vec::new(),
        };
        assert_eq!(fill(&mut t, &mut e).unwrap(), 5);
        assert_eq!(t.inbound, b" world");
        // Each send takes 4 bytes: everything goes, in two sends.
        assert!(flush(&mut e, &mut t).unwrap());
        assert_eq!(t.sent, b"hello");
        t.window = 0;
        e.room = 10;
        assert_eq!(fill(&mut t, &mut e).unwrap(), 6);
        assert!(!flush(&mut e, &mut t).unwrap());
        assert_eq!(e.pending_tls(), b" world");
    }

    #[test]
    fn relay_moves_what_the_receiver_takes() {
        let mut a = Mem {
            inbound: b"abcdef".to_vec(),
            sent: Vec::new(),
            window: 0,
        };
        let mut b = Mem {
            inbound: Vec::new(),
            sent: Vec::new(),
            window: 4,
        };
        assert_eq!(relay(&mut a, &mut b), 6);
        assert_eq!(b.sent, b"abcdef");
        assert!(a.inbound.is_empty());
    }
}
