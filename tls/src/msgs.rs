//! Handshake messages: wire constants, the ClientHello parser and the server's
//! encoders, and the parsers of the server messages the client role reads
//! ([`ServerHello`], [`EncryptedExtensions`], [`NewSessionTicket`]). A ClientHello is
//! fully recognised here (lengths, list shapes, duplicate and misplaced extensions)
//! before any state code sees it.

use crate::codec::*;
use crate::error::Error;

pub mod content {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

pub mod hs {
    pub const HELLO_REQUEST: u8 = 0;
    pub const CLIENT_HELLO: u8 = 1;
    pub const SERVER_HELLO: u8 = 2;
    pub const NEW_SESSION_TICKET: u8 = 4;
    pub const ENCRYPTED_EXTENSIONS: u8 = 8;
    pub const CERTIFICATE: u8 = 11;
    pub const SERVER_KEY_EXCHANGE: u8 = 12;
    pub const CERTIFICATE_REQUEST: u8 = 13;
    pub const CERTIFICATE_STATUS: u8 = 22;
    pub const CERTIFICATE_VERIFY: u8 = 15;
    pub const SERVER_HELLO_DONE: u8 = 14;
    pub const CLIENT_KEY_EXCHANGE: u8 = 16;
    pub const FINISHED: u8 = 20;
    pub const KEY_UPDATE: u8 = 24;
    pub const MESSAGE_HASH: u8 = 254;
}

pub mod ext {
    pub const SERVER_NAME: u16 = 0;
    pub const STATUS_REQUEST: u16 = 5;
    pub const SUPPORTED_GROUPS: u16 = 10;
    pub const EC_POINT_FORMATS: u16 = 11;
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    pub const ALPN: u16 = 16;
    pub const EXTENDED_MASTER_SECRET: u16 = 23;
    pub const SESSION_TICKET: u16 = 35;
    pub const PRE_SHARED_KEY: u16 = 41;
    pub const EARLY_DATA: u16 = 42;
    pub const SUPPORTED_VERSIONS: u16 = 43;
    pub const CERTIFICATE_AUTHORITIES: u16 = 47;
    pub const PSK_KEY_EXCHANGE_MODES: u16 = 45;
    pub const KEY_SHARE: u16 = 51;
    pub const COOKIE: u16 = 44;
    pub const RENEGOTIATION_INFO: u16 = 0xff01;
}

pub mod version {
    pub const TLS12: u16 = 0x0303;
    pub const TLS13: u16 = 0x0304;
}

/// Cipher suite codes.
pub mod suite {
    pub const TLS13_AES_128_GCM_SHA256: u16 = 0x1301;
    pub const TLS13_AES_256_GCM_SHA384: u16 = 0x1302;
    pub const TLS13_CHACHA20_POLY1305_SHA256: u16 = 0x1303;
    pub const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
    pub const ECDHE_ECDSA_AES256_GCM_SHA384: u16 = 0xc02c;
    pub const ECDHE_RSA_AES128_GCM_SHA256: u16 = 0xc02f;
    pub const ECDHE_RSA_AES256_GCM_SHA384: u16 = 0xc030;
    pub const ECDHE_RSA_CHACHA20_POLY1305: u16 = 0xcca8;
    pub const ECDHE_ECDSA_CHACHA20_POLY1305: u16 = 0xcca9;
    pub const EMPTY_RENEGOTIATION_INFO_SCSV: u16 = 0x00ff;
    pub const FALLBACK_SCSV: u16 = 0x5600;

    /// A TLS 1.3 suite (0x13xx); every other suite the engine has is TLS 1.2's.
    pub fn is_tls13(s: u16) -> bool {
        s >> 8 == 0x13
    }

    /// Every suite the engine negotiates, TLS 1.3 first.
    pub const ALL: [u16; 9] = [
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        ECDHE_ECDSA_AES128_GCM_SHA256,
        ECDHE_ECDSA_AES256_GCM_SHA384,
        ECDHE_ECDSA_CHACHA20_POLY1305,
        ECDHE_RSA_AES128_GCM_SHA256,
        ECDHE_RSA_AES256_GCM_SHA384,
        ECDHE_RSA_CHACHA20_POLY1305,
    ];

    /// The IANA name of a suite the engine negotiates; "unknown" for others.
    pub fn name(s: u16) -> &'static str {
        match s {
            TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
            TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
            TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
            ECDHE_ECDSA_AES128_GCM_SHA256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ECDHE_ECDSA_AES256_GCM_SHA384 => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ECDHE_ECDSA_CHACHA20_POLY1305 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ECDHE_RSA_AES128_GCM_SHA256 => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ECDHE_RSA_AES256_GCM_SHA384 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ECDHE_RSA_CHACHA20_POLY1305 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            _ => "unknown",
        }
    }
}

/// NamedGroup codes.
pub mod group {
    pub const SECP256R1: u16 = 23;
    pub const SECP384R1: u16 = 24;
    pub const SECP521R1: u16 = 25;
    pub const X25519: u16 = 29;
    pub const X448: u16 = 30;
    /// The post-quantum hybrid (draft-ietf-tls-ecdhe-mlkem), TLS 1.3 only.
    pub const X25519MLKEM768: u16 = 0x11ec;

    /// Every group the engine speaks, cheapest first (the hybrid, whose ML-KEM half is
    /// cheap, is first for its protection): the default order of preference.
    pub const ALL: [u16; 6] = [
        X25519MLKEM768,
        X25519,
        SECP256R1,
        X448,
        SECP521R1,
        SECP384R1,
    ];

    /// The IANA name of a group the engine speaks; "unknown" for others.
    pub fn name(g: u16) -> &'static str {
        match g {
            X25519MLKEM768 => "X25519MLKEM768",
            X25519 => "x25519",
            SECP256R1 => "secp256r1",
            SECP384R1 => "secp384r1",
            SECP521R1 => "secp521r1",
            X448 => "x448",
            _ => "unknown",
        }
    }
}

