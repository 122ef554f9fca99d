//! Several configurations on one listener ([`tls::SniRouter`]): the ClientHello's SNI
//! chooses the configuration, an exact name beats a wildcard listed earlier, the
//! first is the default, and the chosen configuration's own versions, certificates,
//! client authentication and session store apply (libssl client, in-memory pipes).

mod common;

use std::sync::Arc;

use common::*;
use openssl::ssl::{SslOptions, SslVerifyMode, SslVersion};
use tls::{CertifiedKey, ClientAuth, Resumed, ServerConfig, Site, SniRouter};

fn config(kind: Kind, name: &str, edit: impl FnOnce(&mut ServerConfig)) -> Arc<ServerConfig> {
    let (chain, key) = leaf_pem(kind, &[name]);
    let ck = Arc::new(CertifiedKey::from_pem(&chain, &key).unwrap());
    let mut cfg = ServerConfig::new(vec![Site::new(vec![ck])]).unwrap();
    edit(&mut cfg);
    cfg.validate().unwrap();
    Arc::new(cfg)
}

/// A: a.example, both versions (the default). B: *.b.example, TLS 1.2 only, RSA.
/// C: x.b.example, client certificates required, P-384.
fn router() -> Arc<SniRouter> {
    let a = config(Kind::P256, "a.example", |_| {});
    let b = config(Kind::Rsa2048, "*.b.example", |c| c.tls13 = false);
    let c = config(Kind::P384, "x.b.example", |c| {
        let ca = ca().cert.to_pem().unwrap();
        c.client_auth = Some(Arc::new(ClientAuth::from_pem(&ca, true).unwrap()));
    });
    Arc::new(SniRouter::new(vec![a, b, c]).unwrap())
}

fn peer_name(c: &openssl::ssl::SslStream<ClientEnd>) -> String {
    let cert = c.ssl().peer_certificate().unwrap();
    let names = cert.subject_alt_names().unwrap();
    names.iter().next().unwrap().dnsname().unwrap().to_string()
}

#[test]
fn sni_chooses_the_configuration() {
    let router = router();
    let any = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_3, |_| {});
    let (mut c, mut s) = connect_routed(&any, router.clone(), Some("a.example")).unwrap();
    assert_eq!(s.conn.chosen_config(), Some(0));
    assert_eq!(s.conn.info().version, tls::msgs::version::TLS13);
    assert_eq!(peer_name(&c), "a.example");
    echo(&mut c, &mut s, b"through the default configuration");

    // B's settings apply: the client offers TLS 1.3, B speaks only 1.2.
    let (mut c, mut s) = connect_routed(&any, router.clone(), Some("www.b.example")).unwrap();
    assert_eq!(s.conn.chosen_config(), Some(1));
    assert_eq!(s.conn.info().version, tls::msgs::version::TLS12);
    assert_eq!(peer_name(&c), "*.b.example");
    echo(&mut c, &mut s, b"through B");

    // x.b.example matches B's wildcard first, but C's exact name wins; and C demands a
    // client certificate this client does not have.
    let Err((client_err, server_err)) = connect_routed(&any, router.clone(), Some("x.b.example"))
    else {
        panic!("x.b.example needs a client certificate");
    };
    assert!(
        matches!(
            server_err,
            Some(tls::Error::CertificateRequired { tls13: true })
        ),
        "{client_err} / {server_err:?}"
    );

    // No SNI, or a name nobody serves: the first configuration.
    let lax = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_3, |b| {
        b.set_verify(SslVerifyMode::NONE)
    });
    for host in [None, Some("nobody.example")] {
        let (c, s) = connect_routed(&lax, router.clone(), host).unwrap();
        assert_eq!(s.conn.chosen_config(), Some(0), "{host:?}");
        assert_eq!(peer_name(&c), "a.example");
    }
}

#[test]
fn chosen_configuration_before_and_after_the_client_hello() {
    let conn = tls::ServerConn::with_router(router(), 0);
    assert_eq!(conn.chosen_config(), None);
    let mut plain = tls::ServerConn::new(config(Kind::P256, "a.example", |_| {}), 0);
    // An unreadable first record: nothing was chosen.
    plain.read_tls(&[22, 3, 1, 0, 4, 1, 0, 0, 0]);
    assert!(plain.process().is_err());
    assert_eq!(plain.chosen_config(), None);
}

#[test]
fn sessions_resume_within_the_chosen_configuration() {
    let router = router();
    for opts in [SslOptions::NO_TICKET, SslOptions::empty()] {
        let ctx = client_ctx(SslVersion::TLS1_2, SslVersion::TLS1_2, |b| {
            b.set_options(opts);
        });
        let (mut c, mut s) = connect_routed(&ctx, router.clone(), Some("www.b.example")).unwrap();
        echo(&mut c, &mut s, b"first");
        let session = c.ssl().session().unwrap().to_owned();
        c.shutdown().unwrap();
        s.pump().unwrap();
        let mut ssl = client_ssl(&ctx, Some("www.b.example"));
        // SAFETY: the session came from a connection of this same context.
        unsafe { ssl.set_session(&session).unwrap() };
        let (c, s) = connect_routed_ssl(ssl, router.clone()).unwrap();
        assert!(c.ssl().session_reused(), "{opts:?}");
        assert_eq!(s.conn.chosen_config(), Some(1));
        let how = if opts.is_empty() {
            Resumed::Ticket
        } else {
            Resumed::SessionId
        };
        assert_eq!(s.conn.info().resumed, Some(how));
    }
    // The store and the ticket keys are B's own: A never saw a session.
    let a = &router.configs()[0];
    assert_eq!(a.resumption.store.as_ref().unwrap().len(), 0);
    assert_eq!(
        router.configs()[1].resumption.store.as_ref().unwrap().len(),
        1
    );
}
