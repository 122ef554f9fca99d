//! The negative corpus: crafted ClientHellos, records and message sequences, each with
//! what RFC 8446, 5246, 6066, 7627, 5746, 7507, 7685 or 8701 requires of a server that
//! receives it, in one table. `tests/tests/memory_negative.rs` runs every case against
//! the engine in memory; `tests/tests/dpdk_negative.rs` runs the cases marked `wire`
//! (those whose answer is readable on the wire: a plaintext alert, a ServerHello, or a
//! close) against the appliance on its DPDK port.
//!
//! Organised by family as BoringSSL's and s2n-tls's suites are (version negotiation,
//! hello structure, extensions, key shares, names, record layer, message order), with
//! our own cases. Every case starts from a well-formed hello ([`Hello::tls13`] or
//! [`Hello::tls12`], SNI `test.example`) and breaks one thing.

use std::sync::Arc;

use tls::craft::{handshake, key_shares, record, sni, u16s, v16, v8, Hello};
use tls::error::alert;
use tls::msgs::{ext, group, scheme, suite};
use tls::ServerConn;

/// What the server must do with a case's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Go on: answer with a ServerHello.
    Answered,
    /// Send this fatal alert.
    Alert(u8),
    /// Close without an alert (the peer's fatal alert ended it).
    Closed,
}

/// One case of the corpus.
pub struct Case {
    pub name: &'static str,
    /// The requirement, quoted where the RFC words it (section first).
    pub rfc: &'static str,
    pub input: fn() -> Vec<u8>,
    pub expect: Expect,
    /// The answer is visible on the wire (plaintext), so the DPDK run checks it too.
    pub wire: bool,
}

/// What the engine (or the appliance) did with a case's bytes.
pub type Outcome = Expect;

fn tls13_only() -> Hello {
    Hello::tls13()
        .set(ext::SUPPORTED_VERSIONS, v8(&u16s(&[0x0304])))
        .without(ext::SERVER_NAME)
        .push(ext::SERVER_NAME, sni(b"test.example"))
}

/// A pre_shared_key body: one identity with age 0 and one binder of `binder_len`.
fn psk(identity: &[u8], binder_len: usize) -> Vec<u8> {
    let mut id = v16(identity);
    id.extend_from_slice(&0u32.to_be_bytes());
    let mut b = v16(&id);
    b.extend_from_slice(&v16(&v8(&vec![0x5a; binder_len])));
    b
}

fn hello13() -> Vec<u8> {
    Hello::tls13().records()
}

fn hello12() -> Vec<u8> {
    Hello::tls12().records()
}

fn then(mut first: Vec<u8>, more: &[Vec<u8>]) -> Vec<u8> {
    for m in more {
        first.extend_from_slice(m);
    }
    first
}