/// SignatureScheme codes.
pub mod scheme {
    pub const RSA_PKCS1_SHA256: u16 = 0x0401;
    pub const RSA_PKCS1_SHA384: u16 = 0x0501;
    pub const RSA_PKCS1_SHA512: u16 = 0x0601;
    pub const ECDSA_SECP256R1_SHA256: u16 = 0x0403;
    pub const ECDSA_SECP384R1_SHA384: u16 = 0x0503;
    pub const ECDSA_SECP521R1_SHA512: u16 = 0x0603;
    pub const RSA_PSS_RSAE_SHA256: u16 = 0x0804;
    pub const RSA_PSS_RSAE_SHA384: u16 = 0x0805;
    pub const RSA_PSS_RSAE_SHA512: u16 = 0x0806;
}

/// RFC 8446 §4.1.3: the ServerHello.random of a HelloRetryRequest, SHA-256("HelloRetryRequest").
pub const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// RFC 8446 §4.1.3: the last 8 bytes of ServerHello.random when a TLS 1.3 server
/// negotiates TLS 1.2.
pub const DOWNGRADE_TLS12: [u8; 8] = *b"DOWNGRD\x01";

/// A parsed ClientHello, borrowing the message bytes. Lists are kept as validated raw
/// slices and iterated on demand, so parsing allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct ClientHello<'a> {
    pub legacy_version: u16,
    pub random: [u8; 32],
    pub session_id: &'a [u8],
    suites: &'a [u8],
    pub compression: &'a [u8],
    pub sni: Option<&'a [u8]>,
    groups: Option<&'a [u8]>,
    pub point_formats: Option<&'a [u8]>,
    sig_algs: Option<&'a [u8]>,
    alpn: Option<&'a [u8]>,
    pub extended_master_secret: bool,
    versions: Option<&'a [u8]>,
    key_shares: Option<&'a [u8]>,
    pub renegotiation_info: Option<&'a [u8]>,
    /// RFC 5077: the client supports tickets (empty) or presents one.
    pub session_ticket: Option<&'a [u8]>,
    /// RFC 6066 §8: the client asks for a stapled OCSP response (status_type ocsp).
    pub status_request: bool,
    /// RFC 8446 §4.2.9: the PSK key exchange modes offered.
    pub psk_modes: Option<&'a [u8]>,
    /// RFC 8446 §4.2.10: the client sends 0-RTT data after this hello (never accepted
    /// here: it is skipped).
    pub early_data: bool,
    /// RFC 8446 §4.2.11: the offered PSK identities and their binders (same count).
    psk_identities: Option<&'a [u8]>,
    psk_binders: Option<&'a [u8]>,
    /// Offset, in the ClientHello body, of the binders list (its length prefix): the
    /// binders cover the message up to there.
    pub binders_at: usize,
    pub has_psk: bool,
}

