//! The whole receive path of one core's stack: the flow-table parser, smoltcp's parsers
//! and TCP state machine, on a listening port, and a bound UDP port (a SOCKS relay's,
//! 49152) whose datagrams are read and answered. Input: a sequence of frames, each
//! prefixed by a 2-byte length. Must never panic, whatever arrives.
#![no_main]
use std::net::Ipv4Addr;

use dataplane::memory::CaptureQueue;
use libfuzzer_sys::fuzz_target;
use netstack::{NetDuration, NetInstant, Stack, StackConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = StackConfig {
        mac: [2, 0, 0, 0, 0, 1],
        addr: Ipv4Addr::new(10, 77, 0, 1),
        prefix_len: 24,
        gateway: None,
        mtu: 1500,
        core: 0,
        cores: 1,
        rx_buffer: 2048,
        tx_buffer: 2048,
        max_connections: 64,
        spare_sockets: 4,
        handshake_timeout: NetDuration::from_secs(5),
        idle_timeout: NetDuration::from_secs(60),
        ack_delay: None,
        seed: 1,
        // An odd first byte: SYN cookies for every SYN (the cookie check then sees
        // every ACK for no connection); even: never.
        syn_cookies_after: if data.first().is_some_and(|b| b & 1 == 1) {
            0
        } else {
            usize::MAX
        },
    };
    let mut now = NetInstant::from_millis(1);
    let mut stack: Stack<u8> = Stack::new(cfg, now);
    stack.listen(80, 0);
    let (udp, _port) = stack.bind_udp(0).expect("a free port on an empty stack");
    let mut dgram = vec![0u8; 65_536];
    let mut q = CaptureQueue::default();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        stack.ingress(&rest[2..2 + n], &mut q, now);
        rest = &rest[2 + n..];
        now += NetDuration::from_millis(3);
        stack.egress(&mut q, now);
        q.sent.clear();
        let mut acc = Vec::new();
        stack.take_accepted(&mut acc);
        let mut ready = Vec::new();
        stack.take_ready(&mut ready);
        for id in ready {
            if let Some(s) = stack.socket(id) {
                let mut buf = [0u8; 512];
                let _ = s.recv_slice(&mut buf);
            }
        }
        let mut bound = Vec::new();
        stack.take_udp_ready(&mut bound);
        for id in bound {
            while let Some((len, from)) = stack.udp_recv(id, &mut dgram) {
                if let Some(out) = stack.udp_send(id, from, len.min(64)) {
                    out.fill(0x55);
                }
            }
        }
        if rest.len() == 1 {
            stack.close_udp(udp);
        }
    }
});
