//! Writes the seed corpora of the fuzz targets (checked in under `fuzz/corpus/TARGET/`),
//! made by the crates' own encoders so each seed is a valid input the fuzzer mutates
//! from. The `tls_server` seeds are whole TLS 1.3 conversations of the engine's client
//! role with the target's own deterministic server, saved as the bytes the client sent:
//! replayed by the target (same seed, same server), each drives the server through its
//! encrypted states; the server's side of them seeds `tls_client` and `tls_record`.
//!
//!     cd fuzz && cargo run --bin seeds -- corpus
//!
//! Run it again when a wire format changes (each TLS seed is checked to replay to an
//! established connection before it is written).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use appliance_fuzz::{det_rand, server};
use tls::KeyShare;
use tls::msgs::{group, suite};
use tls::{ClientConfig, ClientConn, ServerConn, Ticket};

/// What the client does once the handshake is done.
#[derive(Clone, Copy)]
enum After {
    /// A request, the server's answer, close_notify.
    Data,
    /// A KeyUpdate asking for one back (the hostile client seals it under its current
    /// key and does not move on, so the server's next read fails: that path too).
    KeyUpdate,
}

struct Conversation {
    sent: Vec<u8>,
    received: Vec<u8>,
    server: ServerConn,
    client: ClientConn,
}

fn pump(conv: &mut Conversation) {
    for _ in 0..50 {
        let out = conv.client.pending_tls().to_vec();
        conv.client.consume_tls(out.len());
        conv.sent.extend_from_slice(&out);
        let mut rest = &out[..];
        while !rest.is_empty() {
            let n = conv.server.read_tls(rest);
            rest = &rest[n..];
            if let Err(e) = conv.server.process() {
                eprintln!("server: {e:?}");
            }
            while let Some(j) = conv.server.take_job() {
                let _ = conv.server.complete(crypto_offload::run(j));
            }
            if n == 0 {
                break;
            }
        }
        let back = conv.server.pending_tls().to_vec();
        conv.server.consume_tls(back.len());
        conv.received.extend_from_slice(&back);
        let c = &mut conv.client;
        det_rand::as_client(|| {
            c.read_tls(&back);
            if let Err(e) = c.process(0) {
                eprintln!("client: {e:?}");
            }
        });
        if out.is_empty() && back.is_empty() {
            return;
        }
    }
}

fn converse(groups: &[u16], suites: &[u16], ticket: Option<&Ticket>, after: After) -> Conversation {
    let router = server::router();
    det_rand::reset(server::CONNECTION_SEED);
    let cfg = Arc::new(ClientConfig {
        server_name: Some("fuzz.example".into()),
        groups: groups.to_vec(),
        suites: suites.to_vec(),
        ..ClientConfig::default()
    });
    let share_group = tls::client::group_of(groups[0]).expect("a known group");
    let client = det_rand::as_client(|| {
        let share = KeyShare::generate(share_group).unwrap();
        ClientConn::new(cfg, share, ticket, 0).unwrap()
    });
    let mut conv = Conversation {
        sent: Vec::new(),
        received: Vec::new(),
        server: ServerConn::with_router(router, 0),
        client,
    };
    pump(&mut conv);
    assert!(conv.server.is_established(), "the handshake finished");
    match after {
        After::Data => {
            conv.client
                .send(b"GET / HTTP/1.1\r\nHost: fuzz.example\r\n\r\n")
                .unwrap();
            pump(&mut conv);
            let n = conv.server.plaintext().len();
            assert!(n > 0, "the request arrived");
            conv.server.consume_plaintext(n);
            conv.server
                .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            pump(&mut conv);
            conv.client.close();
            pump(&mut conv);
            assert!(conv.server.peer_closed(), "close_notify arrived");
        }
        After::KeyUpdate => {
            conv.client
                .hostile_seal(&[(22, &[24, 0, 0, 1, 1])])
                .unwrap();
            pump(&mut conv);
        }
    }
    conv
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
    println!("{target}/{name}: {} bytes", bytes.len());
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    tls_seeds(&dir);
    other_seeds(&dir);
}

