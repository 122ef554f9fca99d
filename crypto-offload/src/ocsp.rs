//! OCSP responses for stapling (RFC 6066 §8, RFC 6960): what the operator's response
//! file says about the certificate it is stapled with, read with OpenSSL. The response
//! must be successful, about the leaf (its issuer, the chain's second certificate, is
//! needed for the id) and say "good"; its thisUpdate/nextUpdate tell when it may be
//! stapled. The responder's signature is the client's to check, as with HAProxy's
//! `.ocsp` files.

use foreign_types::ForeignTypeRef;
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspResponse, OcspResponseStatus};
use openssl::x509::X509;

use crate::CryptoError;

/// When a response may be stapled (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspValidity {
    pub this_update: i64,
    /// `None`: the responder gave no nextUpdate (newer information may come at any
    /// time; stapled as long as the file is there).
    pub next_update: Option<i64>,
}

fn unix(t: &Asn1GeneralizedTimeRef) -> Result<i64, CryptoError> {
    // SAFETY: ASN1_GENERALIZEDTIME and ASN1_TIME are both ASN1_STRING in OpenSSL, and
    // ASN1_TIME_diff takes either; the reference lives as long as `t`.
    let t = unsafe { Asn1TimeRef::from_ptr(t.as_ptr().cast()) };
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Checks `der` against `chain` (leaf first; the issuer second).
pub fn check_response(der: &[u8], chain: &[Vec<u8>]) -> Result<OcspValidity, CryptoError> {
    let bad = |m: String| CryptoError::Load(format!("OCSP response: {m}"));
    let resp = OcspResponse::from_der(der).map_err(|e| bad(format!("not DER OCSP ({e})")))?;
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(bad(format!("status {:?}, not successful", resp.status())));
    }
    let basic = resp
        .basic()
        .map_err(|e| bad(format!("no basic response ({e})")))?;
    let (Some(leaf), Some(issuer)) = (chain.first(), chain.get(1)) else {
        return Err(bad(
            "the certificate chain must include the issuer (second) to match a response".into(),
        ));
    };
    let leaf = X509::from_der(leaf)?;
    let issuer = X509::from_der(issuer)?;
    for md in [MessageDigest::sha1(), MessageDigest::sha256()] {
        let id = OcspCertId::from_cert(md, &leaf, &issuer)?;
        if let Some(st) = basic.find_status(&id) {
            if st.status != OcspCertStatus::GOOD {
                return Err(bad(format!("the certificate's status is {:?}", st.status)));
            }
            return Ok(OcspValidity {
                this_update: unix(st.this_update)?,
                next_update: st.next_update().map(unix).transpose()?,
            });
        }
    }
    Err(bad("it is about another certificate".into()))
}

impl OcspValidity {
    /// Whether it may be stapled at `now` (Unix seconds): issued (five minutes of
    /// clock skew allowed, a responder's clock may run ahead) and not past its
    /// nextUpdate (no allowance: a client would refuse an expired response, and a
    /// must-staple certificate with it).
    pub fn valid_at(&self, now: i64) -> bool {
        const SKEW: i64 = 300;
        self.this_update <= now + SKEW && self.next_update.is_none_or(|n| now < n)
    }
}
