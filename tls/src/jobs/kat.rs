//! Known-answer tests: the TLS 1.3 key schedule, the server-flight job and the client
//! role's two steps against the RFC 8448 traces, and the TLS 1.2 PRF and the whole
//! TLS 1.2 resumption job (keys, IVs, both Finished messages) against OpenSSL's own
//! TLS1-PRF and digests (`openssl kdf`, `openssl dgst`: an implementation independent
//! of ours).

use std::sync::Arc;

use openssl::symm::{encrypt_aead, Cipher};

use crypto_offload::prim::*;

use super::schedule::*;
use super::server12::*;
use super::server13::*;
use super::*;

/// Bytes from hex digits, whitespace ignored (the RFCs print them spaced).
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// RFC 8448 §3, "Simple 1-RTT Handshake".
const CLIENT_HELLO: &str = "01 00 00 c0 03 03 cb 34 ec b1 e7 81 63 ba 1c 38 c6 da cb 19 6a 6d ff a2
    1a 8d 99 12 ec 18 a2 ef 62 83 02 4d ec e7 00 00 06 13 01 13 03 13 02 01 00 00 91 00 00 00
    0b 00 09 00 00 06 73 65 72 76 65 72 ff 01 00 01 00 00 0a 00 14 00 12 00 1d 00 17 00 18 00
    19 01 00 01 01 01 02 01 03 01 04 00 23 00 00 00 33 00 26 00 24 00 1d 00 20 99 38 1d e5 60
    e4 bd 43 d2 3d 8e 43 5a 7d ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69 1e 52 9a af 2c 00 2b 00
    03 02 03 04 00 0d 00 20 00 1e 04 03 05 03 06 03 02 03 08 04 08 05 08 06 04 01 05 01 06 01
    02 01 04 02 05 02 06 02 02 02 00 2d 00 02 01 01 00 1c 00 02 40 01";
const SERVER_HELLO: &str = "02 00 00 56 03 03 a6 af 06 a4 12 18 60 dc 5e 6e 60 24 9c d3 4c 95 93
    0c 8a c5 cb 14 34 da c1 55 77 2e d3 e2 69 28 00 13 01 00 00 2e 00 33 00 24 00 1d 00 20 c9
    82 88 76 11 20 95 fe 66 76 2b db f7 c6 72 e1 56 d6 cc 25 3b 83 3d f1 dd 69 b1 b0 4e 75 1f
    0f 00 2b 00 02 03 04";
/// Where the server's key share starts in the ServerHello.
const SHARE_AT: usize = 52;
const CLIENT_SHARE: &str =
    "99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69 1e 52 9a af 2c";
const SERVER_PRIVATE: &str =
    "b1 58 0e ea df 6d d5 89 b8 ef 4f 2d 56 52 57 8c c8 10 e9 98 01 91 ec 8d 05 83 08 ce a2 16 a2 1e";
const SHARED: &str =
    "8b d4 05 4f b5 5b 9d 63 fd fb ac f9 f0 4b 9f 0d 35 e6 d6 3f 53 75 63 ef d4 62 72 90 0f 89 49 2d";
const HELLO_HASH: &str =
    "86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8";
const SERVER_HS_KEY: &str = "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc";
const SERVER_HS_IV: &str = "5d 31 3e b2 67 12 76 ee 13 00 0b 30";
const CLIENT_HS_KEY: &str = "db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01";
const CLIENT_HS_IV: &str = "5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f";

