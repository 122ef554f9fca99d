//! The PROXY v2 header parser: never panics, never claims more bytes than it was
//! given, and what the encoder writes for any two addresses parses back to them.
#![no_main]
use backend_wire::proxy_v2::{encode_tcp4, parse, ssl_tlv, tlv, tlvs, Header};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddrV4;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, n)) = parse(data) {
        assert!(n <= data.len());
        if let Ok(list) = tlvs(data) {
            for (t, v) in list {
                assert!(v.len() <= n);
                if t == tlv::SSL {
                    let _ = ssl_tlv(v);
                }
            }
        }
    }
    if data.len() >= 12 {
        let ip = |o: usize| std::net::Ipv4Addr::new(data[o], data[o + 1], data[o + 2], data[o + 3]);
        let port = |o: usize| u16::from_be_bytes([data[o], data[o + 1]]);
        let (src, dst) = (
            SocketAddrV4::new(ip(0), port(8)),
            SocketAddrV4::new(ip(4), port(10)),
        );
        let h = encode_tcp4(src, dst);
        assert_eq!(parse(&h), Ok((Header::Tcp4 { src, dst }, h.len())));
    }
});
