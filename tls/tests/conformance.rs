//! Negative and edge cases from the RFCs, one family per test, each with the sentence it
//! enforces: crafted ClientHellos and record sequences fed to the server engine, and
//! the alert it must answer with (or that it must go on). The hellos come from a small
//! builder here, so every field can be set wrong on purpose.

mod common;

use std::sync::Arc;

use common::*;
use tls::craft::{sni, u16s, v16, Hello};
use tls::error::alert;
use tls::msgs::{ext, group};
use tls::KeyShare;
use tls::{ClientConfig, ClientConn, ServerConn};

/// What the server did with `bytes`: the alert it sent, or `None` when it went on and
/// answered with handshake records (a ServerHello).
fn answer(bytes: &[u8]) -> Option<u8> {
    let out = served(bytes);
    let (mut at, mut handshake) = (0, false);
    while at + 5 <= out.len() {
        let len = usize::from(u16::from_be_bytes([out[at + 3], out[at + 4]]));
        match out[at] {
            21 if len == 2 => {
                assert_eq!(out[at + 5], 2, "a fatal alert");
                return Some(out[at + 6]);
            }
            22 => handshake = true,
            _ => {}
        }
        at += 5 + len;
    }
    assert!(handshake, "no answer at all: {} bytes", out.len());
    None
}

/// The group of the key share in the server's ServerHello, and the share's length.
fn chosen_share(bytes: &[u8]) -> (u16, usize) {
    let out = served(bytes);
    assert_eq!(&out[..1], &[22], "a handshake record first");
    let sh = &out[5..];
    assert_eq!(sh[0], 2, "a ServerHello");
    // type, length, version, random, session id, suite, compression, extensions.
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(sh[at]) + 3;
    let end = at + 2 + usize::from(u16::from_be_bytes([sh[at], sh[at + 1]]));
    at += 2;
    while at < end {
        let typ = u16::from_be_bytes([sh[at], sh[at + 1]]);
        let len = usize::from(u16::from_be_bytes([sh[at + 2], sh[at + 3]]));
        if typ == ext::KEY_SHARE {
            let group = u16::from_be_bytes([sh[at + 4], sh[at + 5]]);
            let share = usize::from(u16::from_be_bytes([sh[at + 6], sh[at + 7]]));
            return (group, share);
        }
        at += 4 + len;
    }
    panic!("no key_share in the ServerHello");
}

/// The server engine (configuration `cfg`) fed `bytes`: what it wrote, and its error.
fn serve_with(cfg: tls::ServerConfig, bytes: &[u8]) -> (Vec<u8>, Option<tls::Error>) {
    let mut c = ServerConn::new(Arc::new(cfg), 0);
    let mut fed = 0;
    let mut error = None;
    while fed < bytes.len() && error.is_none() {
        let n = c.read_tls(&bytes[fed..]);
        fed += n;
        error = c.process().err();
        while let Some(j) = c.take_job() {
            if let Err(e) = c.complete(crypto_offload::run(j)) {
                error = Some(e);
            }
        }
        if n == 0 {
            break;
        }
    }
    (c.pending_tls().to_vec(), error)
}

/// `n` application_data records of `len` bytes that open under no key: 0-RTT data
/// as a server that cannot read it sees it.
fn early_records(n: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(&[23, 3, 3]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend((0..len).map(|j| (i * 31 + j) as u8));
    }
    out
}