impl<'a> ClientHello<'a> {
    /// Parse a ClientHello body (after the 4-byte handshake header).
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let mut ch = ClientHello {
            legacy_version: r.u16()?,
            ..Default::default()
        };
        ch.random.copy_from_slice(r.take(32)?);
        ch.session_id = r.vec8()?;
        if ch.session_id.len() > 32 {
            return Err(Error::Decode("session id longer than 32"));
        }
        ch.suites = r.vec16()?;
        if ch.suites.is_empty() || ch.suites.len() % 2 != 0 {
            return Err(Error::Decode("cipher suite list"));
        }
        ch.compression = r.vec8()?;
        if ch.compression.is_empty() {
            return Err(Error::Decode("compression methods"));
        }
        if r.is_empty() {
            return Ok(ch); // no extensions at all
        }
        let mut exts = Reader::new(r.vec16()?);
        r.finish("bytes after ClientHello extensions")?;
        // Any number of extensions (GREASE, padding, post-quantum shares make real
        // hellos large): the message's own size bounds them; duplicates are found in a
        // short inline list, or in an 8 KiB bitmap past it (ExtensionSet).
        let mut seen = ExtensionSet::default();
        while !exts.is_empty() {
            let typ = exts.u16()?;
            let data = exts.vec16()?;
            seen.note(typ)?;
            if ch.has_psk {
                // RFC 8446 §4.2.11: pre_shared_key MUST be the last extension.
                return Err(Error::IllegalParameter("pre_shared_key is not last"));
            }
            ch.parse_extension(typ, data)?;
            if typ == ext::PRE_SHARED_KEY {
                // The binders end the extension; find where they start in the body.
                let binders = ch.psk_binders.unwrap_or(&[]);
                ch.binders_at = binders.as_ptr() as usize - body.as_ptr() as usize - 2;
            }
        }
        Ok(ch)
    }

    fn parse_extension(&mut self, typ: u16, data: &'a [u8]) -> Result<(), Error> {
        let mut r = Reader::new(data);
        match typ {
            ext::SERVER_NAME => {
                // RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`: an empty list
                // does not decode.
                let list = r.vec16()?;
                if list.is_empty() {
                    return Err(Error::Decode("empty server_name list"));
                }
                let mut list = Reader::new(list);
                while !list.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        if self.sni.is_some() {
                            return Err(Error::IllegalParameter("two host names in server_name"));
                        }
                        if name.is_empty() {
                            return Err(Error::Decode("empty server_name host name"));
                        }
                        // It decodes, but is no DNS host name (RFC 6066 §3: "the byte
                        // string ... using ASCII encoding without a trailing dot"): a
                        // NUL, control character, space or non-ASCII byte.
                        if !name.iter().all(|b| b.is_ascii_graphic()) {
                            return Err(Error::IllegalParameter(
                                "server_name host name is not ASCII letters, digits and punctuation",
                            ));
                        }
                        self.sni = Some(name);
                    }
                }
            }
            ext::SUPPORTED_GROUPS => self.groups = Some(even_list(r.vec16()?, "supported_groups")?),
            ext::EC_POINT_FORMATS => {
                self.point_formats = Some(nonempty(r.vec8()?, "ec_point_formats")?)
            }
            ext::SIGNATURE_ALGORITHMS => {
                self.sig_algs = Some(even_list(r.vec16()?, "signature_algorithms")?)
            }
            ext::ALPN => {
                let list = r.vec16()?;
                let mut names = Reader::new(list);
                if names.is_empty() {
                    return Err(Error::Decode("empty ALPN list"));
                }
                while !names.is_empty() {
                    if names.vec8()?.is_empty() {
                        return Err(Error::Decode("empty ALPN protocol name"));
                    }
                }
                self.alpn = Some(list);
            }
            ext::EXTENDED_MASTER_SECRET => self.extended_master_secret = true,
            ext::SUPPORTED_VERSIONS => {
                self.versions = Some(even_list(r.vec8()?, "supported_versions")?)
            }
            ext::KEY_SHARE => {
                let list = r.vec16()?;
                let mut shares = Reader::new(list);
                while !shares.is_empty() {
                    shares.u16()?;
                    // RFC 8446 §4.2.8: `opaque key_exchange<1..2^16-1>`; peers answer
                    // an empty one with illegal_parameter (it decodes, it is not a key).
                    if shares.vec16()?.is_empty() {
                        return Err(Error::IllegalParameter("empty key share"));
                    }
                }
                self.key_shares = Some(list);
            }
            ext::RENEGOTIATION_INFO => self.renegotiation_info = Some(r.vec8()?),
            ext::PRE_SHARED_KEY => {
                let ids = r.vec16()?;
                let binders = r.vec16()?;
                let (mut a, mut b) = (Reader::new(ids), Reader::new(binders));
                let mut n = 0;
                while !a.is_empty() {
                    if a.vec16()?.is_empty() {
                        return Err(Error::Decode("empty PSK identity"));
                    }
                    a.u32()?;
                    let binder = b.vec8()?;
                    if binder.len() < 32 {
                        return Err(Error::Decode("PSK binder shorter than 32"));
                    }
                    n += 1;
                }
                if n == 0 || !b.is_empty() {
                    return Err(Error::IllegalParameter("PSK identities and binders differ"));
                }
                self.has_psk = true;
                self.psk_identities = Some(ids);
                self.psk_binders = Some(binders);
            }
            ext::SESSION_TICKET => {
                self.session_ticket = Some(data);
                return Ok(());
            }
            ext::PSK_KEY_EXCHANGE_MODES => {
                self.psk_modes = Some(nonempty(r.vec8()?, "psk_key_exchange_modes")?)
            }
            // In a ClientHello the extension is empty (RFC 8446 §4.2.10).
            ext::EARLY_DATA => self.early_data = true,
            // RFC 6066 §8: CertificateStatusRequest; only status_type ocsp (1) is
            // answered, its responder list and extensions are not looked at.
            ext::STATUS_REQUEST => {
                self.status_request = r.u8()? == 1;
                return Ok(());
            }
            // Everything else is ignored, as RFC 8446 §4.2 requires of unknown
            // extensions.
            _ => return Ok(()),
        }
        r.finish("bytes after an extension's body")
    }

    pub fn suites(&self) -> impl Iterator<Item = u16> + '_ {
        u16s(self.suites)
    }
    pub fn offers_suite(&self, s: u16) -> bool {
        self.suites().any(|x| x == s)
    }
    pub fn groups(&self) -> Option<impl Iterator<Item = u16> + '_> {
        self.groups.map(u16s)
    }
    pub fn offers_group(&self, g: u16) -> bool {
        self.groups.is_some_and(|l| u16s(l).any(|x| x == g))
    }
    pub fn sig_algs(&self) -> Option<impl Iterator<Item = u16> + '_> {
        self.sig_algs.map(u16s)
    }
    pub fn offers_scheme(&self, s: u16) -> bool {
        self.sig_algs.is_some_and(|l| u16s(l).any(|x| x == s))
    }
    pub fn has_sig_algs(&self) -> bool {
        self.sig_algs.is_some()
    }
    pub fn versions(&self) -> Option<impl Iterator<Item = u16> + '_> {
        self.versions.map(u16s)
    }
    pub fn alpn(&self) -> Option<impl Iterator<Item = &'a [u8]> + 'a> {
        self.alpn.map(|l| {
            let mut r = Reader::new(l);
            std::iter::from_fn(move || r.vec8().ok())
        })
    }
    pub fn offers_psk_mode(&self, mode: u8) -> bool {
        self.psk_modes.is_some_and(|m| m.contains(&mode))
    }
    /// Offered PSKs in the client's order, as (identity, obfuscated_ticket_age, binder).
    pub fn psks(&self) -> impl Iterator<Item = (&'a [u8], u32, &'a [u8])> + 'a {
        let mut a = Reader::new(self.psk_identities.unwrap_or(&[]));
        let mut b = Reader::new(self.psk_binders.unwrap_or(&[]));
        std::iter::from_fn(move || Some((a.vec16().ok()?, a.u32().ok()?, b.vec8().ok()?)))
    }
    pub fn has_key_shares(&self) -> bool {
        self.key_shares.is_some()
    }
    /// Key shares in the client's order, as (group, public value).
    pub fn key_shares(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let mut r = Reader::new(self.key_shares.unwrap_or(&[]));
        std::iter::from_fn(move || Some((r.u16().ok()?, r.vec16().ok()?)))
    }
}

/// Extension types seen in one ClientHello (RFC 8446 §4.2: "There MUST NOT be more than
/// one extension of the same type in a given extension block"). A real hello has a
/// dozen or two: they are kept inline and searched; past [`FEW_EXTENSIONS`] (GREASE,
/// padding and post-quantum shares make large hellos, and a hostile one can carry
/// thousands) the set becomes an 8 KiB bitmap, one bit per type, so a check stays O(1).
/// Allocating and zeroing that bitmap for every hello cost about 0.4 µs of a resumed
/// TLS 1.2 handshake.
enum ExtensionSet {
    Few(usize, [u16; FEW_EXTENSIONS]),
    Many(Box<[u64; 1024]>),
}

