//! The SOCKS v5 parsers read what a client sends inside TLS (and, for UDP, what anyone
//! sends): none may panic, none may claim more bytes than it was given, and what parses
//! must encode back to the bytes it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use socks_wire::{Credentials, Greeting, Reply, Request, UdpHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((g, n))) = Greeting::parse(data) {
        assert_eq!(g.encode(), &data[..n]);
    }
    if let Ok(Some((c, n))) = Credentials::parse(data) {
        assert_eq!(c.encode(), &data[..n]);
    }
    if let Ok(Some((r, n))) = Request::parse(data) {
        assert_eq!(r.encode(), &data[..n]);
    }
    if let Ok(Some((r, n))) = Reply::parse(data) {
        assert_eq!(r.encode(), &data[..n]);
    }
    if let Ok((h, n)) = UdpHeader::parse(data) {
        assert!(n <= data.len());
        let mut v = Vec::new();
        h.encode_into(&mut v);
        assert_eq!(v, &data[..n]);
    }
});
