//! Test support: certificates made at run time, an in-memory pipe between OpenSSL's
//! libssl client and our engine, and a driver that runs the engine's jobs inline.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};
use tls::{CertifiedKey, ServerConfig, ServerConn, Site};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rsa2048,
    P256,
    P384,
}

fn key(kind: Kind) -> PKey<Private> {
    match kind {
        Kind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        Kind::P256 => PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap(),
        Kind::P384 => PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap(),
        )
        .unwrap(),
    }
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    n.build()
}

/// The test CA: one P-256 key that signs every leaf.
pub struct Ca {
    pub cert: X509,
    key: PKey<Private>,
}

pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = key(Kind::P256);
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name("appliance test CA")).unwrap();
        b.set_issuer_name(&name("appliance test CA")).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            cert: b.build(),
            key,
        }
    })
}

/// A leaf for `names` signed by the test CA, as (chain PEM, key PEM).
pub fn leaf_pem(kind: Kind, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let ca = ca();
    let key = key(kind);
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &BigNum::from_u32(rand_u32())
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name(names[0])).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    let ext = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
    b.append_extension(ext).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    let mut chain = b.build().to_pem().unwrap();
    chain.extend_from_slice(&ca.cert.to_pem().unwrap());
    (chain, key.private_key_to_pem_pkcs8().unwrap())
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_be_bytes(b) >> 1
}

/// One certificate of each kind for "test.example", made once per test binary, as
/// (chain PEM, key PEM).
pub fn cert_pem(kind: Kind) -> &'static (Vec<u8>, Vec<u8>) {
    static PEMS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    let all = PEMS.get_or_init(|| {
        [Kind::Rsa2048, Kind::P256, Kind::P384]
            .iter()
            .map(|&k| leaf_pem(k, &["test.example"]))
            .collect()
    });
    &all[match kind {
        Kind::Rsa2048 => 0,
        Kind::P256 => 1,
        Kind::P384 => 2,
    }]
}

/// The engine's form of [`cert_pem`], loaded once.
pub fn cert(kind: Kind) -> Arc<CertifiedKey> {
    static CERTS: OnceLock<Vec<Arc<CertifiedKey>>> = OnceLock::new();
    let all = CERTS.get_or_init(|| {
        [Kind::Rsa2048, Kind::P256, Kind::P384]
            .iter()
            .map(|&k| {
                let (c, key) = cert_pem(k);
                Arc::new(CertifiedKey::from_pem(c, key).unwrap())
            })
            .collect()
    });
    all[match kind {
        Kind::Rsa2048 => 0,
        Kind::P256 => 1,
        Kind::P384 => 2,
    }]
    .clone()
}

pub fn config_with(certs: &[Kind]) -> ServerConfig {
    ServerConfig::new(vec![Site::new(certs.iter().map(|&k| cert(k)).collect())]).unwrap()
}

/// Bytes in flight each way between the client and the engine.
#[derive(Clone, Default)]
pub struct Wire {
    pub to_server: Rc<RefCell<Vec<u8>>>,
    pub to_client: Rc<RefCell<Vec<u8>>>,
}

/// The client's end of the wire, for `SslStream`.
pub struct ClientEnd(pub Wire);

impl Read for ClientEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut q = self.0.to_client.borrow_mut();
        if q.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(q.len());
        buf[..n].copy_from_slice(&q[..n]);
        q.drain(..n);
        Ok(n)
    }
}

impl Write for ClientEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.to_server.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The engine with its end of the wire; jobs run inline.
pub struct Server {
    pub conn: ServerConn,
    pub wire: Wire,
}

impl Server {
    pub fn new(cfg: Arc<ServerConfig>, wire: Wire) -> Self {
        Self::new_at(cfg, wire, 0)
    }

    /// A connection that starts at `now_ms` on the engine's clock.
    pub fn new_at(cfg: Arc<ServerConfig>, wire: Wire, now_ms: u64) -> Self {
        Server {
            conn: ServerConn::new(cfg, now_ms),
            wire,
        }
    }

    /// Move bytes both ways and run any jobs; returns the engine's error if it failed.
    pub fn pump(&mut self) -> Result<(), tls::Error> {
        let mut result = Ok(());
        loop {
            let input = std::mem::take(&mut *self.wire.to_server.borrow_mut());
            let n = self.conn.read_tls(&input);
            self.wire
                .to_server
                .borrow_mut()
                .splice(0..0, input[n..].iter().copied());
            if let Err(e) = self.conn.process() {
                result = Err(e);
            }
            while let Some(job) = self.conn.take_job() {
                if let Err(e) = self.conn.complete(crypto_offload::run(job)) {
                    result = Err(e);
                }
            }
            if let Err(e) = self.run_records() {
                result = Err(e);
            }
            let out = self.conn.pending_tls().to_vec();
            self.conn.consume_tls(out.len());
            self.wire.to_client.borrow_mut().extend_from_slice(&out);
            if n == 0 || result.is_err() {
                return result;
            }
        }
    }
}

