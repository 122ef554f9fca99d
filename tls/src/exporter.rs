//! Keying material exporters: RFC 5705 for TLS 1.2 and RFC 8446 §7.5 for TLS 1.3. A
//! handshake job hands the engine an [`Exporter`] once the keys are agreed; the engine
//! keeps it for the connection's life and derives from it on request (a few HMACs: no
//! job needed). What uses it: the secure datagrams of a `socks5` vserver, whose keys
//! come from the control connection (label `EXPORTER-appliance-datagram`).
//!
//! Labels RFC 5705 reserves (`client finished`, `server finished`, `master secret`,
//! `key expansion`, and the TLS 1.3 schedule's own) are refused, so an exporter can
//! never hand out a secret the protocol itself uses.

use std::fmt;

use crypto_offload::{CryptoError, HashAlg, Secret};

use crate::jobs::schedule::{hkdf_expand_label, prf12};

/// What a connection exports from.
pub enum Exporter {
    /// RFC 8446 §7.5: the exporter master secret.
    Tls13 { hash: HashAlg, secret: Secret },
    /// RFC 5705: the master secret and both randoms (client first).
    Tls12 {
        hash: HashAlg,
        master: Secret,
        randoms: [u8; 64],
    },
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exporter::Tls13 { .. } => "Exporter::Tls13",
            Exporter::Tls12 { .. } => "Exporter::Tls12",
        })
    }
}

/// Labels the protocols use themselves (RFC 5705 §4 and RFC 8446 §7.1).
const RESERVED: [&[u8]; 5] = [
    b"client finished",
    b"server finished",
    b"master secret",
    b"key expansion",
    b"extended master secret",
];

impl Exporter {
    pub fn tls12(
        hash: HashAlg,
        master: Secret,
        client_random: &[u8; 32],
        server_random: &[u8; 32],
    ) -> Self {
        let mut randoms = [0u8; 64];
        randoms[..32].copy_from_slice(client_random);
        randoms[32..].copy_from_slice(server_random);
        Exporter::Tls12 {
            hash,
            master,
            randoms,
        }
    }

    /// `len` bytes for `label` and `context` (`None`: no context; in TLS 1.3 the same
    /// as an empty one, in TLS 1.2 not).
    pub fn export(
        &self,
        label: &[u8],
        context: Option<&[u8]>,
        len: usize,
    ) -> Result<Secret, CryptoError> {
        if label.is_empty() || RESERVED.contains(&label) || label.starts_with(b"tls13 ") {
            return Err(CryptoError::Unavailable(format!(
                "exporter label {:?} is reserved or empty",
                String::from_utf8_lossy(label)
            )));
        }
        if len == 0 || len > 255 * 32 {
            return Err(CryptoError::Unavailable(format!("exporter length {len}")));
        }
        match self {
            Exporter::Tls13 { hash, secret } => {
                let h = *hash;
                // Derive-Secret(Secret, label, "") then HKDF-Expand-Label with
                // "exporter" and Hash(context_value).
                let per_label =
                    hkdf_expand_label(h, secret.bytes(), label, h.empty_hash(), h.output_len())?;
                let ctx_hash = crypto_offload::prim::hash(h, context.unwrap_or(b""))?;
                hkdf_expand_label(h, per_label.bytes(), b"exporter", &ctx_hash, len)
            }
            Exporter::Tls12 {
                hash,
                master,
                randoms,
            } => match context {
                None => prf12(*hash, master.bytes(), label, &[randoms], len),
                Some(c) => {
                    let n = u16::try_from(c.len()).map_err(|_| {
                        CryptoError::Unavailable("exporter context over 65535 bytes".into())
                    })?;
                    prf12(
                        *hash,
                        master.bytes(),
                        label,
                        &[randoms, &n.to_be_bytes(), c],
                        len,
                    )
                }
            },
        }
    }
}