/// RFC 8446 §4.2.10: a server that does not take early data "skips past early data by
/// attempting to deprotect received records using the handshake traffic key,
/// discarding records which fail deprotection (up to the configured
/// max_early_data_size)"; after a HelloRetryRequest it will "skip all records with an
/// external content type of 'application_data' ... up to the configured
/// max_early_data_size"; and "A client MUST NOT include the early_data extension in its
/// followup ClientHello". Early data that opens under no key is dropped (no
/// bad_record_mac), within a bound: more is unexpected_message.
#[test]
fn early_data_the_server_never_offered_is_skipped_within_a_bound() {
    let early = (ext::EARLY_DATA, vec![]);
    let mut h = Hello::tls13();
    h.exts.push(early.clone());
    // Without a retry: the flight goes out, the early records fail to open under the
    // handshake key and are dropped; the handshake waits for the client's Finished.
    let mut bytes = h.records();
    bytes.extend(early_records(3, 1_000));
    let (out, e) = serve_with(config_with(&[Kind::P256]), &bytes);
    assert!(e.is_none(), "{e:?}");
    assert_eq!(out[0], 22, "the server's flight");
    // The same records without the extension are what they seem: records that do not
    // open.
    let mut plain = Hello::tls13().records();
    plain.extend(early_records(1, 1_000));
    let (_, e) = serve_with(config_with(&[Kind::P256]), &plain);
    assert_eq!(e.and_then(|e| e.alert()), Some(alert::BAD_RECORD_MAC));
    // Past the bound: unexpected_message.
    let mut flood = h.records();
    let n = tls::server::EARLY_DATA_SKIP_LIMIT / 16_000 + 1;
    flood.extend(early_records(n, 16_000));
    let (_, e) = serve_with(config_with(&[Kind::P256]), &flood);
    assert_eq!(e.and_then(|e| e.alert()), Some(alert::UNEXPECTED_MESSAGE));

    // With a retry (the server takes P-384 only, the client sent an X25519 share): the
    // records typed application_data before the second hello are dropped, and the
    // second hello is answered.
    let mut p384 = config_with(&[Kind::P256]);
    p384.groups = vec![group::SECP384R1];
    let (_key, share) =
        crypto_offload::EphemeralKey::generate(crypto_offload::Group::P384).unwrap();
    let mut ks = u16s(&[group::SECP384R1]);
    ks.extend_from_slice(&v16(&share));
    let groups = v16(&u16s(&[group::X25519, group::SECP384R1]));
    let first = h.clone().set(ext::SUPPORTED_GROUPS, groups.clone());
    let second = Hello::tls13()
        .set(ext::SUPPORTED_GROUPS, groups)
        .set(ext::KEY_SHARE, v16(&ks));
    let mut bytes = first.records();
    bytes.extend(early_records(3, 1_000));
    bytes.extend(second.records());
    let (out, e) = serve_with(p384.clone(), &bytes);
    assert!(e.is_none(), "{e:?}");
    // Plaintext records starting with a ServerHello-typed message: the retry and the
    // ServerHello.
    let (mut at, mut hellos) = (0, 0);
    while at + 5 < out.len() {
        let len = usize::from(u16::from_be_bytes([out[at + 3], out[at + 4]]));
        hellos += usize::from(out[at] == 22 && out[at + 5] == 2);
        at += 5 + len;
    }
    assert_eq!(hellos, 2, "a HelloRetryRequest and a ServerHello");
    // early_data again in the second hello: illegal_parameter.
    let mut bytes = first.records();
    bytes.extend(second.clone().set(early.0, early.1).records());
    let (_, e) = serve_with(p384, &bytes);
    assert_eq!(e.and_then(|e| e.alert()), Some(alert::ILLEGAL_PARAMETER));
}

/// Everything the server engine wrote for `bytes`.
fn served(bytes: &[u8]) -> Vec<u8> {
    let mut c = ServerConn::new(Arc::new(config_with(&[Kind::P256])), 0);
    let mut fed = 0;
    // The engine takes what it has room for; feed the rest as it processes.
    while fed < bytes.len() {
        let n = c.read_tls(&bytes[fed..]);
        fed += n;
        let r = c.process();
        while let Some(j) = c.take_job() {
            let _ = c.complete(crypto_offload::run(j));
        }
        if r.is_err() || c.is_closed() || n == 0 {
            break;
        }
    }
    c.pending_tls().to_vec()
}