const FEW_EXTENSIONS: usize = 32;

impl Default for ExtensionSet {
    fn default() -> Self {
        ExtensionSet::Few(0, [0; FEW_EXTENSIONS])
    }
}

impl ExtensionSet {
    fn note(&mut self, typ: u16) -> Result<(), Error> {
        let new = match self {
            ExtensionSet::Few(n, types) if types[..*n].contains(&typ) => false,
            ExtensionSet::Few(n, types) if *n < FEW_EXTENSIONS => {
                types[*n] = typ;
                *n += 1;
                true
            }
            ExtensionSet::Few(_, types) => {
                let mut bits = Box::new([0u64; 1024]);
                for &t in types.iter().chain([&typ]) {
                    set_bit(&mut bits, t);
                }
                *self = ExtensionSet::Many(bits);
                true
            }
            ExtensionSet::Many(bits) => set_bit(bits, typ),
        };
        if new {
            Ok(())
        } else {
            Err(Error::IllegalParameter("duplicate extension"))
        }
    }
}

/// Sets `t`'s bit; whether it was clear.
fn set_bit(bits: &mut [u64; 1024], t: u16) -> bool {
    let (w, b) = (usize::from(t) / 64, t % 64);
    let clear = bits[w] & (1 << b) == 0;
    bits[w] |= 1 << b;
    clear
}

/// Records an extension type seen in a message: a repeat is illegal, and more than
/// `limit` extensions is not a message we read.
fn note_extension(seen: &mut Vec<u16>, typ: u16, limit: usize) -> Result<(), Error> {
    if seen.contains(&typ) {
        return Err(Error::IllegalParameter("duplicate extension"));
    }
    if seen.len() >= limit {
        return Err(Error::Decode("too many extensions"));
    }
    seen.push(typ);
    Ok(())
}

fn even_list<'a>(l: &'a [u8], what: &'static str) -> Result<&'a [u8], Error> {
    if l.is_empty() || l.len() % 2 != 0 {
        return Err(Error::Decode(what));
    }
    Ok(l)
}

fn nonempty<'a>(l: &'a [u8], what: &'static str) -> Result<&'a [u8], Error> {
    if l.is_empty() {
        return Err(Error::Decode(what));
    }
    Ok(l)
}

/// An extension being written into `out`: its type, then a 2-byte length.
pub fn put_ext(out: &mut Vec<u8>, typ: u16, body: impl FnOnce(&mut Vec<u8>)) {
    put_u16(out, typ);
    let at = start_len(out, 2);
    body(out);
    end_len(out, at, 2);
}

/// The server's ALPN extension: exactly one protocol (RFC 7301 §3.1).
pub fn put_alpn_ext(out: &mut Vec<u8>, protocol: &[u8]) {
    put_ext(out, ext::ALPN, |m| {
        put_u16(m, protocol.len() as u16 + 1);
        m.push(protocol.len() as u8);
        m.extend_from_slice(protocol);
    });
}

/// Write a handshake message: header, then whatever `body` writes.
pub fn put_handshake(out: &mut Vec<u8>, typ: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(typ);
    let at = start_len(out, 3);
    body(out);
    end_len(out, at, 3);
}

/// TLS 1.2 Certificate message (RFC 5246 §7.4.2): the chain, leaf first.
pub fn certificate12(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    put_handshake(&mut m, hs::CERTIFICATE, |m| {
        let at = start_len(m, 3);
        for c in chain {
            let c_at = start_len(m, 3);
            m.extend_from_slice(c);
            end_len(m, c_at, 3);
        }
        end_len(m, at, 3);
    });
    m
}

/// TLS 1.3 Certificate message (RFC 8446 §4.4.2): empty context, no per-entry extensions.
pub fn certificate13(chain: &[Vec<u8>]) -> Vec<u8> {
    certificate13_stapled(chain, None)
}

/// TLS 1.3 Certificate message with `ocsp` (a DER OCSPResponse) in the leaf entry's
/// status_request extension (RFC 8446 §4.4.2.1).
pub fn certificate13_stapled(chain: &[Vec<u8>], ocsp: Option<&[u8]>) -> Vec<u8> {
    let mut m = Vec::new();
    put_handshake(&mut m, hs::CERTIFICATE, |m| {
        m.push(0);
        let at = start_len(m, 3);
        for (i, c) in chain.iter().enumerate() {
            let c_at = start_len(m, 3);
            m.extend_from_slice(c);
            end_len(m, c_at, 3);
            let e_at = start_len(m, 2);
            if let (0, Some(r)) = (i, ocsp) {
                put_ext(m, ext::STATUS_REQUEST, |m| put_certificate_status(m, r));
            }
            end_len(m, e_at, 2);
        }
        end_len(m, at, 3);
    });
    m
}

/// RFC 6066 §8's CertificateStatus body: status_type ocsp, then the response.
fn put_certificate_status(m: &mut Vec<u8>, ocsp: &[u8]) {
    m.push(1);
    let at = start_len(m, 3);
    m.extend_from_slice(ocsp);
    end_len(m, at, 3);
}

/// The TLS 1.2 CertificateStatus handshake message (RFC 6066 §8), sent right after the
/// Certificate.
pub fn certificate_status12(ocsp: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    put_handshake(&mut m, hs::CERTIFICATE_STATUS, |m| {
        put_certificate_status(m, ocsp)
    });
    m
}