impl Server {
    /// With record offload on: record jobs of this one connection, run inline, until
    /// it has nothing more to protect.
    pub fn run_records(&mut self) -> Result<(), tls::Error> {
        while let Some(work) = self.conn.take_records(7)? {
            let job = crypto_offload::Job::Records(crypto_offload::RecordJob { items: vec![work] });
            match crypto_offload::run(job) {
                Ok(crypto_offload::Done::Records(mut j)) => {
                    let w = j.items.pop().expect("the work comes back");
                    assert_eq!(w.owner, 7);
                    self.conn.complete_records(w)?;
                }
                Ok(_) => panic!("a record job completes as records"),
                Err(e) => self.conn.fail_records(e)?,
            }
        }
        Ok(())
    }
}

/// A libssl client context trusting the test CA.
pub fn client_ctx(
    min: SslVersion,
    max: SslVersion,
    configure: impl FnOnce(&mut openssl::ssl::SslContextBuilder),
) -> SslContext {
    let mut b = SslContext::builder(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(min)).unwrap();
    b.set_max_proto_version(Some(max)).unwrap();
    b.cert_store_mut().add_cert(ca().cert.clone()).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    configure(&mut b);
    b.build()
}

/// Handshake a libssl client against a fresh engine connection. Returns both ends, or
/// the client's error text and the engine's error.
pub fn connect(
    ctx: &SslContext,
    cfg: Arc<ServerConfig>,
    host: Option<&str>,
) -> Result<(SslStream<ClientEnd>, Server), (String, Option<tls::Error>)> {
    connect_ssl(client_ssl(ctx, host), cfg, 0)
}

/// A libssl client connection object, with SNI and name checking for `host`.
pub fn client_ssl(ctx: &SslContext, host: Option<&str>) -> Ssl {
    let mut ssl = Ssl::new(ctx).unwrap();
    if let Some(h) = host {
        ssl.set_hostname(h).unwrap();
        ssl.param_mut().set_host(h).unwrap();
    }
    ssl
}

/// [`connect`] with a prepared client (e.g. one offering a session) and an engine
/// connection that starts at `now_ms`.
pub fn connect_ssl(
    ssl: Ssl,
    cfg: Arc<ServerConfig>,
    now_ms: u64,
) -> Result<(SslStream<ClientEnd>, Server), (String, Option<tls::Error>)> {
    handshake(ssl, |wire| Server::new_at(cfg, wire, now_ms))
}

/// [`connect`] to a connection that chooses its configuration by SNI.
pub fn connect_routed(
    ctx: &SslContext,
    router: Arc<tls::SniRouter>,
    host: Option<&str>,
) -> Result<(SslStream<ClientEnd>, Server), (String, Option<tls::Error>)> {
    connect_routed_ssl(client_ssl(ctx, host), router)
}

/// [`connect_routed`] with a prepared client.
pub fn connect_routed_ssl(
    ssl: Ssl,
    router: Arc<tls::SniRouter>,
) -> Result<(SslStream<ClientEnd>, Server), (String, Option<tls::Error>)> {
    handshake(ssl, |wire| Server {
        conn: ServerConn::with_router(router, 0),
        wire,
    })
}

/// Runs a libssl client against the engine connection `server` makes on the wire.
fn handshake(
    ssl: Ssl,
    server: impl FnOnce(Wire) -> Server,
) -> Result<(SslStream<ClientEnd>, Server), (String, Option<tls::Error>)> {
    let wire = Wire::default();
    let mut client = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
    let mut server = server(wire);
    for _ in 0..20 {
        match client.connect() {
            Ok(()) => {
                server
                    .pump()
                    .map_err(|e| (String::from("server failed after client finished"), Some(e)))?;
                return Ok((client, server));
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                if let Err(se) = server.pump() {
                    // Let the client read the alert, then report both views.
                    let ce = client
                        .connect()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    return Err((ce, Some(se)));
                }
            }
            Err(e) => return Err((e.to_string(), server.conn.error().cloned())),
        }
    }
    Err(("handshake did not finish in 20 round trips".into(), None))
}