/// The parsers that are not the TLS engine, from their encoders.
fn other_seeds(dir: &Path) {
    use backend_wire::proxy_v2::encode_tcp4;
    use session_store::wire::{Body, Header, Message, ViewEntry, WireRecord};
    use session_store::{ClusterKey, Kind, NodeState, TableId, Version};
    use std::net::{Ipv4Addr, SocketAddrV4};

    // PROXY v2: what the appliance sends, and the same with a TLV area (ALPN "h2",
    // authority, an SSL TLV) so the parser's TLV walk has something to walk.
    let h = encode_tcp4(
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 9), 40000),
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 443),
    );
    write(dir, "proxy_v2", "tcp4", &h);
    let mut t = h.to_vec();
    let tlvs: &[(u8, &[u8])] = &[
        (0x01, b"h2"),
        (0x02, b"app.example"),
        (0x20, &[1, 0, 0, 0, 0]),
    ];
    let mut extra = Vec::new();
    for (ty, v) in tlvs {
        extra.push(*ty);
        extra.extend_from_slice(&(v.len() as u16).to_be_bytes());
        extra.extend_from_slice(v);
    }
    let len = u16::from_be_bytes([t[14], t[15]]) + extra.len() as u16;
    t[14..16].copy_from_slice(&len.to_be_bytes());
    t.extend_from_slice(&extra);
    assert!(
        backend_wire::proxy_v2::parse(&t).is_ok(),
        "the TLV seed parses"
    );
    write(dir, "proxy_v2", "tcp4-tlvs", &t);

    // Cluster messages under the target's key (a MAC the target's decode accepts).
    let key = ClusterKey::from_secret(&[0x5a; 32]).unwrap();
    let header = Header {
        sender: 0x0a0b_0c0d,
        incarnation: 7,
        seq: 42,
    };
    let table = TableId {
        kind: Kind::SESSION_ID,
        vserver: 1,
    };
    let record = WireRecord {
        table,
        key: vec![0xab; 32],
        expires_ms: 1_800_000_000_000,
        version: Version {
            updated_ms: 1_700_000_000_000,
            origin: 3,
        },
        sealed: Some(vec![0x11; 80]),
    };
    let view = vec![ViewEntry {
        node: 3,
        incarnation: 7,
        upto: 41,
    }];
    let bodies = [
        ("add", Body::Add(record.clone())),
        (
            "heartbeat",
            Body::Heartbeat {
                last_seq: 41,
                state: NodeState::Ready,
                name: b"node-a".to_vec(),
                view: view.clone(),
            },
        ),
        (
            "nack",
            Body::Nack {
                to: 3,
                incarnation: 7,
                ranges: vec![(1, 4), (9, 9)],
            },
        ),
        (
            "sync-chunk",
            Body::SyncChunk {
                sync_id: 5,
                index: 0,
                records: vec![
                    record.clone(),
                    WireRecord {
                        sealed: None,
                        ..record.clone()
                    },
                ],
            },
        ),
        (
            "get",
            Body::Get {
                req: 9,
                table,
                key: vec![1; 32],
            },
        ),
        (
            "get-reply",
            Body::GetReply {
                req: 9,
                record: Some(record),
            },
        ),
    ];
    for (name, body) in bodies {
        let m = Message { header, body };
        let bytes = m.encode(&key).unwrap();
        assert_eq!(Message::decode(&bytes, &key).unwrap(), m, "{name} decodes");
        write(dir, "cluster_wire", name, &bytes);
    }

    // Control requests: the words form and the JSON form of each kind.
    for (name, line) in [
        ("stats", "stats"),
        ("vserver", "vserver disable www"),
        ("backend", "backend drain 10.77.0.2:8080 www"),
        ("flush", "flush session-store"),
    ] {
        write(dir, "control_request", name, line.as_bytes());
        let req = control_proto::Request::parse(line).unwrap();
        write(
            dir,
            "control_request",
            &format!("{name}.json"),
            req.to_line().as_bytes(),
        );
    }

    // A stored session as the shared store holds it.
    let session = tls::Session {
        version: 0x0303,
        suite: tls::msgs::suite::ECDHE_ECDSA_AES128_GCM_SHA256,
        ems: true,
        created_ms: 1_700_000_000_000,
        lifetime_s: 7200,
        age_add: 0x1234_5678,
        sni: Some(b"app.example".to_vec()),
        alpn: Some(b"h2".to_vec()),
        peer: Some(b"CN=client".to_vec()),
        secret: crypto_offload::prim::Secret::new(vec![0x42; 48]),
    };
    assert!(tls::Session::decode(session.encode().bytes()).is_ok());
    write(dir, "tls_session", "tls12-ems", session.encode().bytes());
    let s13 = tls::Session {
        version: 0x0304,
        suite: tls::msgs::suite::TLS13_AES_128_GCM_SHA256,
        ems: false,
        peer: None,
        secret: crypto_offload::prim::Secret::new(vec![0x42; 32]),
        ..session
    };
    assert!(tls::Session::decode(s13.encode().bytes()).is_ok());
    write(dir, "tls_session", "tls13", s13.encode().bytes());

    // SOCKS: a greeting, credentials, requests of each address type, a UDP header.
    use socks_wire::{Addr, Credentials, Greeting, Request, UdpHeader};
    write(
        dir,
        "socks",
        "greeting",
        &Greeting {
            methods: vec![0, 2],
        }
        .encode(),
    );
    let creds = Credentials {
        user: b"alice".to_vec(),
        password: b"correct horse".to_vec(),
    };
    write(dir, "socks", "credentials", &creds.encode());
    for (name, dst) in [
        ("connect-v4", Addr::V4("10.77.0.2:8080".parse().unwrap())),
        ("connect-name", Addr::Domain(b"example.com".to_vec(), 443)),
        ("connect-v6", Addr::V6("2001:db8::1".parse().unwrap(), 80)),
    ] {
        write(dir, "socks", name, &Request { cmd: 1, dst }.encode());
    }
    let mut udp = Vec::new();
    UdpHeader {
        frag: 0,
        dst: Addr::V4("10.77.0.2:5353".parse().unwrap()),
    }
    .encode_into(&mut udp);
    udp.extend_from_slice(b"datagram");
    write(dir, "socks", "udp", &udp);

    // Secure datagrams: a protected header (with a tag's worth of bytes after it), and
    // sequence-number walks for the replay window (a size byte, then three bytes per
    // number: bit 0 of the first steps back, bit 1 leaves it unrecorded, then the step).
    use socks_wire::datagram::Header as DatagramHeader;
    let mut d = DatagramHeader {
        association: 7,
        seq: 42,
    }
    .encode()
    .to_vec();
    d.extend_from_slice(&[0u8; 16]);
    d.extend_from_slice(b"datagram");
    assert!(
        DatagramHeader::parse(&d).is_ok(),
        "the datagram seed parses"
    );
    write(dir, "replay_window", "datagram", &d);
    let walk = |ops: &[(u8, u16)]| {
        let mut v = vec![1u8];
        for &(flags, step) in ops {
            v.push(flags);
            v.extend_from_slice(&step.to_be_bytes());
        }
        v
    };
    write(dir, "replay_window", "in-order", &walk(&[(0, 1); 24]));
    // Ahead, back inside the window, a duplicate, far ahead, back past the window.
    write(
        dir,
        "replay_window",
        "reordered",
        &walk(&[
            (0, 5),
            (0, 100),
            (1, 3),
            (0, 0),
            (0, 3),
            (0, 1000),
            (1, 900),
            (3, 20),
        ]),
    );

    // Steering reads Ethernet frames: the ingress target's SYN.
    if let Ok(frame) = std::fs::read(dir.join("ingress/syn")) {
        write(dir, "steer", "syn", &frame);
    }
}