#[test]
fn rfc8448_key_schedule() {
    let h = HashAlg::Sha256;
    let zeros = [0u8; 32];
    let empty = hash(h, b"").unwrap();

    // The (EC)DHE: the server's private key and the client's share give the trace's secret.
    let (server, public) = EphemeralKey::x25519_from_private(&hex(SERVER_PRIVATE)).unwrap();
    assert_eq!(public, hex(SERVER_HELLO)[SHARE_AT..SHARE_AT + 32]);
    let shared = server.agree(&hex(CLIENT_SHARE)).unwrap();
    assert_eq!(shared.bytes(), hex(SHARED));

    let th = hash(h, &[hex(CLIENT_HELLO), hex(SERVER_HELLO)].concat()).unwrap();
    assert_eq!(th, hex(HELLO_HASH));
    let early = hkdf_extract(h, b"", &zeros).unwrap();
    assert_eq!(
        early.bytes(),
        hex("33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a")
    );
    let derived = derive_secret(h, early.bytes(), b"derived", &empty).unwrap();
    let hs = hkdf_extract(h, derived.bytes(), shared.bytes()).unwrap();
    assert_eq!(
        hs.bytes(),
        hex("1d c8 26 e9 36 06 aa 6f dc 0a ad c1 2f 74 1b 01 04 6a a6 b9 9f 69 1e d2 21 a9 f0 ca 04 3f be ac")
    );
    let c_hs = derive_secret(h, hs.bytes(), b"c hs traffic", &th).unwrap();
    let s_hs = derive_secret(h, hs.bytes(), b"s hs traffic", &th).unwrap();
    assert_eq!(
        c_hs.bytes(),
        hex("b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21")
    );
    assert_eq!(
        s_hs.bytes(),
        hex("b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38")
    );
    assert_eq!(
        hkdf_expand_label(h, s_hs.bytes(), b"key", b"", 16)
            .unwrap()
            .bytes(),
        hex(SERVER_HS_KEY)
    );
    assert_eq!(
        hkdf_expand_label(h, s_hs.bytes(), b"iv", b"", 12)
            .unwrap()
            .bytes(),
        hex(SERVER_HS_IV)
    );
    let derived = derive_secret(h, hs.bytes(), b"derived", &empty).unwrap();
    let master = hkdf_extract(h, derived.bytes(), &zeros).unwrap();
    assert_eq!(
        master.bytes(),
        hex("18 df 06 84 3d 13 a0 8b f2 a4 49 84 4c 5f 8a 47 80 01 bc 4d 4c 62 79 84 d5 a4 1d a8 d0 40 29 19")
    );

    // Application secrets and the client's Finished, over the transcript through the
    // server's Finished (as the trace prints its hash).
    let th_sf =
        hex("96 08 10 2a 0f 1c cc 6d b6 25 0b 7b 7e 41 7b 1a 00 0e aa da 3d aa e4 77 7a 76 86 c9 ff 83 df 13");
    let c_ap = derive_secret(h, master.bytes(), b"c ap traffic", &th_sf).unwrap();
    let s_ap = derive_secret(h, master.bytes(), b"s ap traffic", &th_sf).unwrap();
    let exp = derive_secret(h, master.bytes(), b"exp master", &th_sf).unwrap();
    assert_eq!(
        c_ap.bytes(),
        hex("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5")
    );
    assert_eq!(
        s_ap.bytes(),
        hex("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43")
    );
    assert_eq!(
        exp.bytes(),
        hex("fe 22 f8 81 17 6e da 18 eb 8f 44 52 9e 67 92 c5 0c 9a 3f 89 45 2f 68 d8 ae 31 1b 43 09 d3 cf 50")
    );
    assert_eq!(
        finished_mac(h, c_hs.bytes(), &th_sf).unwrap().bytes(),
        hex("a8 ec 43 6d 67 76 34 ae 52 5a c1 fc eb e1 1a 03 9e c1 76 94 fa c6 e9 85 27 b6 42 f2 ed d5 ce 61")
    );

    // Resumption: the master secret, the ticket's PSK (nonce 0), and (§4) the binder.
    let th_cf =
        hex("20 91 45 a9 6e e8 e2 a1 22 ff 81 00 47 cc 95 26 84 65 8d 60 49 e8 64 29 42 6d b8 7c 54 ad 14 3d");
    let res = derive_secret(h, master.bytes(), b"res master", &th_cf).unwrap();
    assert_eq!(
        res.bytes(),
        hex("7d f2 35 f2 03 1d 2a 05 12 87 d0 2b 02 41 b0 bf da f8 6c c8 56 23 1f 2d 5a ba 46 c4 34 ec 19 6c")
    );
    let psk = hkdf_expand_label(h, res.bytes(), b"resumption", &[0, 0], 32).unwrap();
    assert_eq!(
        psk.bytes(),
        hex("4e cd 0e b6 ec 3b 4d 87 f5 d6 02 8f 92 2c a4 c5 85 1a 27 7f d4 13 11 c9 e6 2d 2c 94 92 e1 c4 f3")
    );
    let early = hkdf_extract(h, b"", psk.bytes()).unwrap();
    let binder_key = derive_secret(h, early.bytes(), b"res binder", &empty).unwrap();
    assert_eq!(
        binder_key.bytes(),
        hex("69 fe 13 1a 3b ba d5 d6 3c 64 ee bc c3 0e 39 5b 9d 81 07 72 6a 13 d0 74 e3 89 db c8 a4 e4 72 56")
    );
    let truncated_hello_hash =
        hex("63 22 4b 2e 45 73 f2 d3 45 4c a8 4b 9d 00 9a 04 f6 be 9e 05 71 1a 83 96 47 3a ef a0 1e 92 4a 14");
    assert_eq!(
        finished_mac(h, binder_key.bytes(), &truncated_hello_hash).unwrap().bytes(),
        hex("3a dd 4f b2 d8 fd f8 22 a0 ca 3c f7 67 8e f5 e8 8d ae 99 01 41 c5 92 4d 57 bb 6f a3 1b 9e 5f 9d")
    );
}