/// Client writes `data`; the engine decrypts it and echoes it back; the client reads it.
pub fn echo(client: &mut SslStream<ClientEnd>, server: &mut Server, data: &[u8]) {
    client.write_all(data).unwrap();
    let mut got = Vec::new();
    while got.len() < data.len() {
        server.pump().unwrap();
        let p = server.conn.plaintext().to_vec();
        server.conn.consume_plaintext(p.len());
        got.extend_from_slice(&p);
        assert!(
            !p.is_empty() || got.len() == data.len(),
            "engine produced no plaintext"
        );
    }
    assert_eq!(got, data);
    let mut sent = 0;
    while sent < got.len() {
        sent += server.conn.send(&got[sent..]).unwrap();
        server.pump().unwrap();
    }
    let mut back = vec![0u8; data.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
}

/// Plaintext lengths of the records in `wire` given `overhead` bytes per record.
pub fn record_lengths(wire: &[u8], overhead: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = wire;
    while rest.len() >= 5 {
        let n = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        out.push(5 + n - overhead);
        rest = &rest[5 + n..];
    }
    assert!(rest.is_empty(), "whole records");
    out
}

/// With the client role's record offload on: its record jobs, run inline one at a time,
/// until it has nothing more to protect.
pub fn run_client_records(c: &mut tls::ClientConn) -> Result<(), tls::Error> {
    while let Some(work) = c.take_records(9)? {
        assert!(c.take_records(9)?.is_none(), "one job at a time");
        let job = crypto_offload::Job::Records(crypto_offload::RecordJob { items: vec![work] });
        match crypto_offload::run(job) {
            Ok(crypto_offload::Done::Records(mut j)) => {
                c.complete_records(j.items.pop().expect("the work comes back"))?
            }
            Ok(_) => panic!("a record job completes as records"),
            Err(e) => c.fail_records(e)?,
        }
    }
    Ok(())
}

/// Moves bytes between a client role and the server engine until neither moves (each
/// side's record jobs run when its record offload is on); a client error is returned
/// after its alert reached the server.
pub fn client_pump(c: &mut tls::ClientConn, s: &mut Server) -> Result<(), tls::Error> {
    client_pump_capture(c, s, &mut Vec::new())
}

/// [`client_pump`], appending every byte the client sent to `sent`.
pub fn client_pump_capture(
    c: &mut tls::ClientConn,
    s: &mut Server,
    sent: &mut Vec<u8>,
) -> Result<(), tls::Error> {
    for _ in 0..200 {
        run_client_records(c)?;
        let out = c.pending_tls().to_vec();
        sent.extend_from_slice(&out);
        c.consume_tls(out.len());
        s.wire.to_server.borrow_mut().extend_from_slice(&out);
        let _ = s.pump();
        let input = std::mem::take(&mut *s.wire.to_client.borrow_mut());
        let n = c.read_tls(&input);
        s.wire
            .to_client
            .borrow_mut()
            .splice(0..0, input[n..].iter().copied());
        if let Err(e) = c.process(0).and_then(|_| run_client_records(c)) {
            // Deliver the alert the error queued.
            let alert = c.pending_tls().to_vec();
            s.wire.to_server.borrow_mut().extend_from_slice(&alert);
            let _ = s.pump();
            return Err(e);
        }
        let quiet = out.is_empty() && input.is_empty() && c.pending_tls().is_empty();
        if quiet && !c.sealing() && !c.input_pending() {
            return Ok(());
        }
    }
    Ok(())
}

/// A plaintext record holding a ServerHello (an empty session ID echo, no compression)
/// with `random`, `suite` and the extensions `exts` (type, body) in that order.
pub fn server_hello_record(random: &[u8; 32], suite: u16, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut e = Vec::new();
    for (t, b) in exts {
        e.extend_from_slice(&t.to_be_bytes());
        e.extend_from_slice(&(b.len() as u16).to_be_bytes());
        e.extend_from_slice(b);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(random);
    body.push(0);
    body.extend_from_slice(&suite.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&(e.len() as u16).to_be_bytes());
    body.extend_from_slice(&e);
    let mut msg = vec![2, 0, (body.len() >> 8) as u8, body.len() as u8];
    msg.extend_from_slice(&body);
    let mut rec = vec![22, 3, 3, (msg.len() >> 8) as u8, msg.len() as u8];
    rec.extend_from_slice(&msg);
    rec
}

/// The port an `openssl s_server -accept 127.0.0.1:0` listens on, read from its
/// `ACCEPT host:port` line (the kernel chose it, so no test races another for a port).
pub fn s_server_port(out: &mut impl std::io::BufRead) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "s_server exited before it listened");
        let port = line
            .strip_prefix("ACCEPT ")
            .and_then(|a| a.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok());
        if let Some(port) = port {
            return port;
        }
    }
}