/// The signature schemes a client certificate may sign with. TLS 1.3: ECDSA on its
/// bound curves and RSA-PSS (RFC 8446 §4.2.3).
pub const CLIENT_SCHEMES13: [u16; 5] = [
    scheme::ECDSA_SECP256R1_SHA256,
    scheme::ECDSA_SECP384R1_SHA384,
    scheme::RSA_PSS_RSAE_SHA256,
    scheme::RSA_PSS_RSAE_SHA384,
    scheme::RSA_PSS_RSAE_SHA512,
];
/// TLS 1.2, per suite hash: only schemes with the transcript's own hash are asked for,
/// so the CertificateVerify is checked against the transcript hash already computed.
pub const CLIENT_SCHEMES12_SHA256: [u16; 3] = [
    scheme::ECDSA_SECP256R1_SHA256,
    scheme::RSA_PSS_RSAE_SHA256,
    scheme::RSA_PKCS1_SHA256,
];
pub const CLIENT_SCHEMES12_SHA384: [u16; 3] = [
    scheme::ECDSA_SECP384R1_SHA384,
    scheme::RSA_PSS_RSAE_SHA384,
    scheme::RSA_PKCS1_SHA384,
];

fn put_ca_names(m: &mut Vec<u8>, names: &[Vec<u8>]) {
    let at = start_len(m, 2);
    for n in names {
        put_u16(m, n.len() as u16);
        m.extend_from_slice(n);
    }
    end_len(m, at, 2);
}

/// TLS 1.2 CertificateRequest (RFC 5246 §7.4.4): RSA and ECDSA certificates, the given
/// schemes, and the trusted CAs' names.
pub fn certificate_request12(schemes: &[u16], ca_names: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    put_handshake(&mut m, hs::CERTIFICATE_REQUEST, |m| {
        m.extend_from_slice(&[2, 1, 64]); // rsa_sign, ecdsa_sign
        put_u16(m, 2 * schemes.len() as u16);
        for &s in schemes {
            put_u16(m, s);
        }
        put_ca_names(m, ca_names);
    });
    m
}

/// TLS 1.3 CertificateRequest (RFC 8446 §4.3.2): empty context, signature_algorithms
/// and certificate_authorities.
pub fn certificate_request13(schemes: &[u16], ca_names: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    put_handshake(&mut m, hs::CERTIFICATE_REQUEST, |m| {
        m.push(0);
        let at = start_len(m, 2);
        put_ext(m, ext::SIGNATURE_ALGORITHMS, |m| {
            put_u16(m, 2 * schemes.len() as u16);
            for &s in schemes {
                put_u16(m, s);
            }
        });
        if !ca_names.is_empty() {
            put_ext(m, ext::CERTIFICATE_AUTHORITIES, |m| {
                put_ca_names(m, ca_names)
            });
        }
        end_len(m, at, 2);
    });
    m
}

/// A client's Certificate message body: the chain (DER, leaf first; may be empty).
/// TLS 1.3 entries carry extensions (ignored) and the message a request context, which
/// must be the empty one we sent.
pub fn parse_certificate(body: &[u8], tls13: bool) -> Result<Vec<Vec<u8>>, Error> {
    let mut r = Reader::new(body);
    if tls13 && !r.vec8()?.is_empty() {
        return Err(Error::IllegalParameter("certificate_request_context"));
    }
    let n = r.u24()?;
    let mut list = Reader::new(r.take(n)?);
    r.finish("bytes after the certificate list")?;
    let mut chain = Vec::new();
    while !list.is_empty() {
        let n = list.u24()?;
        let der = list.take(n)?;
        if der.is_empty() {
            return Err(Error::Decode("empty certificate"));
        }
        if tls13 {
            list.vec16()?;
        }
        if chain.len() == 16 {
            return Err(Error::Decode("certificate chain longer than 16"));
        }
        chain.push(der.to_vec());
    }
    Ok(chain)
}

/// A CertificateVerify body: (scheme, signature).
pub fn parse_certificate_verify(body: &[u8]) -> Result<(u16, &[u8]), Error> {
    let mut r = Reader::new(body);
    let scheme = r.u16()?;
    let sig = r.vec16()?;
    r.finish("bytes after the signature")?;
    if sig.is_empty() {
        return Err(Error::Decode("empty signature"));
    }
    Ok((scheme, sig))
}

/// A ServerHello (or HelloRetryRequest) as the client role reads it, borrowing the
/// message body. Extensions the client never offers are noted, not refused, so that
/// the caller can first tell a TLS 1.2 server (no supported_versions) from a broken one.
#[derive(Debug, Default, Clone)]
pub struct ServerHello<'a> {
    pub legacy_version: u16,
    pub random: &'a [u8],
    pub session_id: &'a [u8],
    pub suite: u16,
    /// supported_versions' selected version.
    pub version: Option<u16>,
    /// key_share: the group and the server's share (a HelloRetryRequest: the group the
    /// server wants, and an empty share).
    pub key_share: Option<(u16, &'a [u8])>,
    /// pre_shared_key: the selected identity.
    pub psk: Option<u16>,
    /// A HelloRetryRequest (its random is [`HRR_RANDOM`]).
    pub retry: bool,
    /// A HelloRetryRequest's cookie, to echo in the second ClientHello.
    pub cookie: Option<&'a [u8]>,
    /// An extension a ServerHello may not carry here.
    pub unsolicited: bool,
    /// TLS 1.2 extensions (any of them makes a TLS 1.3 ServerHello illegal):
    /// extended_master_secret (RFC 7627), renegotiation_info's body (RFC 5746), the
    /// session_ticket acknowledgement (RFC 5077), the ALPN choice (RFC 7301).
    pub ems: bool,
    pub renegotiation_info: Option<&'a [u8]>,
    pub ticket_ack: bool,
    pub alpn: Option<&'a [u8]>,
    pub tls12_extensions: bool,
}

