//! OCSP stapling (RFC 6066 §8, RFC 8446 §4.4.2.1) against OpenSSL's libssl client: a
//! response made by `openssl ocsp` for the leaf is stapled in TLS 1.2's
//! CertificateStatus and TLS 1.3's Certificate entry when the client asks, and only
//! then; a response past its nextUpdate is not stapled; responses that are about
//! another certificate, revoked, or unreadable are refused when loaded.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use openssl::ssl::{SslVersion, StatusType};
use tls::{CertifiedKey, ServerConfig, Site};

fn run(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// In a directory of its own (`tag`): a CA, a leaf for test.example it signed, and OCSP responses for the leaf: good and
/// revoked (from two index files), and one about another certificate.
fn pki(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tls-ocsp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "30", "-subj", "/CN=test-ca"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    run(&dir, &a);
    for name in ["leaf", "other"] {
        let mut a = vec!["req", "-subj", "/CN=test.example"];
        a.extend_from_slice(&ec);
        let (k, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        a.extend_from_slice(&["-keyout", &k, "-out", &csr]);
        run(&dir, &a);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:test.example\n").unwrap();
        run(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "san.ext",
                "-out",
                &pem,
            ],
        );
    }
    let serial = run(&dir, &["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    let subject = "/CN=test.example";
    std::fs::write(
        dir.join("good.txt"),
        format!("V\t300101000000Z\t\t{serial}\tunknown\t{subject}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("revoked.txt"),
        format!("R\t300101000000Z\t240101000000Z\t{serial}\tunknown\t{subject}\n"),
    )
    .unwrap();
    for (index, cert, out) in [
        ("good.txt", "leaf.pem", "good.ocsp"),
        ("revoked.txt", "leaf.pem", "revoked.ocsp"),
        ("good.txt", "other.pem", "other.ocsp"),
    ] {
        run(
            &dir,
            &[
                "ocsp", "-index", index, "-rsigner", "ca.pem", "-rkey", "ca.key", "-CA", "ca.pem",
                "-issuer", "ca.pem", "-cert", cert, "-ndays", "1", "-respout", out,
            ],
        );
    }
    dir
}

fn leaf(dir: &Path) -> CertifiedKey {
    let mut chain = std::fs::read(dir.join("leaf.pem")).unwrap();
    chain.extend(std::fs::read(dir.join("ca.pem")).unwrap());
    CertifiedKey::from_pem(&chain, &std::fs::read(dir.join("leaf.key")).unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A handshake with a libssl client that asks for a status (or not): the response it
/// got, and whether the engine says it stapled.
fn handshake(
    cfg: &Arc<ServerConfig>,
    v: SslVersion,
    ask: bool,
    ca: &Path,
) -> (Option<Vec<u8>>, bool) {
    let got = Arc::new(Mutex::new(None));
    let seen = got.clone();
    let ctx = client_ctx(v, v, |b| {
        b.set_ca_file(ca).unwrap();
        b.set_status_callback(move |ssl| {
            *seen.lock().unwrap() = ssl.ocsp_status().map(|r| r.to_vec());
            Ok(true)
        })
        .unwrap();
    });
    let mut ssl = client_ssl(&ctx, Some("test.example"));
    if ask {
        ssl.set_status_type(StatusType::OCSP).unwrap();
    }
    let (mut c, mut s) = connect_ssl(ssl, cfg.clone(), 0).unwrap();
    echo(&mut c, &mut s, b"stapled?");
    let r = got.lock().unwrap().clone();
    (r, s.conn.info().ocsp_stapled)
}

#[test]
fn a_good_response_is_stapled_when_asked_for_in_both_versions() {
    let dir = pki("good");
    let good = std::fs::read(dir.join("good.ocsp")).unwrap();
    let ck = leaf(&dir).with_ocsp(&good, now()).unwrap();
    let staple = ck.staple.clone().unwrap();
    let cfg = Arc::new(ServerConfig::new(vec![Site::new(vec![Arc::new(ck)])]).unwrap());
    let ca = dir.join("ca.pem");
    for v in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        assert_eq!(
            handshake(&cfg, v, true, &ca),
            (Some(good.clone()), true),
            "{v:?}"
        );
        // A client that does not ask gets none.
        assert_eq!(handshake(&cfg, v, false, &ca), (None, false), "{v:?}");
    }
    // Past its nextUpdate (a day and the skew allowance): not stapled; valid again when
    // the clock says so.
    assert!(staple.refresh(now() + 2 * 86_400));
    for v in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        assert!(!handshake(&cfg, v, true, &ca).1, "{v:?} expired");
    }
    assert!(staple.refresh(now()));
    assert!(handshake(&cfg, SslVersion::TLS1_3, true, &ca).1);
}

#[test]
fn responses_that_cannot_be_stapled_are_refused_with_the_reason() {
    let dir = pki("bad");
    for (file, says) in [
        ("revoked.ocsp", "status"),
        ("other.ocsp", "another certificate"),
        ("leaf.pem", "not DER OCSP"),
    ] {
        let der = std::fs::read(dir.join(file)).unwrap();
        let e = leaf(&dir).with_ocsp(&der, now()).unwrap_err().to_string();
        assert!(e.contains(says), "{file}: {e}");
    }
    // Without the issuer in the chain no response can be matched.
    let only_leaf = CertifiedKey::from_pem(
        &std::fs::read(dir.join("leaf.pem")).unwrap(),
        &std::fs::read(dir.join("leaf.key")).unwrap(),
    )
    .unwrap();
    let good = std::fs::read(dir.join("good.ocsp")).unwrap();
    let e = only_leaf.with_ocsp(&good, now()).unwrap_err().to_string();
    assert!(e.contains("issuer"), "{e}");
}