/// The whole server-flight job on the trace's ClientHello, with the trace's server key
/// share: the ServerHello it completes and the handshake keys it returns are the
/// trace's. (The CertificateVerify is signed with our own key, so from there on the
/// transcript, and what depends on it, is ours; the schedule above covers those steps.)
#[test]
fn rfc8448_server_flight_job() {
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let signer = SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap();
    let mut template = hex(SERVER_HELLO);
    template[SHARE_AT..SHARE_AT + 32].fill(0);
    let job = Tls13Flight {
        hash: HashAlg::Sha256,
        aead: AeadAlg::Aes128Gcm,
        kx: Some((Group::X25519, hex(CLIENT_SHARE))),
        psk: None,
        transcript: vec![Chunk::Owned(hex(CLIENT_HELLO))],
        server_hello: template,
        share_at: SHARE_AT,
        encrypted_extensions: hex("08 00 00 02 00 00"),
        auth: Some(CertAuth {
            certificate: Arc::from(&hex("0b 00 00 04 00 00 00 00")[..]),
            signer: Arc::new(signer),
            sig_alg: SigAlg::EcdsaSha256,
            scheme: 0x0403,
        }),
        certificate_request: None,
        ticket: None,
        server_share: Some(EphemeralKey::x25519_from_private(&hex(SERVER_PRIVATE)).unwrap()),
    };
    // Through the job path: wrapped as a `Call`, run, and taken back.
    let done = crypto_offload::run(call(move || tls13_flight(job))).unwrap();
    let mut d: Tls13FlightDone = take(done).unwrap();
    assert_eq!(d.server_hello, hex(SERVER_HELLO));
    assert_eq!(d.handshake_write.iv.bytes(), hex(SERVER_HS_IV));
    assert_eq!(d.handshake_read.iv.bytes(), hex(CLIENT_HS_IV));
    // The keys themselves are inside OpenSSL contexts: seal with the job's write key and
    // compare with the trace's key through OpenSSL's one-shot AEAD.
    let (nonce, aad, pt) = (hex(SERVER_HS_IV), b"header", b"known plaintext".to_vec());
    let mut buf = pt.clone();
    let mut tag = [0u8; TAG_LEN];
    let n: [u8; 12] = nonce[..].try_into().unwrap();
    d.handshake_write
        .key
        .seal(&n, aad, &mut buf, &mut tag)
        .unwrap();
    let mut want_tag = [0u8; TAG_LEN];
    let want = encrypt_aead(
        Cipher::aes_128_gcm(),
        &hex(SERVER_HS_KEY),
        Some(&nonce),
        aad,
        &pt,
        &mut want_tag,
    )
    .unwrap();
    assert_eq!((buf, tag), (want, want_tag));
    // And the read key opens what the trace's client key seals.
    let nonce = hex(CLIENT_HS_IV);
    let mut tag = [0u8; TAG_LEN];
    let mut ct = encrypt_aead(
        Cipher::aes_128_gcm(),
        &hex(CLIENT_HS_KEY),
        Some(&nonce),
        aad,
        &pt,
        &mut tag,
    )
    .unwrap();
    let n: [u8; 12] = nonce[..].try_into().unwrap();
    d.handshake_read.key.open(&n, aad, &mut ct, &tag).unwrap();
    assert_eq!(ct, pt);
}