fn tls_seeds(dir: &Path) {
    let aes = [suite::TLS13_AES_128_GCM_SHA256];
    let first = converse(&[group::X25519], &aes, None, After::Data);
    // The server's side: the client target's input, and a record stream for the
    // record reader.
    // The client target's first byte chooses its offer: 0 TLS 1.3 only, 2 TLS 1.2 only.
    write(
        dir,
        "tls_client",
        "tls13-x25519-server-flight",
        &[&[0u8][..], &first.received].concat(),
    );
    let tls12 = converse(
        &[group::X25519],
        &[
            suite::ECDHE_ECDSA_AES128_GCM_SHA256,
            suite::ECDHE_RSA_AES128_GCM_SHA256,
        ],
        None,
        After::Data,
    );
    write(
        dir,
        "tls_client",
        "tls12-ecdhe-server-flight",
        &[&[2u8][..], &tls12.received].concat(),
    );
    write(dir, "tls_server", "tls12-ecdhe-data", &tls12.sent);
    write(dir, "tls_record", "tls13-client", &first.sent);
    write(dir, "tls_record", "tls13-server", &first.received);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tls13-x25519-aes128-data", first.sent.clone()),
        (
            "tls13-mlkem-hybrid-data",
            converse(&[group::X25519MLKEM768], &aes, None, After::Data).sent,
        ),
        (
            "tls13-p256-chacha-data",
            converse(
                &[group::SECP256R1],
                &[suite::TLS13_CHACHA20_POLY1305_SHA256],
                None,
                After::Data,
            )
            .sent,
        ),
        (
            "tls13-aes256-keyupdate",
            converse(
                &[group::X25519],
                &[suite::TLS13_AES_256_GCM_SHA384],
                None,
                After::KeyUpdate,
            )
            .sent,
        ),
        ("tls13-resumed-data", {
            let ticket = first.client.ticket().cloned().expect("a ticket");
            let again = converse(&[group::X25519], &aes, Some(&ticket), After::Data);
            assert!(again.server.info().resumed.is_some(), "resumed");
            again.sent
        }),
    ];
    // Each seed must replay: the same server, fed only the recorded bytes, ends where
    // the conversation did.
    for (name, bytes) in &cases {
        det_rand::reset(server::CONNECTION_SEED);
        let mut s = ServerConn::with_router(server::router(), 0);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = s.read_tls(rest);
            rest = &rest[n..];
            let _ = s.process();
            while let Some(j) = s.take_job() {
                let _ = s.complete(crypto_offload::run(j));
            }
            let out = s.pending_tls().len();
            s.consume_tls(out);
            let p = s.plaintext().len();
            s.consume_plaintext(p);
            if n == 0 {
                break;
            }
        }
        assert!(
            s.is_established(),
            "{name}: replays to an established connection"
        );
        write(dir, "tls_server", name, bytes);
    }
}