#[test]
fn baseline_hellos_are_answered() {
    assert_eq!(answer(&Hello::tls13().records()), None);
    assert_eq!(answer(&Hello::tls12().records()), None);
}

/// RFC 8446 appendix D.5: "Any endpoint receiving a Hello message with
/// ClientHello.legacy_version or ServerHello.legacy_version set to 0x0300 MUST abort the
/// handshake with a 'protocol_version' alert." Older values likewise; 0x0301 and 0x0302
/// are legacy TLS 1.0/1.1 values that supported_versions overrides (§4.2.1).
#[test]
fn legacy_versions_of_ssl3_and_older_get_protocol_version() {
    for v in [0x0300, 0x0200, 0x0000, 0x0002] {
        let mut h = Hello::tls13();
        h.legacy_version = v;
        assert_eq!(
            answer(&h.records()),
            Some(alert::PROTOCOL_VERSION),
            "{v:#06x}"
        );
    }
    let mut h = Hello::tls13();
    h.legacy_version = 0x0301;
    assert_eq!(answer(&h.records()), None, "0x0301 with supported_versions");
}

/// RFC 8446 §4.1.2: a ClientHello may carry extensions the server does not know ("Servers
/// MUST ignore unrecognized extensions", §4.2), and real ones are large (GREASE, padding,
/// post-quantum key shares): more than 64 extensions, a 60 KB one, and a hello near the
/// 2^17-byte handshake maximum over eight records are all answered.
#[test]
fn large_hellos_within_the_protocols_bounds_are_answered() {
    let mut many = Hello::tls13();
    for i in 0..200u16 {
        many.exts.push((0x1a00 + i, vec![i as u8; 3]));
    }
    assert_eq!(answer(&many.records()), None, "200 unknown extensions");
    let big = Hello::tls13().set(0xfe00, vec![0x55; 60_000]);
    assert_eq!(answer(&big.records()), None, "a 60,000-byte extension");
    let mut huge = Hello::tls13().set(0xfe00, vec![0x55; 64_000]);
    // Thousands of unknown suites before the real ones.
    let mut suites: Vec<u16> = (0..30_000u16).map(|i| 0xf000 | (i & 0x0fff)).collect();
    suites.extend_from_slice(&huge.suites);
    huge.suites = suites;
    let n = huge.message().len();
    assert!(n > 120_000 && n <= 1 << 17, "{n} bytes");
    assert_eq!(answer(&huge.records()), None, "a {n}-byte hello");
    // A repeated extension is still refused (§4.2: "There MUST NOT be more than one").
    let mut dup = Hello::tls13();
    dup.exts.push((0x1a00, vec![]));
    dup.exts.push((0x1a00, vec![]));
    assert_eq!(answer(&dup.records()), Some(alert::ILLEGAL_PARAMETER));
}

/// RFC 8446 §4.2.8: `opaque key_exchange<1..2^16-1>`. An empty share decodes but is no
/// key: illegal_parameter (as BoringSSL and OpenSSL answer it).
#[test]
fn an_empty_key_share_is_an_illegal_parameter() {
    let mut s = u16s(&[group::X25519]);
    s.extend_from_slice(&v16(&[]));
    let h = Hello::tls13().set(ext::KEY_SHARE, v16(&s));
    assert_eq!(answer(&h.records()), Some(alert::ILLEGAL_PARAMETER));
}