impl<'a> ServerHello<'a> {
    /// Parse a ServerHello body (after the 4-byte handshake header).
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let mut sh = ServerHello {
            legacy_version: r.u16()?,
            random: r.take(32)?,
            session_id: r.vec8()?,
            ..Default::default()
        };
        if sh.session_id.len() > 32 {
            return Err(Error::Decode("session id longer than 32"));
        }
        sh.suite = r.u16()?;
        if r.u8()? != 0 {
            return Err(Error::IllegalParameter("compression method"));
        }
        sh.retry = sh.random == HRR_RANDOM;
        if r.is_empty() {
            return Ok(sh);
        }
        let mut exts = Reader::new(r.vec16()?);
        r.finish("bytes after ServerHello extensions")?;
        let mut seen: Vec<u16> = Vec::new();
        while !exts.is_empty() {
            let typ = exts.u16()?;
            let mut d = Reader::new(exts.vec16()?);
            note_extension(&mut seen, typ, 32)?;
            match typ {
                ext::SUPPORTED_VERSIONS => sh.version = Some(d.u16()?),
                ext::KEY_SHARE if sh.retry => sh.key_share = Some((d.u16()?, &[])),
                ext::KEY_SHARE => {
                    let group = d.u16()?;
                    let share = d.vec16()?;
                    if share.is_empty() {
                        return Err(Error::Decode("empty key share"));
                    }
                    sh.key_share = Some((group, share));
                }
                ext::PRE_SHARED_KEY if !sh.retry => sh.psk = Some(d.u16()?),
                ext::EXTENDED_MASTER_SECRET if !sh.retry => {
                    sh.ems = true;
                    sh.tls12_extensions = true;
                }
                ext::RENEGOTIATION_INFO if !sh.retry => {
                    sh.renegotiation_info = Some(d.vec8()?);
                    sh.tls12_extensions = true;
                }
                ext::SESSION_TICKET if !sh.retry => {
                    sh.ticket_ack = true;
                    sh.tls12_extensions = true;
                }
                ext::EC_POINT_FORMATS | ext::SERVER_NAME if !sh.retry => {
                    d.rest();
                    sh.tls12_extensions = true;
                }
                ext::ALPN if !sh.retry => {
                    // RFC 7301 §3.1: exactly one protocol name.
                    let mut list = Reader::new(d.vec16()?);
                    let name = list.vec8()?;
                    list.finish("more than one ALPN protocol")?;
                    if name.is_empty() {
                        return Err(Error::Decode("empty ALPN protocol name"));
                    }
                    sh.alpn = Some(name);
                    sh.tls12_extensions = true;
                }
                ext::COOKIE if sh.retry => {
                    // RFC 8446 §4.2.2: opaque cookie<1..2^16-1>.
                    let c = d.vec16()?;
                    if c.is_empty() {
                        return Err(Error::Decode("empty cookie"));
                    }
                    sh.cookie = Some(c);
                }
                _ => {
                    sh.unsolicited = true;
                    d.rest();
                }
            }
            d.finish("bytes after an extension's body")?;
        }
        Ok(sh)
    }
}

/// EncryptedExtensions as the client role reads them: the server's ALPN choice.
#[derive(Debug, Default, Clone)]
pub struct EncryptedExtensions<'a> {
    pub alpn: Option<&'a [u8]>,
}

impl<'a> EncryptedExtensions<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let mut exts = Reader::new(r.vec16()?);
        r.finish("bytes after EncryptedExtensions")?;
        let mut ee = EncryptedExtensions::default();
        let mut seen: Vec<u16> = Vec::new();
        while !exts.is_empty() {
            let typ = exts.u16()?;
            let mut d = Reader::new(exts.vec16()?);
            note_extension(&mut seen, typ, 32)?;
            match typ {
                ext::ALPN => {
                    // RFC 7301 §3.1: exactly one protocol name.
                    let mut list = Reader::new(d.vec16()?);
                    let name = list.vec8()?;
                    list.finish("more than one ALPN protocol")?;
                    if name.is_empty() {
                        return Err(Error::Decode("empty ALPN protocol name"));
                    }
                    ee.alpn = Some(name);
                }
                // RFC 6066 §3: the server's acknowledgement is empty.
                ext::SERVER_NAME => {}
                // RFC 8446 §4.2: these never appear in EncryptedExtensions.
                ext::KEY_SHARE
                | ext::PRE_SHARED_KEY
                | ext::SUPPORTED_VERSIONS
                | ext::SIGNATURE_ALGORITHMS
                | ext::PSK_KEY_EXCHANGE_MODES => {
                    return Err(Error::IllegalParameter(
                        "extension not allowed in EncryptedExtensions",
                    ))
                }
                _ => {
                    d.rest();
                }
            }
            d.finish("bytes after an extension's body")?;
        }
        Ok(ee)
    }
}

/// A TLS 1.3 CertificateRequest body (RFC 8446 §4.3.2), as a client reads it.
#[derive(Debug, Default)]
pub struct CertificateRequest13<'a> {
    /// Zero length during the handshake (non-empty only in post-handshake auth).
    pub context: &'a [u8],
    /// signature_algorithms: the schemes the server accepts in the CertificateVerify.
    pub schemes: Vec<u16>,
}

impl<'a> CertificateRequest13<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let context = r.vec8()?;
        let mut exts = Reader::new(r.vec16()?);
        r.finish("bytes after CertificateRequest")?;
        let mut seen: Vec<u16> = Vec::new();
        let mut schemes = None;
        while !exts.is_empty() {
            let typ = exts.u16()?;
            let mut d = Reader::new(exts.vec16()?);
            note_extension(&mut seen, typ, 32)?;
            match typ {
                ext::SIGNATURE_ALGORITHMS => {
                    let mut list = Reader::new(d.vec16()?);
                    let mut v = Vec::new();
                    while !list.is_empty() {
                        v.push(list.u16()?);
                    }
                    if v.is_empty() {
                        return Err(Error::Decode("empty signature_algorithms"));
                    }
                    schemes = Some(v);
                }
                // certificate_authorities, oid_filters, and what is unknown: ignored
                // (RFC 8446 §4.3.2: clients MUST ignore unrecognized extensions).
                _ => {
                    d.rest();
                }
            }
            d.finish("bytes after an extension's body")?;
        }
        // RFC 8446 §4.3.2: "The "signature_algorithms" extension MUST be specified".
        let schemes = schemes.ok_or(Error::MissingExtension(
            "signature_algorithms in CertificateRequest",
        ))?;
        Ok(CertificateRequest13 { context, schemes })
    }
}