/// The corpus. Names are unique; the DPDK run reports failures by name.
pub fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // Baselines: what every other case breaks.
        Case {
            name: "baseline-tls13",
            rfc: "RFC 8446 §4.1.2: a well-formed TLS 1.3 ClientHello is answered",
            input: hello13,
            expect: Answered,
            wire: true,
        },
        Case {
            name: "baseline-tls12",
            rfc: "RFC 5246 §7.4.1.2: a well-formed TLS 1.2 ClientHello is answered",
            input: hello12,
            expect: Answered,
            wire: true,
        },
        // Version negotiation.
        Case {
            name: "legacy-version-ssl3",
            rfc: "RFC 8446 appendix D.5: \"Any endpoint receiving a Hello message with \
                  ClientHello.legacy_version or ServerHello.legacy_version set to 0x0300 \
                  MUST abort the handshake with a protocol_version alert.\"",
            input: || {
                let mut h = Hello::tls13();
                h.legacy_version = 0x0300;
                h.records()
            },
            expect: Alert(alert::PROTOCOL_VERSION),
            wire: true,
        },
        Case {
            name: "legacy-version-0x0200",
            rfc: "RFC 8446 appendix D.5 (below 0x0300 likewise)",
            input: || {
                let mut h = Hello::tls13();
                h.legacy_version = 0x0200;
                h.records()
            },
            expect: Alert(alert::PROTOCOL_VERSION),
            wire: true,
        },
        Case {
            name: "tls11-client",
            rfc: "RFC 5246 appendix E.1: \"If server supports (or is willing to use) only \
                  versions greater than client_version, it MUST send a protocol_version \
                  alert message and close the connection.\"",
            input: || {
                let mut h = Hello::tls12();
                h.legacy_version = 0x0302;
                h.records()
            },
            expect: Alert(alert::PROTOCOL_VERSION),
            wire: true,
        },
        Case {
            name: "supported-versions-only-old",
            rfc: "RFC 8446 §4.2.1: servers \"MUST use only the supported_versions extension \
                  to determine client preferences\"; none we speak: protocol_version",
            input: || {
                Hello::tls13()
                    .set(ext::SUPPORTED_VERSIONS, v8(&u16s(&[0x0302, 0x0301])))
                    .records()
            },
            expect: Alert(alert::PROTOCOL_VERSION),
            wire: true,
        },
        Case {
            name: "supported-versions-empty",
            rfc: "RFC 8446 §4.2.1: ProtocolVersion versions<2..254>; a vector out of its \
                  range is decode_error (§6.2)",
            input: || {
                Hello::tls13()
                    .set(ext::SUPPORTED_VERSIONS, v8(&[]))
                    .records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "supported-versions-odd-length",
            rfc: "RFC 8446 §6.2: decode_error when \"the length of the message was incorrect\"",
            input: || {
                Hello::tls13()
                    .set(ext::SUPPORTED_VERSIONS, v8(&[3, 4, 3]))
                    .records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "fallback-scsv-from-a-tls12-retry",
            rfc: "RFC 7507 §3: if TLS_FALLBACK_SCSV appears and the server's highest version \
                  is higher than the client's, \"the server MUST respond with a fatal \
                  inappropriate_fallback alert\"",
            input: || {
                let mut h = Hello::tls12();
                h.suites.push(suite::FALLBACK_SCSV);
                h.records()
            },
            expect: Alert(alert::INAPPROPRIATE_FALLBACK),
            wire: true,
        },
        // Hello structure.
        Case {
            name: "compression-not-null-tls13",
            rfc: "RFC 8446 §4.1.2: \"If a TLS 1.3 ClientHello is received with any other \
                  value in this field, the server MUST abort the handshake with an \
                  illegal_parameter alert.\"",
            input: || {
                let mut h = tls13_only();
                h.compression = vec![1, 0];
                h.records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "compression-without-null-tls12",
            rfc: "RFC 5246 §7.4.1.2: the list \"MUST contain, and all implementations MUST \
                  support, CompressionMethod.null\"; without it nothing can be negotiated",
            input: || {
                let mut h = Hello::tls12();
                h.compression = vec![1];
                h.records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "session-id-33-bytes",
            rfc: "RFC 8446 §4.1.2: opaque legacy_session_id<0..32>; longer is decode_error",
            input: || {
                let mut h = Hello::tls13();
                h.session_id = vec![1; 33];
                h.records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "no-cipher-suites",
            rfc: "RFC 8446 §4.1.2: CipherSuite cipher_suites<2..2^16-2>; empty is decode_error",
            input: || {
                let mut h = Hello::tls13();
                h.suites.clear();
                h.records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "no-common-cipher-suite",
            rfc: "RFC 8446 §4.1.1: with no overlap the server \"MUST abort the handshake with \
                  either a handshake_failure or insufficient_security fatal alert\"",
            input: || {
                let mut h = Hello::tls13();
                h.suites = vec![0x0005, 0x000a]; // RC4, 3DES
                h.records()
            },
            expect: Alert(alert::HANDSHAKE_FAILURE),
            wire: true,
        },
        Case {
            name: "bytes-after-the-extensions",
            rfc: "RFC 8446 §6.2: decode_error when \"the length of the message was incorrect\"",
            input: || {
                let mut body = Hello::tls13().body();
                body.push(0);
                record(22, &handshake(1, &body))
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "extension-block-overruns-the-message",
            rfc: "RFC 8446 §6.2: a field out of its range is decode_error",
            input: || {
                let mut body = Hello::tls13().body();
                // The extensions' length is the last length before them: find it from
                // the fixed part (version, random, session id, suites, compression).
                let at = 2 + 32 + 1 + 2 + 2 * 2 + 1 + 1;
                let len = u16::from_be_bytes([body[at], body[at + 1]]) + 1;
                body[at..at + 2].copy_from_slice(&len.to_be_bytes());
                record(22, &handshake(1, &body))
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "duplicate-extension",
            rfc: "RFC 8446 §4.2: \"There MUST NOT be more than one extension of the same type \
                  in a given extension block.\"",
            input: || {
                Hello::tls13()
                    .push(ext::SUPPORTED_GROUPS, v16(&u16s(&[group::X25519])))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "grease-and-padding-are-ignored",
            rfc: "RFC 8701 §3: servers ignore GREASE values; RFC 7685 §3: the padding \
                  extension's contents are ignored",
            input: || {
                let mut h = Hello::tls13()
                    .set(
                        ext::SUPPORTED_GROUPS,
                        v16(&u16s(&[0x2a2a, group::X25519, group::SECP256R1])),
                    )
                    .push(0x0a0a, vec![])
                    .push(21, vec![0; 512]);
                h.suites.insert(0, 0x1a1a);
                h.records()
            },
            expect: Answered,
            wire: true,
        },
        Case {
            name: "hello-in-50-byte-records",
            rfc: "RFC 8446 §5.1: handshake messages may be fragmented across records",
            input: || Hello::tls13().records_of(50),
            expect: Answered,
            wire: true,
        },
        Case {
            name: "hello-in-1-byte-records",
            rfc: "RFC 8446 §5.1 (the smallest fragments)",
            input: || Hello::tls13().records_of(1),
            expect: Answered,
            wire: false,
        },
        // TLS 1.3 extension rules.
        Case {
            name: "pre-shared-key-not-last",
            rfc: "RFC 8446 §4.2.11: \"Servers MUST check that it is the last extension and \
                  otherwise fail the handshake with an illegal_parameter alert.\"",
            input: || {
                Hello::tls13()
                    .push(ext::PSK_KEY_EXCHANGE_MODES, v8(&[1]))
                    .push(ext::PRE_SHARED_KEY, psk(b"ticket", 32))
                    .push(0x0a0a, vec![])
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "pre-shared-key-without-modes",
            rfc: "RFC 8446 §4.2.9: \"If clients offer pre_shared_key without a \
                  psk_key_exchange_modes extension, servers MUST abort the handshake.\" \
                  (§9.2: missing_extension)",
            input: || {
                Hello::tls13()
                    .push(ext::PRE_SHARED_KEY, psk(b"ticket", 32))
                    .records()
            },
            expect: Alert(alert::MISSING_EXTENSION),
            wire: true,
        },
        Case {
            name: "unknown-psk-identity-is-a-full-handshake",
            rfc: "RFC 8446 §4.2.11: a server that cannot use an offered PSK goes on with a \
                  full handshake",
            input: || {
                Hello::tls13()
                    .push(ext::PSK_KEY_EXCHANGE_MODES, v8(&[1]))
                    .push(ext::PRE_SHARED_KEY, psk(b"not a ticket of ours", 32))
                    .records()
            },
            expect: Answered,
            wire: true,
        },
        Case {
            name: "tls13-without-groups-or-shares",
            rfc: "RFC 8446 §9.2: without pre_shared_key a ClientHello MUST contain \
                  signature_algorithms and supported_groups; \"Servers receiving a \
                  ClientHello which does not conform to these requirements MUST abort the \
                  handshake with a missing_extension alert.\"",
            input: || {
                tls13_only()
                    .without(ext::SUPPORTED_GROUPS)
                    .without(ext::KEY_SHARE)
                    .records()
            },
            expect: Alert(alert::MISSING_EXTENSION),
            wire: true,
        },
        Case {
            name: "tls13-without-signature-algorithms",
            rfc: "RFC 8446 §9.2 (signature_algorithms): missing_extension",
            input: || tls13_only().without(ext::SIGNATURE_ALGORITHMS).records(),
            expect: Alert(alert::MISSING_EXTENSION),
            wire: true,
        },
        Case {
            name: "supported-groups-empty",
            rfc: "RFC 8446 §4.2.7: NamedGroup named_group_list<2..2^16-1>: decode_error",
            input: || {
                Hello::tls13()
                    .set(ext::SUPPORTED_GROUPS, v16(&[]))
                    .records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "signature-algorithms-empty",
            rfc: "RFC 8446 §4.2.3: supported_signature_algorithms<2..2^16-2>: decode_error",
            input: || {
                Hello::tls13()
                    .set(ext::SIGNATURE_ALGORITHMS, v16(&[]))
                    .records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "no-signature-scheme-we-can-sign-with",
            rfc: "RFC 8446 §4.1.1: no overlap in parameters: handshake_failure",
            input: || {
                tls13_only()
                    .set(
                        ext::SIGNATURE_ALGORITHMS,
                        v16(&u16s(&[scheme::RSA_PSS_RSAE_SHA512])),
                    )
                    .records()
            },
            expect: Alert(alert::HANDSHAKE_FAILURE),
            wire: true,
        },
        // Key shares.
        Case {
            name: "key-share-empty-value",
            rfc: "RFC 8446 §4.2.8: opaque key_exchange<1..2^16-1>, and a share the group \
                  cannot use is illegal_parameter (§4.2.8.2)",
            input: || {
                Hello::tls13()
                    .set(ext::KEY_SHARE, key_shares(&[(group::X25519, &[])]))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "x25519-share-of-31-bytes",
            rfc: "RFC 8446 §4.2.8.2 / RFC 7748: an X25519 share is 32 bytes; \
                  illegal_parameter",
            input: || {
                Hello::tls13()
                    .set(ext::KEY_SHARE, key_shares(&[(group::X25519, &[9; 31])]))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "p256-share-off-the-curve",
            rfc: "RFC 8446 §4.2.8.2: \"peers MUST validate each other's public key\"; a \
                  point not on the curve is illegal_parameter",
            input: || {
                let mut point = vec![4u8];
                point.extend_from_slice(&[0x11; 64]);
                tls13_only()
                    .set(ext::SUPPORTED_GROUPS, v16(&u16s(&[group::SECP256R1])))
                    .set(ext::KEY_SHARE, key_shares(&[(group::SECP256R1, &point)]))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "key-share-entries-overrun",
            rfc: "RFC 8446 §6.2: a vector longer than what holds it is decode_error",
            input: || {
                let mut ks = key_shares(&[(group::X25519, &[9; 32])]);
                ks[5] = 0x40; // the entry claims 64 bytes
                Hello::tls13().set(ext::KEY_SHARE, ks).records()
            },
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "key-share-for-no-common-group",
            rfc: "RFC 8446 §4.1.1: \"If the server is unable to negotiate a supported set of \
                  parameters ... it MUST abort the handshake with either a handshake_failure \
                  or insufficient_security fatal alert\"",
            input: || {
                tls13_only()
                    .set(ext::SUPPORTED_GROUPS, v16(&u16s(&[0x0100])))
                    .set(ext::KEY_SHARE, key_shares(&[(0x0100, &[1; 256])]))
                    .records()
            },
            expect: Alert(alert::HANDSHAKE_FAILURE),
            wire: true,
        },
        // Server names (RFC 6066).
        Case {
            name: "sni-empty-list",
            rfc: "RFC 6066 §3: ServerName server_name_list<1..2^16-1>: decode_error",
            input: || Hello::tls13().set(ext::SERVER_NAME, v16(&[])).records(),
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "sni-with-nul",
            rfc: "RFC 6066 §3: a HostName is an ASCII DNS name without a trailing dot; a \
                  name that is not one is illegal_parameter",
            input: || {
                Hello::tls13()
                    .set(ext::SERVER_NAME, sni(b"test\0.example"))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "sni-not-ascii",
            rfc: "RFC 6066 §3: \"The hostname is represented as a byte string using ASCII \
                  encoding without a trailing dot.\"",
            input: || {
                Hello::tls13()
                    .set(ext::SERVER_NAME, sni("tést.example".as_bytes()))
                    .records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "sni-two-host-names",
            rfc: "RFC 6066 §3: \"The ServerNameList MUST NOT contain more than one name of \
                  the same name_type.\"",
            input: || {
                let mut list = vec![0u8];
                list.extend_from_slice(&v16(b"test.example"));
                list.push(0);
                list.extend_from_slice(&v16(b"other.example"));
                Hello::tls13().set(ext::SERVER_NAME, v16(&list)).records()
            },
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        // TLS 1.2 extensions.
        Case {
            name: "renegotiation-info-not-empty",
            rfc: "RFC 5746 §3.6: the server \"MUST verify that the length of the \
                  renegotiated_connection field is zero, and if it is not, MUST abort the \
                  handshake\" (with handshake_failure)",
            input: || {
                Hello::tls12()
                    .set(ext::RENEGOTIATION_INFO, v8(&[1; 12]))
                    .records()
            },
            expect: Alert(alert::HANDSHAKE_FAILURE),
            wire: true,
        },
        Case {
            name: "renegotiation-scsv",
            rfc: "RFC 5746 §3.6: TLS_EMPTY_RENEGOTIATION_INFO_SCSV is the empty extension",
            input: || {
                let mut h = Hello::tls12();
                h.suites.push(suite::EMPTY_RENEGOTIATION_INFO_SCSV);
                h.records()
            },
            expect: Answered,
            wire: true,
        },
        Case {
            name: "extended-master-secret",
            rfc: "RFC 7627 §5.1: the extension is offered with empty extension_data",
            input: || {
                Hello::tls12()
                    .set(ext::EXTENDED_MASTER_SECRET, vec![])
                    .records()
            },
            expect: Answered,
            wire: true,
        },
        Case {
            name: "unreadable-session-ticket",
            rfc: "RFC 5077 §3.4: a ticket the server cannot use leads to a full handshake",
            input: || {
                Hello::tls12()
                    .set(ext::SESSION_TICKET, vec![0x33; 150])
                    .records()
            },
            expect: Answered,
            wire: true,
        },
        // Record layer.
        Case {
            name: "unknown-record-type",
            rfc: "RFC 8446 §5: \"If a TLS implementation receives an unexpected record type, \
                  it MUST terminate the connection with an unexpected_message alert.\"",
            input: || record(0x19, &[0; 5]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
        Case {
            name: "application-data-before-the-handshake",
            rfc: "RFC 8446 §5 (an unexpected record type): unexpected_message",
            input: || record(23, &[0; 20]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
        Case {
            name: "record-overflow",
            rfc: "RFC 8446 §5.1: \"An endpoint that receives a record that exceeds this \
                  length MUST terminate the connection with a record_overflow alert.\"",
            input: || record(22, &vec![0; 16_385]),
            expect: Alert(alert::RECORD_OVERFLOW),
            wire: true,
        },
        Case {
            name: "empty-handshake-record",
            rfc: "RFC 8446 §5.1: \"Implementations MUST NOT send zero-length fragments of \
                  Handshake types\"; the RFC names no alert: a length out of range is \
                  decode_error (§6.2)",
            input: || then(record(22, &[]), &[hello13()]),
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "finished-first",
            rfc: "RFC 8446 §4: a message out of order is unexpected_message",
            input: || record(22, &handshake(20, &[0; 32])),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
        Case {
            name: "change-cipher-spec-before-the-hello",
            rfc: "RFC 8446 §5: change_cipher_spec may be received \"at any time after the \
                  first ClientHello message has been sent or received\"; before it: \
                  unexpected_message",
            input: || then(record(20, &[1]), &[hello13()]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
        Case {
            name: "change-cipher-spec-of-another-value",
            rfc: "RFC 8446 §5: \"An implementation which receives any other \
                  change_cipher_spec value ... MUST abort the handshake with an \
                  unexpected_message alert.\"",
            input: || then(hello13(), &[record(20, &[2])]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: false,
        },
        Case {
            name: "second-client-hello-tls13",
            rfc: "RFC 8446 §4.1.2: a second ClientHello only answers a HelloRetryRequest",
            input: || then(hello13(), &[hello13()]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: false,
        },
        Case {
            name: "client-fatal-alert-first",
            rfc: "RFC 8446 §6.2: \"Upon transmission or receipt of a fatal alert message, \
                  both parties MUST immediately close the connection.\"",
            input: || record(21, &[2, alert::HANDSHAKE_FAILURE]),
            expect: Closed,
            wire: true,
        },
        // TLS 1.2 message sequences (the server's alerts are plaintext until CCS).
        Case {
            name: "tls12-change-cipher-spec-before-key-exchange",
            rfc: "RFC 5246 §7.4: messages out of the handshake's order are \
                  unexpected_message",
            input: || then(hello12(), &[record(20, &[1])]),
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
        Case {
            name: "tls12-empty-client-key-exchange",
            rfc: "RFC 8422 §5.7: opaque point <1..2^8-1>; empty is decode_error",
            input: || then(hello12(), &[record(22, &handshake(16, &v8(&[])))]),
            expect: Alert(alert::DECODE_ERROR),
            wire: true,
        },
        Case {
            name: "tls12-client-key-exchange-short-point",
            rfc: "RFC 8422 §5.11 / RFC 7748: a public value of the wrong size for the \
                  group is illegal_parameter",
            input: || then(hello12(), &[record(22, &handshake(16, &v8(&[9; 31])))]),
            expect: Alert(alert::ILLEGAL_PARAMETER),
            wire: true,
        },
        Case {
            name: "tls12-warning-alert-flood",
            rfc: "RFC 5246 §7.2 leaves warnings to the receiver; a run of them is a \
                  denial of service, ended with unexpected_message after four (as OpenSSL \
                  and BoringSSL do)",
            input: || {
                let warning = record(21, &[1, 112]);
                then(
                    hello12(),
                    &[
                        warning.clone(),
                        warning.clone(),
                        warning.clone(),
                        warning.clone(),
                        warning,
                    ],
                )
            },
            expect: Alert(alert::UNEXPECTED_MESSAGE),
            wire: true,
        },
    ]
}

/// The engine in memory, configured like a `tls` vserver with one ECDSA P-256
/// certificate (`chain`/`key` PEM), fed `bytes`: what it did.
pub fn run_engine(cfg: &Arc<tls::ServerConfig>, bytes: &[u8]) -> Outcome {
    let mut c = ServerConn::new(cfg.clone(), 0);
    let mut out = Vec::new();
    let mut error = None;
    let mut fed = 0;
    while fed < bytes.len() && error.is_none() {
        let n = c.read_tls(&bytes[fed..]);
        fed += n;
        error = c.process().err();
        while let Some(j) = c.take_job() {
            if let Err(e) = c.complete(crypto_offload::run(j)) {
                error = Some(e);
            }
        }
        let p = c.pending_tls().to_vec();
        c.consume_tls(p.len());
        out.extend_from_slice(&p);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(c.pending_tls());
    if let Some(a) = error.as_ref().and_then(|e| e.alert()) {
        return Expect::Alert(a);
    }
    match outcome_of(&out) {
        Expect::Closed if error.is_none() && !c.is_closed() => {
            panic!(
                "the engine neither answered nor ended: {} bytes out",
                out.len()
            )
        }
        o => o,
    }
}

/// What a server's bytes say: its first plaintext fatal alert, or that it answered
/// with handshake records, or nothing (closed).
pub fn outcome_of(out: &[u8]) -> Outcome {
    let mut at = 0;
    let mut answered = false;
    while at + 5 <= out.len() {
        let len = usize::from(u16::from_be_bytes([out[at + 3], out[at + 4]]));
        match out[at] {
            21 if len == 2 && at + 7 <= out.len() => return Expect::Alert(out[at + 6]),
            22 => answered = true,
            _ => {}
        }
        at += 5 + len;
    }
    if answered {
        Expect::Answered
    } else {
        Expect::Closed
    }
}

/// A server configuration for the corpus: TLS 1.2 and 1.3, one certificate.
pub fn engine_config(chain_pem: &[u8], key_pem: &[u8]) -> Arc<tls::ServerConfig> {
    let ck = tls::CertifiedKey::from_pem(chain_pem, key_pem).expect("certificate");
    let site = tls::Site::new(vec![Arc::new(ck)]);
    Arc::new(tls::ServerConfig::new(vec![site]).expect("configuration"))
}

/// Hex, for handing cases to a script.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An ECDSA P-256 certificate for test.example and its key (PEM), self-signed.
pub fn certificate() -> (Vec<u8>, Vec<u8>) {
    use openssl::{asn1::Asn1Time, ec::*, hash::MessageDigest, nid::Nid, pkey::PKey, x509::*};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, "test.example")
        .unwrap();
    let n = n.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let san = extension::SubjectAlternativeName::new()
        .dns("test.example")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}