/// The post-quantum hybrid X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem §3): a client
/// share is the 1184-byte ML-KEM-768 encapsulation key then the X25519 value; the
/// server's the 1088-byte ciphertext then its X25519 value. Preferred whenever the
/// client sent a share for it, whatever the order of its shares. "The server MUST
/// perform the encapsulation key check in FIPS 203 §7.2 and abort with an
/// illegal_parameter alert if it fails"; a share of another length is no key either.
/// TLS 1.2 has no use for it: a TLS 1.2 hello listing it gets X25519 (or nothing).
#[test]
fn the_hybrid_is_preferred_and_bad_hybrid_shares_are_illegal_parameter() {
    let (_key, hybrid) =
        crypto_offload::EphemeralKey::generate(crypto_offload::Group::X25519MlKem768).unwrap();
    let shares = |list: &[(u16, &[u8])]| {
        let mut s = Vec::new();
        for (g, k) in list {
            s.extend_from_slice(&u16s(&[*g]));
            s.extend_from_slice(&v16(k));
        }
        v16(&s)
    };
    let groups = v16(&u16s(&[group::X25519, group::X25519MLKEM768]));
    let h = Hello::tls13()
        .set(ext::SUPPORTED_GROUPS, groups.clone())
        .set(
            ext::KEY_SHARE,
            shares(&[(group::X25519, &[9; 32]), (group::X25519MLKEM768, &hybrid)]),
        );
    assert_eq!(chosen_share(&h.records()), (group::X25519MLKEM768, 1120));
    // Only an X25519 share: taken, no retry for the hybrid.
    let h = Hello::tls13().set(ext::SUPPORTED_GROUPS, groups.clone());
    assert_eq!(chosen_share(&h.records()), (group::X25519, 32));
    let mut bad_key = hybrid.clone();
    bad_key[..384].fill(0xff); // coefficients of 4095, above the modulus 3329
    for share in [
        &bad_key[..],
        &hybrid[..1215],
        &[hybrid.clone(), vec![0]].concat()[..],
    ] {
        let h = Hello::tls13()
            .set(ext::SUPPORTED_GROUPS, groups.clone())
            .set(ext::KEY_SHARE, shares(&[(group::X25519MLKEM768, share)]));
        assert_eq!(
            answer(&h.records()),
            Some(alert::ILLEGAL_PARAMETER),
            "{} bytes",
            share.len()
        );
    }
    let h12 = Hello::tls12().set(ext::SUPPORTED_GROUPS, groups);
    assert_eq!(answer(&h12.records()), None);
    let only = v16(&u16s(&[group::X25519MLKEM768]));
    let h12 = Hello::tls12().set(ext::SUPPORTED_GROUPS, only);
    assert_eq!(answer(&h12.records()), Some(alert::HANDSHAKE_FAILURE));
}

/// secp521r1 and x448 (RFC 8446 §4.2.7) are spoken, with their shares checked as the
/// others are: §4.2.8.2 "peers MUST validate each other's public value Q by ensuring
/// that the point is a valid point on the elliptic curve"; §7.4.2 "For X25519 and X448
/// ... implementations MUST check whether the computed Diffie-Hellman shared secret is
/// the all-zero value and abort if so". A share that fails, or has the wrong length, is
/// illegal_parameter (not handshake_failure: the group is a common one).
#[test]
fn secp521r1_and_x448_shares_are_taken_and_checked() {
    use crypto_offload::{EphemeralKey, Group};
    for (code, g) in [(group::SECP521R1, Group::P521), (group::X448, Group::X448)] {
        let (_key, public) = EphemeralKey::generate(g).unwrap();
        let hello = |share: &[u8]| {
            let mut s = u16s(&[code]);
            s.extend_from_slice(&v16(share));
            Hello::tls13()
                .set(ext::SUPPORTED_GROUPS, v16(&u16s(&[code])))
                .set(ext::KEY_SHARE, v16(&s))
                .records()
        };
        assert_eq!(chosen_share(&hello(&public)), (code, public.len()), "{g:?}");
        let mut bad = public.clone();
        if g == Group::X448 {
            bad.fill(0); // u = 0: the shared secret is all zeros
        } else {
            *bad.last_mut().unwrap() ^= 1; // off the curve
        }
        for share in [&bad[..], &public[1..]] {
            assert_eq!(
                answer(&hello(share)),
                Some(alert::ILLEGAL_PARAMETER),
                "{g:?}, {} bytes",
                share.len()
            );
        }
        // TLS 1.2 ECDHE over them too.
        let h12 = Hello::tls12().set(ext::SUPPORTED_GROUPS, v16(&u16s(&[code])));
        assert_eq!(answer(&h12.records()), None, "{g:?} in TLS 1.2");
    }
}

/// RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`: an empty list does not decode
/// (decode_error). A host name is "the byte string ... using ASCII encoding without a
/// trailing dot": one with a NUL, a control character, a space or a non-ASCII byte is
/// refused with illegal_parameter.
#[test]
fn server_names_empty_lists_and_bad_host_names() {
    let h = Hello::tls13().set(ext::SERVER_NAME, v16(&[]));
    assert_eq!(
        answer(&h.records()),
        Some(alert::DECODE_ERROR),
        "empty list"
    );
    for bad in [
        &b"te\0st.example"[..],
        b"test\x07.example",
        b"te st.example",
        "tést.example".as_bytes(),
    ] {
        let h = Hello::tls13().set(ext::SERVER_NAME, sni(bad));
        assert_eq!(
            answer(&h.records()),
            Some(alert::ILLEGAL_PARAMETER),
            "{bad:?}"
        );
    }
}

/// RFC 5246 §7.2: "If an alert with a level of warning is sent and received, generally the
/// connection can continue normally." A few warnings mid-handshake are tolerated; a flood
/// (more than four in a row, as other stacks bound it) ends with unexpected_message.
/// TLS 1.3 has no warnings (RFC 8446 §6).
#[test]
fn tls12_warning_alerts_are_tolerated_but_not_a_flood() {
    let warning = [21u8, 3, 3, 0, 2, 1, 112]; // unrecognized_name, warning level
    let mut few = Hello::tls12().records();
    for _ in 0..4 {
        few.extend_from_slice(&warning);
    }
    assert_eq!(answer(&few), None, "four warnings");
    let mut flood = Hello::tls12().records();
    for _ in 0..5 {
        flood.extend_from_slice(&warning);
    }
    assert_eq!(
        answer(&flood),
        Some(alert::UNEXPECTED_MESSAGE),
        "five in a row"
    );
}

/// A client that cannot go on after our flight (it could not process our ServerHello,
/// say, so it has no handshake keys) sends its alert in plaintext. RFC 8446 §6: "Like
/// other messages, alert messages are encrypted as specified by the current connection
/// state", and that client's current state is still the plaintext one (OpenSSL and Go
/// do this). That is the peer's abort, answered with nothing, not a record that fails to
/// open (bad_record_mac).
#[test]
fn a_plaintext_alert_after_our_flight_is_the_peers_abort() {
    let mut c = ServerConn::new(Arc::new(config_with(&[Kind::P256])), 0);
    c.read_tls(&Hello::tls13().records());
    c.process().unwrap();
    while let Some(j) = c.take_job() {
        c.complete(crypto_offload::run(j)).unwrap();
    }
    let flight = c.pending_tls().len();
    assert!(
        flight > 0 && c.pending_tls()[0] == 22,
        "the server's flight"
    );
    c.read_tls(&[21, 3, 3, 0, 2, 2, alert::BAD_CERTIFICATE]);
    assert_eq!(
        c.process(),
        Err(tls::Error::PeerAlert(alert::BAD_CERTIFICATE))
    );
    assert_eq!(c.pending_tls().len(), flight, "no alert of ours answers it");
    assert!(c.is_closed());
}