/// A TLS 1.3 NewSessionTicket body (RFC 8446 §4.6.1).
#[derive(Debug, Clone)]
pub struct NewSessionTicket<'a> {
    pub lifetime_s: u32,
    pub age_add: u32,
    pub nonce: &'a [u8],
    pub ticket: &'a [u8],
}

impl<'a> NewSessionTicket<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let t = NewSessionTicket {
            lifetime_s: r.u32()?,
            age_add: r.u32()?,
            nonce: r.vec8()?,
            ticket: r.vec16()?,
        };
        r.vec16()?; // extensions (early_data): not used
        r.finish("bytes after NewSessionTicket")?;
        if t.ticket.is_empty() {
            return Err(Error::Decode("empty ticket"));
        }
        // RFC 8446 §4.6.1: at most seven days.
        if t.lifetime_s > 604_800 {
            return Err(Error::IllegalParameter("ticket lifetime over seven days"));
        }
        Ok(t)
    }
}

/// A TLS 1.2 ECDHE ServerKeyExchange body (RFC 8422 §5.4) as a client reads it.
#[derive(Debug)]
pub struct ServerKeyExchange12<'a> {
    pub group: u16,
    pub public: &'a [u8],
    /// ServerECDHParams as sent: what the signature covers after the two randoms.
    pub params: &'a [u8],
    pub scheme: u16,
    pub signature: &'a [u8],
}

impl<'a> ServerKeyExchange12<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        if r.u8()? != 3 {
            // Only named_curve (3): explicit curves are deprecated (RFC 8422 §5.4).
            return Err(Error::IllegalParameter("ECCurveType"));
        }
        let group = r.u16()?;
        let public = r.vec8()?;
        if public.is_empty() {
            return Err(Error::Decode("empty ECDH public value"));
        }
        let params = &body[..4 + public.len()];
        let scheme = r.u16()?;
        let signature = r.vec16()?;
        r.finish("bytes after ServerKeyExchange")?;
        if signature.is_empty() {
            return Err(Error::Decode("empty ServerKeyExchange signature"));
        }
        Ok(ServerKeyExchange12 {
            group,
            public,
            params,
            scheme,
            signature,
        })
    }
}

/// A TLS 1.2 CertificateRequest body (RFC 5246 §7.4.4): the signature schemes the
/// server accepts (certificate types and CA names are not used).
pub fn parse_certificate_request12(body: &[u8]) -> Result<Vec<u16>, Error> {
    let mut r = Reader::new(body);
    let types = r.vec8()?;
    if types.is_empty() {
        return Err(Error::Decode("no certificate type"));
    }
    let mut list = Reader::new(r.vec16()?);
    let mut schemes = Vec::new();
    while !list.is_empty() {
        schemes.push(list.u16()?);
    }
    if schemes.is_empty() {
        return Err(Error::Decode("empty supported_signature_algorithms"));
    }
    r.vec16()?; // certificate_authorities
    r.finish("bytes after CertificateRequest")?;
    Ok(schemes)
}

/// A TLS 1.2 NewSessionTicket body (RFC 5077 §3.3): the lifetime hint and the ticket.
pub fn parse_new_session_ticket12(body: &[u8]) -> Result<(u32, &[u8]), Error> {
    let mut r = Reader::new(body);
    let lifetime = r.u32()?;
    let ticket = r.vec16()?;
    r.finish("bytes after NewSessionTicket")?;
    Ok((lifetime, ticket))
}

