//! Errors, and the one place that decides which alert each becomes.
//!
//! States return an [`Error`]; they never write alerts. [`Error::alert`] is a `match`
//! without a wildcard arm, so a new variant does not compile until someone picks its
//! alert. [`Error::class`] keeps apart the three kinds the counters report: the peer
//! broke the protocol, the peer wants something we do not support, a local failure.

use std::fmt;

/// TLS AlertDescription codes (RFC 8446 §6, RFC 5246 §7.2).
pub mod alert {
    pub const CLOSE_NOTIFY: u8 = 0;
    pub const UNEXPECTED_MESSAGE: u8 = 10;
    pub const BAD_RECORD_MAC: u8 = 20;
    pub const RECORD_OVERFLOW: u8 = 22;
    pub const HANDSHAKE_FAILURE: u8 = 40;
    pub const BAD_CERTIFICATE: u8 = 42;
    pub const ILLEGAL_PARAMETER: u8 = 47;
    pub const UNKNOWN_CA: u8 = 48;
    pub const DECODE_ERROR: u8 = 50;
    pub const DECRYPT_ERROR: u8 = 51;
    pub const PROTOCOL_VERSION: u8 = 70;
    pub const INTERNAL_ERROR: u8 = 80;
    pub const INAPPROPRIATE_FALLBACK: u8 = 86;
    pub const USER_CANCELED: u8 = 90;
    pub const NO_RENEGOTIATION: u8 = 100;
    pub const MISSING_EXTENSION: u8 = 109;
    pub const CERTIFICATE_REQUIRED: u8 = 116;
    pub const NO_APPLICATION_PROTOCOL: u8 = 120;