/// The engine's client role (built with its `hostile` feature) against the server engine
/// in memory, until neither moves or the server fails: the server's error, if any.
fn run_client(c: &mut ClientConn, s: &mut Server) -> Result<(), tls::Error> {
    for _ in 0..50 {
        let out = c.pending_tls().to_vec();
        c.consume_tls(out.len());
        s.wire.to_server.borrow_mut().extend_from_slice(&out);
        s.pump()?;
        let input = std::mem::take(&mut *s.wire.to_client.borrow_mut());
        let n = c.read_tls(&input);
        s.wire
            .to_client
            .borrow_mut()
            .splice(0..0, input[n..].iter().copied());
        let _ = c.process(0);
        if out.is_empty() && input.is_empty() && c.pending_tls().is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

fn hostile_client() -> (ClientConn, Server) {
    let cfg = Arc::new(ClientConfig::default());
    let share = KeyShare::generate(crypto_offload::Group::X25519).unwrap();
    let c = ClientConn::new(cfg, share, None, 0).unwrap();
    let s = Server::new(Arc::new(config_with(&[Kind::P256])), Wire::default());
    (c, s)
}

/// Sets a handshake message's 24-bit length to what follows its header.
fn fix_length(m: &mut [u8]) {
    let n = (m.len() - 4) as u32;
    m[1..4].copy_from_slice(&n.to_be_bytes()[1..]);
}

/// RFC 8446 §4.4.4: `opaque verify_data[Hash.length]`; RFC 8446 §6.2: decode_error is
/// "A message could not be decoded because some field was out of the specified range or
/// the length of the message was incorrect". A Finished padded or cut short (its length
/// field consistent) is decode_error, checked before the value; one of the right length
/// with the wrong value is decrypt_error ("a handshake ... cryptographic operation
/// failed, including being unable to ... validate a Finished message").
#[test]
fn a_finished_of_the_wrong_length_is_decode_error_and_a_wrong_one_decrypt_error() {
    let (mut c, mut s) = hostile_client();
    run_client(&mut c, &mut s).unwrap();
    assert!(s.conn.is_established(), "an unspoiled Finished is accepted");
    type Spoil = fn(&mut Vec<u8>);
    let spoilers: [(Spoil, u8); 3] = [
        (
            |m| {
                m.push(0);
                fix_length(m)
            },
            alert::DECODE_ERROR,
        ),
        (
            |m| {
                m.pop();
                fix_length(m)
            },
            alert::DECODE_ERROR,
        ),
        (|m| *m.last_mut().unwrap() ^= 1, alert::DECRYPT_ERROR),
    ];
    for (spoil, want) in spoilers {
        let (mut c, mut s) = hostile_client();
        c.hostile_edit_finished(spoil);
        let e = run_client(&mut c, &mut s).expect_err("a spoiled Finished is refused");
        assert_eq!(e.alert(), Some(want), "{e}");
    }
}

/// RFC 8446 §5.1: "Handshake messages MUST NOT be interleaved with other record types.
/// That is, if a handshake message is split over two or more records, there MUST NOT be
/// any other records between them." A KeyUpdate whose 4-byte header came alone, then
/// application data, then its body: unexpected_message. The same split with nothing
/// between is fine.
#[test]
fn application_data_inside_a_split_key_update_is_unexpected_message() {
    const HS: u8 = 22;
    const APP: u8 = 23;
    let (mut c, mut s) = hostile_client();
    run_client(&mut c, &mut s).unwrap();
    c.hostile_seal(&[(HS, &[24, 0, 0, 1]), (HS, &[0])]).unwrap();
    run_client(&mut c, &mut s).unwrap();
    // The server took it: it reads under the next key now, so a record under the old
    // one (the hostile client does not move on) fails to open.
    c.hostile_seal(&[(APP, b"under the old key")]).unwrap();
    let e = run_client(&mut c, &mut s).expect_err("the old key is gone");
    assert_eq!(e.alert(), Some(alert::BAD_RECORD_MAC), "{e}");

    let (mut c, mut s) = hostile_client();
    run_client(&mut c, &mut s).unwrap();
    c.hostile_seal(&[(HS, &[24, 0, 0, 1]), (APP, b"between"), (HS, &[0])])
        .unwrap();
    let e = run_client(&mut c, &mut s).expect_err("data inside a handshake message");
    assert_eq!(e.alert(), Some(alert::UNEXPECTED_MESSAGE), "{e}");
}