/// ServerHelloDone: always the same four bytes.
pub const SERVER_HELLO_DONE: [u8; 4] = [hs::SERVER_HELLO_DONE, 0, 0, 0];

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello body with the given extensions block.
    fn body(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[0x11; 32]);
        b.push(0); // session id
        b.extend_from_slice(&[0, 2, 0x13, 0x01]);
        b.extend_from_slice(&[1, 0]);
        let mut e = Vec::new();
        put_u16(&mut e, exts.len() as u16);
        e.extend_from_slice(exts);
        b.extend_from_slice(&e);
        b
    }

    #[test]
    fn parses_extensions() {
        let mut e = Vec::new();
        put_ext(&mut e, ext::SUPPORTED_VERSIONS, |v| {
            v.extend_from_slice(&[4, 3, 4, 3, 3])
        });
        put_ext(&mut e, ext::KEY_SHARE, |v| {
            v.extend_from_slice(&[0, 6, 0, 29, 0, 2, 9, 9])
        });
        put_ext(&mut e, ext::SERVER_NAME, |v| {
            v.extend_from_slice(&[0, 6, 0, 0, 3, b'a', b'.', b'b'])
        });
        put_ext(&mut e, ext::ALPN, |v| {
            v.extend_from_slice(&[0, 6, 2, b'h', b'2', 2, b'h', b'3'])
        });
        let b = body(&e);
        let ch = ClientHello::parse(&b).unwrap();
        assert_eq!(ch.versions().unwrap().collect::<Vec<_>>(), [0x0304, 0x0303]);
        assert_eq!(
            ch.key_shares().collect::<Vec<_>>(),
            [(29u16, &[9u8, 9][..])]
        );
        assert_eq!(ch.sni, Some(&b"a.b"[..]));
        assert_eq!(ch.alpn().unwrap().collect::<Vec<_>>(), [&b"h2"[..], b"h3"]);
        assert!(ch.offers_suite(0x1301));
    }

    /// One identity "t" with a 32-byte binder.
    fn psk_body(v: &mut Vec<u8>) {
        v.extend_from_slice(&[0, 7, 0, 1, b't', 0, 0, 0, 5, 0, 33, 32]);
        v.extend_from_slice(&[0xbb; 32]);
    }

    #[test]
    fn parses_psk_offer_and_binder_offset() {
        let mut e = Vec::new();
        put_ext(&mut e, ext::PSK_KEY_EXCHANGE_MODES, |v| {
            v.extend_from_slice(&[1, 1])
        });
        put_ext(&mut e, ext::PRE_SHARED_KEY, psk_body);
        let b = body(&e);
        let ch = ClientHello::parse(&b).unwrap();
        assert!(ch.offers_psk_mode(1) && !ch.offers_psk_mode(0));
        let psks: Vec<_> = ch.psks().collect();
        assert_eq!(psks, [(&b"t"[..], 5u32, &[0xbb; 32][..])]);
        // The binders list (2-byte length, then vec8 binders) ends the hello.
        assert_eq!(ch.binders_at, b.len() - 35);
        assert_eq!(&b[ch.binders_at..ch.binders_at + 3], &[0, 33, 32]);

        let mut short = Vec::new();
        put_ext(&mut short, ext::PRE_SHARED_KEY, |v| {
            v.extend_from_slice(&[0, 7, 0, 1, b't', 0, 0, 0, 5, 0, 2, 1, 0])
        });
        assert!(ClientHello::parse(&body(&short)).is_err());
    }

    #[test]
    fn duplicate_extensions_are_found_below_and_above_the_inline_set() {
        // Unknown extension types (ignored when parsed), n of them, then a repeat of
        // the first or of the last: refused on either side of the switch to the bitmap.
        for n in [
            1,
            FEW_EXTENSIONS - 1,
            FEW_EXTENSIONS,
            FEW_EXTENSIONS + 1,
            300,
        ] {
            let types: Vec<u16> = (0..n as u16).map(|i| 0x7000 + i * 7).collect();
            let mut ok = Vec::new();
            for &t in &types {
                put_ext(&mut ok, t, |_| {});
            }
            assert!(
                ClientHello::parse(&body(&ok)).is_ok(),
                "{n} distinct extensions"
            );
            for repeat in [types[0], types[n - 1]] {
                let mut dup = ok.clone();
                put_ext(&mut dup, repeat, |_| {});
                assert_eq!(
                    ClientHello::parse(&body(&dup)).unwrap_err(),
                    Error::IllegalParameter("duplicate extension"),
                    "{n} extensions, then {repeat:#x} again"
                );
            }
        }
        let mut set = ExtensionSet::default();
        for t in 0..=u16::MAX {
            set.note(t).unwrap();
        }
        assert!(matches!(set, ExtensionSet::Many(_)));
        assert!(set.note(0).is_err() && set.note(u16::MAX).is_err());
    }

    #[test]
    fn refuses_malformed_hellos() {
        let mut dup = Vec::new();
        put_ext(&mut dup, ext::EXTENDED_MASTER_SECRET, |_| {});
        put_ext(&mut dup, ext::EXTENDED_MASTER_SECRET, |_| {});
        assert_eq!(
            ClientHello::parse(&body(&dup)).unwrap_err(),
            Error::IllegalParameter("duplicate extension")
        );

        let mut psk_not_last = Vec::new();
        put_ext(&mut psk_not_last, ext::PRE_SHARED_KEY, psk_body);
        put_ext(&mut psk_not_last, ext::EXTENDED_MASTER_SECRET, |_| {});
        assert!(matches!(
            ClientHello::parse(&body(&psk_not_last)),
            Err(Error::IllegalParameter(_))
        ));

        let mut trailing = Vec::new();
        put_ext(&mut trailing, ext::SUPPORTED_GROUPS, |v| {
            v.extend_from_slice(&[0, 2, 0, 29, 7])
        });
        assert!(matches!(
            ClientHello::parse(&body(&trailing)),
            Err(Error::Decode(_))
        ));

        let mut odd = Vec::new();
        put_ext(&mut odd, ext::SIGNATURE_ALGORITHMS, |v| {
            v.extend_from_slice(&[0, 3, 4, 3, 5])
        });
        assert!(matches!(
            ClientHello::parse(&body(&odd)),
            Err(Error::Decode(_))
        ));

        // Every truncation of a good hello is an error, never a panic.
        let mut e = Vec::new();
        put_ext(&mut e, ext::KEY_SHARE, |v| {
            v.extend_from_slice(&[0, 6, 0, 29, 0, 2, 9, 9])
        });
        let b = body(&e);
        for n in 0..b.len() {
            assert!(
                ClientHello::parse(&b[..n]).is_err() || n == 41,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn certificate_messages() {
        let chain = vec![vec![1, 2, 3], vec![4]];
        assert_eq!(
            certificate12(&chain),
            [11, 0, 0, 13, 0, 0, 10, 0, 0, 3, 1, 2, 3, 0, 0, 1, 4]
        );
        assert_eq!(
            certificate13(&chain),
            [11, 0, 0, 18, 0, 0, 0, 14, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 1, 4, 0, 0]
        );
    }

    #[test]
    fn certificate_request13_as_a_client_reads_it() {
        // What our server sends parses back to its schemes.
        let m = certificate_request13(
            &[scheme::ECDSA_SECP256R1_SHA256, scheme::RSA_PSS_RSAE_SHA256],
            &[b"0\x00".to_vec()],
        );
        let cr = CertificateRequest13::parse(&m[4..]).unwrap();
        assert!(cr.context.is_empty());
        assert_eq!(
            cr.schemes,
            [scheme::ECDSA_SECP256R1_SHA256, scheme::RSA_PSS_RSAE_SHA256]
        );
        // RFC 8446 §4.3.2: signature_algorithms MUST be there; an empty list is malformed.
        assert!(matches!(
            CertificateRequest13::parse(&[0, 0, 0]),
            Err(Error::MissingExtension(_))
        ));
        assert!(matches!(
            CertificateRequest13::parse(&[0, 0, 6, 0, 13, 0, 2, 0, 0]),
            Err(Error::Decode(_))
        ));
        // Every truncation is an error, never a panic.
        for n in 0..m.len() - 4 {
            assert!(
                CertificateRequest13::parse(&m[4..4 + n]).is_err(),
                "prefix {n}"
            );
        }
    }
}