    /// The RFC's name of an alert (RFC 8446 §6, RFC 5246 §7.2), or "unknown".
    pub fn name(desc: u8) -> &'static str {
        match desc {
            CLOSE_NOTIFY => "close_notify",
            UNEXPECTED_MESSAGE => "unexpected_message",
            BAD_RECORD_MAC => "bad_record_mac",
            RECORD_OVERFLOW => "record_overflow",
            HANDSHAKE_FAILURE => "handshake_failure",
            BAD_CERTIFICATE => "bad_certificate",
            43 => "unsupported_certificate",
            44 => "certificate_revoked",
            45 => "certificate_expired",
            46 => "certificate_unknown",
            ILLEGAL_PARAMETER => "illegal_parameter",
            UNKNOWN_CA => "unknown_ca",
            49 => "access_denied",
            DECODE_ERROR => "decode_error",
            DECRYPT_ERROR => "decrypt_error",
            PROTOCOL_VERSION => "protocol_version",
            71 => "insufficient_security",
            INTERNAL_ERROR => "internal_error",
            INAPPROPRIATE_FALLBACK => "inappropriate_fallback",
            USER_CANCELED => "user_canceled",
            NO_RENEGOTIATION => "no_renegotiation",
            MISSING_EXTENSION => "missing_extension",
            110 => "unsupported_extension",
            112 => "unrecognized_name",
            CERTIFICATE_REQUIRED => "certificate_required",
            NO_APPLICATION_PROTOCOL => "no_application_protocol",
            _ => "unknown",
        }
    }

    /// The alert record's body: close_notify and no_renegotiation are warnings, every
    /// other alert we send is fatal.
    pub fn record(desc: u8) -> [u8; 2] {
        let level = if desc == CLOSE_NOTIFY || desc == NO_RENEGOTIATION {
            1
        } else {
            2
        };
        [level, desc]
    }
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    // --- the peer broke the protocol
    /// A message or record that does not parse.
    Decode(&'static str),
    /// A message or record type that is not allowed here.
    UnexpectedMessage(&'static str),
    /// A field with a value the protocol forbids.
    IllegalParameter(&'static str),
    /// A required extension is missing.
    MissingExtension(&'static str),
    /// A record failed authentication.
    BadRecordMac,
    /// A record longer than the protocol allows.
    RecordOverflow,
    /// The peer's Finished did not match the transcript.
    BadFinished,
    /// A non-empty renegotiation_info on an initial handshake (RFC 5746 §3.6).
    RenegotiationInfo,
    /// A TLS 1.3 PSK binder that does not verify (RFC 8446 §4.2.11).
    BadBinder,
    /// Resuming an extended-master-secret session without the extension (RFC 7627 §5.3).
    ResumptionWithoutEms,
    /// The peer's certificate chain did not verify against the CA bundle (or, in the
    /// client role, not for the server's name).
    BadCertificate { reason: String, unknown_ca: bool },
    /// The peer's CertificateVerify signature did not verify.
    BadCertificateVerify,
    /// Client authentication is required and the client sent no certificate.
    CertificateRequired { tls13: bool },
    // --- the peer wants something we do not support
    /// SSLv3 / TLS 1.0 / TLS 1.1, or no version in common.
    ProtocolVersion,
    /// No cipher suite, group or signature scheme in common.
    NoCommonParameters(&'static str),
    /// The client's ALPN list has nothing we serve.
    NoApplicationProtocol,
    /// TLS_FALLBACK_SCSV from a client that could have had a higher version.
    InappropriateFallback,
    // --- the peer ended it
    /// The peer sent a fatal alert.
    PeerAlert(u8),
    // --- local
    /// A crypto job failed for a reason that is not the peer's.
    Crypto(String),
    /// The handshake did not finish before its deadline.
    HandshakeTimeout,
    /// The caller broke the engine's contract (e.g. a completion with no job pending).
    Misuse(&'static str),
}

/// Which side is to blame, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    PeerMisbehaved,
    PeerIncompatible,
    PeerClosed,
    Local,
}

impl Error {
    /// The alert to send for this error, if any.
    pub fn alert(&self) -> Option<u8> {
        use alert::*;
        match self {
            Error::Decode(_) => Some(DECODE_ERROR),
            Error::UnexpectedMessage(_) => Some(UNEXPECTED_MESSAGE),
            Error::IllegalParameter(_) => Some(ILLEGAL_PARAMETER),
            Error::MissingExtension(_) => Some(MISSING_EXTENSION),
            Error::BadRecordMac => Some(BAD_RECORD_MAC),
            Error::RecordOverflow => Some(RECORD_OVERFLOW),
            Error::BadFinished => Some(DECRYPT_ERROR),
            Error::RenegotiationInfo => Some(HANDSHAKE_FAILURE),
            Error::BadBinder => Some(DECRYPT_ERROR),
            Error::ResumptionWithoutEms => Some(HANDSHAKE_FAILURE),
            Error::BadCertificate {
                unknown_ca: true, ..
            } => Some(UNKNOWN_CA),
            Error::BadCertificate { .. } => Some(BAD_CERTIFICATE),
            Error::BadCertificateVerify => Some(DECRYPT_ERROR),
            // RFC 8446 §4.4.2.4; TLS 1.2 has no such alert (RFC 5246 §7.4.6).
            Error::CertificateRequired { tls13: true } => Some(CERTIFICATE_REQUIRED),
            Error::CertificateRequired { tls13: false } => Some(HANDSHAKE_FAILURE),
            Error::ProtocolVersion => Some(PROTOCOL_VERSION),
            Error::NoCommonParameters(_) => Some(HANDSHAKE_FAILURE),
            Error::NoApplicationProtocol => Some(NO_APPLICATION_PROTOCOL),
            Error::InappropriateFallback => Some(INAPPROPRIATE_FALLBACK),
            Error::PeerAlert(_) => None,
            Error::Crypto(_) => Some(INTERNAL_ERROR),
            Error::HandshakeTimeout => None,
            Error::Misuse(_) => Some(INTERNAL_ERROR),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Decode(_)
            | Error::UnexpectedMessage(_)
            | Error::IllegalParameter(_)
            | Error::MissingExtension(_)
            | Error::BadRecordMac
            | Error::RecordOverflow
            | Error::BadFinished
            | Error::RenegotiationInfo
            | Error::BadBinder
            | Error::ResumptionWithoutEms
            | Error::BadCertificate { .. }
            | Error::BadCertificateVerify
            | Error::CertificateRequired { .. } => ErrorClass::PeerMisbehaved,
            Error::ProtocolVersion
            | Error::NoCommonParameters(_)
            | Error::NoApplicationProtocol
            | Error::InappropriateFallback => ErrorClass::PeerIncompatible,
            Error::PeerAlert(_) => ErrorClass::PeerClosed,
            Error::Crypto(_) | Error::HandshakeTimeout | Error::Misuse(_) => ErrorClass::Local,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decode(w) => write!(f, "malformed: {w}"),
            Error::UnexpectedMessage(w) => write!(f, "unexpected message: {w}"),
            Error::IllegalParameter(w) => write!(f, "illegal parameter: {w}"),
            Error::MissingExtension(w) => write!(f, "missing extension: {w}"),
            Error::BadRecordMac => f.write_str("record failed authentication"),
            Error::RecordOverflow => f.write_str("record too long"),
            Error::BadFinished => f.write_str("peer Finished does not match the transcript"),
            Error::RenegotiationInfo => {
                f.write_str("renegotiation_info not empty on an initial handshake")
            }
            Error::BadBinder => f.write_str("PSK binder does not verify"),
            Error::ResumptionWithoutEms => {
                f.write_str("resuming an extended master secret session without the extension")
            }
            Error::BadCertificate { reason, .. } => write!(f, "peer certificate: {reason}"),
            Error::BadCertificateVerify => f.write_str("peer CertificateVerify does not verify"),
            Error::CertificateRequired { .. } => f.write_str("client certificate required"),
            Error::ProtocolVersion => f.write_str("no supported protocol version"),
            Error::NoCommonParameters(w) => write!(f, "no {w} in common"),
            Error::NoApplicationProtocol => f.write_str("no ALPN protocol in common"),
            Error::InappropriateFallback => f.write_str("inappropriate fallback"),
            Error::PeerAlert(a) => write!(f, "peer sent alert {a}"),
            Error::Crypto(m) => write!(f, "crypto: {m}"),
            Error::HandshakeTimeout => f.write_str("handshake timed out"),
            Error::Misuse(m) => write!(f, "engine misuse: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crypto_offload::CryptoError> for Error {
    fn from(e: crypto_offload::CryptoError) -> Self {
        match e {
            crypto_offload::CryptoError::BadPeerKey => Error::IllegalParameter("key share"),
            crypto_offload::CryptoError::BadTag => Error::BadRecordMac,
            crypto_offload::CryptoError::BadBinder => Error::BadBinder,
            crypto_offload::CryptoError::BadCertificate { reason, unknown_ca } => {
                Error::BadCertificate { reason, unknown_ca }
            }
            crypto_offload::CryptoError::BadSignature => Error::BadCertificateVerify,
            crypto_offload::CryptoError::BadFinished => Error::BadFinished,
            other => Error::Crypto(other.to_string()),
        }
    }
}