/// The TLS 1.2 PRF (master secret, extended master secret, key block, Finished sizes;
/// SHA-256 and SHA-384) against `openssl kdf ... TLS1-PRF`.
#[test]
fn tls12_prf_matches_openssl_tls1_prf() {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let cases: [(&[u8], usize, usize, usize); 4] = [
        (b"master secret", 48, 64, 48),
        (b"extended master secret", 48, 32, 48),
        (b"key expansion", 48, 64, 72),
        (b"server finished", 48, 32, 12),
    ];
    for alg in [HashAlg::Sha256, HashAlg::Sha384] {
        for (label, secret_len, seed_len, out_len) in cases {
            let secret = bytes(secret_len);
            let seed = bytes(seed_len);
            let ours = prf12(alg, &secret, label, &[&seed[..20], &seed[20..]], out_len).unwrap();
            let digest = if alg == HashAlg::Sha256 {
                "SHA256"
            } else {
                "SHA384"
            };
            let theirs = openssl_tls1_prf(digest, &secret, label, &seed, out_len);
            assert_eq!(
                ours.bytes(),
                &theirs[..],
                "{alg:?} {}",
                String::from_utf8_lossy(label)
            );
        }
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `openssl kdf ... TLS1-PRF`: `len` bytes of the TLS 1.2 PRF.
fn openssl_tls1_prf(digest: &str, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let o = std::process::Command::new("openssl")
        .args(["kdf", "-binary", "-keylen", &len.to_string()])
        .args(["-kdfopt", &format!("digest:{digest}")])
        .args(["-kdfopt", &format!("hexsecret:{}", to_hex(secret))])
        .args([
            "-kdfopt",
            &format!("hexseed:{}{}", to_hex(label), to_hex(seed)),
        ])
        .arg("TLS1-PRF")
        .output()
        .expect("openssl CLI (tools/setup.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// `openssl dgst -DIGEST -binary` of `data`.
fn openssl_digest(digest: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = std::process::Command::new("openssl")
        .args(["dgst", &format!("-{}", digest.to_lowercase()), "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl CLI");
    c.stdin.take().unwrap().write_all(data).unwrap();
    c.wait_with_output().unwrap().stdout
}

/// The whole TLS 1.2 resumption job (keys, IVs, server Finished, expected client
/// Finished) on a known master secret and randoms, against OpenSSL's TLS1-PRF and
/// digests computed outside our code.
#[test]
fn tls12_resume_job_matches_openssl() {
    for (hash, digest, aead, iv_len) in [
        (HashAlg::Sha256, "SHA256", AeadAlg::Aes128Gcm, 4),
        (HashAlg::Sha384, "SHA384", AeadAlg::Aes256Gcm, 4),
        (HashAlg::Sha256, "SHA256", AeadAlg::Chacha20Poly1305, 12),
    ] {
        let master: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(7) ^ 0x5c).collect();
        let client_random = [0x11u8; 32];
        let mut server_random = [0u8; 32];
        for (i, b) in server_random.iter_mut().enumerate() {
            *b = i as u8;
        }
        let ch = b"\x01\x00\x00\x05hello".to_vec();
        let sh = b"\x02\x00\x00\x06server".to_vec();
        let job = Tls12Resume {
            hash,
            aead,
            master_secret: Secret::new(master.clone()),
            client_random,
            server_random,
            transcript: vec![Chunk::Owned(ch.clone()), Chunk::Owned(sh.clone())],
            ticket: None,
        };
        let done = crypto_offload::run(call(move || tls12_resume(job))).unwrap();
        let d: Tls12ResumeDone = take(done).unwrap();
        // Key block: client key, server key, client IV, server IV (RFC 5246 §6.3).
        let klen = aead.key_len();
        let seed = [&server_random[..], &client_random[..]].concat();
        let kb = openssl_tls1_prf(
            digest,
            &master,
            b"key expansion",
            &seed,
            2 * (klen + iv_len),
        );
        assert_eq!(d.client_write.iv.bytes(), &kb[2 * klen..2 * klen + iv_len]);
        assert_eq!(d.server_write.iv.bytes(), &kb[2 * klen + iv_len..]);
        // The keys: the job's sealing key and one made from the expected bytes agree.
        let mut expected = AeadKey::new(aead, &kb[klen..2 * klen], true).unwrap();
        let mut ours = d.server_write.key;
        let (mut a, mut b) = (b"record".to_vec(), b"record".to_vec());
        let (mut ta, mut tb) = ([0u8; TAG_LEN], [0u8; TAG_LEN]);
        expected.seal(&[3; 12], b"aad", &mut a, &mut ta).unwrap();
        ours.seal(&[3; 12], b"aad", &mut b, &mut tb).unwrap();
        assert_eq!((a, ta), (b, tb), "{aead:?} server write key");
        let mut opener = d.client_write.key;
        let mut sealer = AeadKey::new(aead, &kb[..klen], true).unwrap();
        let mut m = b"from the client".to_vec();
        let mut t = [0u8; TAG_LEN];
        sealer.seal(&[4; 12], b"", &mut m, &mut t).unwrap();
        opener.open(&[4; 12], b"", &mut m, &t).unwrap();
        assert_eq!(m, b"from the client", "{aead:?} client write key");
        // Finished: the server's over CH..SH, the client's over CH..SH + server Finished.
        let th = openssl_digest(digest, &[&ch[..], &sh[..]].concat());
        let sf = openssl_tls1_prf(digest, &master, b"server finished", &th, 12);
        assert_eq!(d.server_finished, [&[20u8, 0, 0, 12][..], &sf[..]].concat());
        let th2 = openssl_digest(digest, &[&ch[..], &sh[..], &d.server_finished[..]].concat());
        let cf = openssl_tls1_prf(digest, &master, b"client finished", &th2, 12);
        assert_eq!(d.client_verify.bytes(), &cf[..], "{hash:?}");
    }
}

// RFC 8448 §3 from the client's side: its X25519 private key, the server's flight
// (EncryptedExtensions, Certificate, CertificateVerify, Finished) and the record that
// carries it under the server's handshake key.
const CLIENT_PRIVATE: &str =
    "49 af 42 ba 7f 79 94 85 2d 71 3e f2 78 4b cb ca a7 91 1d e2 6a dc 56 42 cb 63 45 40 e7 ea 50 05";
const SERVER_FLIGHT: &str = "08 00 00 24 00 22 00 0a 00 14 00 12 00 1d 00 17 00 18 00 19 01 00
    01 01 01 02 01 03 01 04 00 1c 00 02 40 01 00 00 00 00 0b 00 01 b9 00 00 01 b5 00 01 b0 30 82
    01 ac 30 82 01 15 a0 03 02 01 02 02 01 02 30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00 30 0e
    31 0c 30 0a 06 03 55 04 03 13 03 72 73 61 30 1e 17 0d 31 36 30 37 33 30 30 31 32 33 35 39 5a
    17 0d 32 36 30 37 33 30 30 31 32 33 35 39 5a 30 0e 31 0c 30 0a 06 03 55 04 03 13 03 72 73 61
    30 81 9f 30 0d 06 09 2a 86 48 86 f7 0d 01 01 01 05 00 03 81 8d 00 30 81 89 02 81 81 00 b4 bb
    49 8f 82 79 30 3d 98 08 36 39 9b 36 c6 98 8c 0c 68 de 55 e1 bd b8 26 d3 90 1a 24 61 ea fd 2d
    e4 9a 91 d0 15 ab bc 9a 95 13 7a ce 6c 1a f1 9e aa 6a f9 8c 7c ed 43 12 09 98 e1 87 a8 0e e0
    cc b0 52 4b 1b 01 8c 3e 0b 63 26 4d 44 9a 6d 38 e2 2a 5f da 43 08 46 74 80 30 53 0e f0 46 1c
    8c a9 d9 ef bf ae 8e a6 d1 d0 3e 2b d1 93 ef f0 ab 9a 80 02 c4 74 28 a6 d3 5a 8d 88 d7 9f 7f
    1e 3f 02 03 01 00 01 a3 1a 30 18 30 09 06 03 55 1d 13 04 02 30 00 30 0b 06 03 55 1d 0f 04 04
    03 02 05 a0 30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00 03 81 81 00 85 aa d2 a0 e5 b9 27 6b
    90 8c 65 f7 3a 72 67 17 06 18 a5 4c 5f 8a 7b 33 7d 2d f7 a5 94 36 54 17 f2 ea e8 f8 a5 8c 8f
    81 72 f9 31 9c f3 6b 7f d6 c5 5b 80 f2 1a 03 01 51 56 72 60 96 fd 33 5e 5e 67 f2 db f1 02 70
    2e 60 8c ca e6 be c1 fc 63 a4 2a 99 be 5c 3e b7 10 7c 3c 54 e9 b9 eb 2b d5 20 3b 1c 3b 84 e0
    a8 b2 f7 59 40 9b a3 ea c9 d9 1d 40 2d cc 0c c8 f8 96 12 29 ac 91 87 b4 2b 4d e1 00 00 0f 00
    00 84 08 04 00 80 5a 74 7c 5d 88 fa 9b d2 e5 5a b0 85 a6 10 15 b7 21 1f 82 4c d4 84 14 5a b3
    ff 52 f1 fd a8 47 7b 0b 7a bc 90 db 78 e2 d3 3a 5c 14 1a 07 86 53 fa 6b ef 78 0c 5e a2 48 ee
    aa a7 85 c4 f3 94 ca b6 d3 0b be 8d 48 59 ee 51 1f 60 29 57 b1 54 11 ac 02 76 71 45 9e 46 44
    5c 9e a5 8c 18 1e 81 8e 95 b8 c3 fb 0b f3 27 84 09 d3 be 15 2a 3d a5 04 3e 06 3d da 65 cd f5
    ae a2 0d 53 df ac d4 2f 74 f3 14 00 00 20 9b 9b 14 1d 90 63 37 fb d2 cb dc e7 1d f4 de da 4a
    b4 2c 30 95 72 cb 7f ff ee 54 54 b7 8f 07 18";
/// Where the flight's messages end: EncryptedExtensions, Certificate, CertificateVerify.
const FLIGHT_CUTS: [usize; 3] = [40, 485, 621];
const SERVER_FLIGHT_RECORD: &str = "17 03 03 02 a2 d1 ff 33 4a 56 f5 bf f6 59 4a 07 cc 87 b5 80 23
    3f 50 0f 45 e4 89 e7 f3 3a f3 5e df 78 69 fc f4 0a a4 0a a2 b8 ea 73 f8 48 a7 ca 07 61 2e f9
    f9 45 cb 96 0b 40 68 90 51 23 ea 78 b1 11 b4 29 ba 91 91 cd 05 d2 a3 89 28 0f 52 61 34 aa dc
    7f c7 8c 4b 72 9d f8 28 b5 ec f7 b1 3b d9 ae fb 0e 57 f2 71 58 5b 8e a9 bb 35 5c 7c 79 02 07
    16 cf b9 b1 18 3e f3 ab 20 e3 7d 57 a6 b9 d7 47 76 09 ae e6 e1 22 a4 cf 51 42 73 25 25 0c 7d
    0e 50 92 89 44 4c 9b 3a 64 8f 1d 71 03 5d 2e d6 5b 0e 3c dd 0c ba e8 bf 2d 0b 22 78 12 cb b3
    60 98 72 55 cc 74 41 10 c4 53 ba a4 fc d6 10 92 8d 80 98 10 e4 b7 ed 1a 8f d9 91 f0 6a a6 24
    82 04 79 7e 36 a6 a7 3b 70 a2 55 9c 09 ea d6 86 94 5b a2 46 ab 66 e5 ed d8 04 4b 4c 6d e3 fc
    f2 a8 94 41 ac 66 27 2f d8 fb 33 0e f8 19 05 79 b3 68 45 96 c9 60 bd 59 6e ea 52 0a 56 a8 d6
    50 f5 63 aa d2 74 09 96 0d ca 63 d3 e6 88 61 1e a5 e2 2f 44 15 cf 95 38 d5 1a 20 0c 27 03 42
    72 96 8a 26 4e d6 54 0c 84 83 8d 89 f7 2c 24 46 1a ad 6d 26 f5 9e ca ba 9a cb bb 31 7b 66 d9
    02 f4 f2 92 a3 6a c1 b6 39 c6 37 ce 34 31 17 b6 59 62 22 45 31 7b 49 ee da 0c 62 58 f1 00 d7
    d9 61 ff b1 38 64 7e 92 ea 33 0f ae ea 6d fa 31 c7 a8 4d c3 bd 7e 1b 7a 6c 71 78 af 36 87 90
    18 e3 f2 52 10 7f 24 3d 24 3d c7 33 9d 56 84 c8 b0 37 8b f3 02 44 da 8c 87 c8 43 f5 e5 6e b4
    c5 e8 28 0a 2b 48 05 2c f9 3b 16 49 9a 66 db 7c ca 71 e4 59 94 26 f7 d4 61 e6 6f 99 88 2b d8
    9f c5 08 00 be cc a6 2d 6c 74 11 6d bd 29 72 fd a1 fa 80 f8 5d f8 81 ed be 5a 37 66 89 36 b3
    35 58 3b 59 91 86 dc 5c 69 18 a3 96 fa 48 a1 81 d6 b6 fa 4f 9d 62 d5 13 af bb 99 2f 2b 99 2f
    67 f8 af e6 7f 76 91 3f a3 88 cb 56 30 c8 ca 01 e0 c6 5d 11 c6 6a 1e 2a c4 c8 59 77 b7 c7 a6
    99 9b bf 10 dc 35 ae 69 f5 51 56 14 63 6c 0b 9b 68 c1 9e d2 e3 1c 0b 3b 66 76 30 38 eb ba 42
    f3 b3 8e dc 03 99 f3 a9 f2 3f aa 63 97 8c 31 7f c9 fa 66 a7 3f 60 f0 50 4d e9 3b 5b 84 5e 27
    55 92 c1 23 35 ee 34 0b bc 4f dd d5 02 78 40 16 e4 b3 be 7e f0 4d da 49 f4 b4 40 a3 0c b5 d2
    af 93 98 28 fd 4a e3 79 4e 44 f9 4d f5 a6 31 ed e4 2c 17 19 bf da bf 02 53 fe 51 75 be 89 8e
    75 0e dc 53 37 0d 2b";

/// The client role's two steps on the trace: the handshake keys open the trace's
/// encrypted server flight; the server's Finished is accepted (and a changed one is
/// not); the client Finished, the application keys and the resumption master secret
/// are the trace's. The trace's certificate is self-signed, so verification is off.
#[test]
fn rfc8448_client_steps() {
    use super::client13::*;
    let share = KeyShare::x25519_from_private(&hex(CLIENT_PRIVATE)).unwrap();
    assert_eq!(share.public(), &hex(CLIENT_SHARE)[..]);
    let hello = |share: KeyShare| {
        tls13_client_hello(Tls13ClientHello {
            hash: HashAlg::Sha256,
            aead: AeadAlg::Aes128Gcm,
            share,
            server_share: hex(SERVER_HELLO)[SHARE_AT..SHARE_AT + 32].to_vec(),
            psk: None,
            transcript: vec![
                Chunk::Owned(hex(CLIENT_HELLO)),
                Chunk::Owned(hex(SERVER_HELLO)),
            ],
        })
        .unwrap()
    };
    let mut d = hello(share.clone());
    assert_eq!(d.handshake_read.iv.bytes(), hex(SERVER_HS_IV));
    assert_eq!(d.handshake_write.iv.bytes(), hex(CLIENT_HS_IV));

    // Open the trace's record (sequence 0: the nonce is the IV) with the read key.
    let record = hex(SERVER_FLIGHT_RECORD);
    let (header, body) = record.split_at(5);
    let (ct, tag) = body.split_at(body.len() - TAG_LEN);
    let mut pt = ct.to_vec();
    let nonce: [u8; 12] = hex(SERVER_HS_IV)[..].try_into().unwrap();
    d.handshake_read
        .key
        .open(&nonce, header, &mut pt, tag)
        .unwrap();
    let flight = hex(SERVER_FLIGHT);
    assert_eq!(pt, [&flight[..], &[22]].concat());

    let finish = |state, server_finished: Vec<u8>| {
        let [ee, cert, cv] = FLIGHT_CUTS;
        tls13_client_finish(Tls13ClientFinish {
            state,
            encrypted_extensions: flight[..ee].to_vec(),
            client_auth: None,
            auth: Some(ServerAuth {
                certificate: flight[ee..cert].to_vec(),
                chain: vec![flight[ee + 11..cert - 2].to_vec()],
                certificate_verify: flight[cert..cv].to_vec(),
                sig_alg: SigAlg::RsaPssSha256,
                signature: flight[cert + 8..cv].to_vec(),
                verifier: None,
            }),
            server_finished,
        })
    };
    let done = finish(d.state, flight[FLIGHT_CUTS[2]..].to_vec()).unwrap();
    assert_eq!(
        done.client_finished,
        hex("14 00 00 20 a8 ec 43 6d 67 76 34 ae 52 5a c1 fc eb e1 1a 03 9e c1 76 94 fa c6 e9 85 27 b6 42 f2 ed d5 ce 61")
    );
    assert_eq!(
        done.client_app_secret.bytes(),
        hex("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5")
    );
    assert_eq!(
        done.server_app_secret.bytes(),
        hex("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43")
    );
    assert_eq!(
        done.app_read.iv.bytes(),
        hex("cf 78 2b 88 dd 83 54 9a ad f1 e9 84")
    );
    assert_eq!(
        done.resumption_master.bytes(),
        hex("7d f2 35 f2 03 1d 2a 05 12 87 d0 2b 02 41 b0 bf da f8 6c c8 56 23 1f 2d 5a ba 46 c4 34 ec 19 6c")
    );
    assert_eq!(
        ticket_psk(HashAlg::Sha256, done.resumption_master.bytes(), &[0, 0])
            .unwrap()
            .bytes(),
        hex("4e cd 0e b6 ec 3b 4d 87 f5 d6 02 8f 92 2c a4 c5 85 1a 27 7f d4 13 11 c9 e6 2d 2c 94 92 e1 c4 f3")
    );

    // A server Finished off by one bit is refused.
    let mut bad = flight[FLIGHT_CUTS[2]..].to_vec();
    bad[10] ^= 1;
    let d = hello(share);
    assert_eq!(finish(d.state, bad).unwrap_err(), CryptoError::BadFinished);
}
