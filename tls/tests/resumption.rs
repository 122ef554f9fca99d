//! Session resumption against OpenSSL's libssl client: TLS 1.2 by session ID and by
//! RFC 5077 ticket, TLS 1.3 tickets in psk_dhe_ke and psk_ke modes (also after a
//! HelloRetryRequest), ticket key rotation and expiry, a bad binder, and a session store
//! that answers late or never.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use crypto_offload::{Secret, TicketKeys};
use openssl::ssl::{SslContext, SslOptions, SslSession, SslStream, SslVersion};
use tls::{LocalStore, Lookup, PendingLookup, PskMode, Resumed, ServerConfig, SessionStore};

const V12: SslVersion = SslVersion::TLS1_2;
const V13: SslVersion = SslVersion::TLS1_3;
const HOST: Option<&str> = Some("test.example");

fn ctx(v: SslVersion, opts: SslOptions) -> SslContext {
    client_ctx(v, v, |b| {
        b.set_options(opts);
    })
}

/// A full handshake, some data both ways (the TLS 1.3 client reads its ticket on the
/// way), and the session the client kept.
fn first(ctx: &SslContext, cfg: &Arc<ServerConfig>, now_ms: u64) -> (SslSession, Server) {
    let (mut c, mut s) = connect_ssl(client_ssl(ctx, HOST), cfg.clone(), now_ms).unwrap();
    echo(&mut c, &mut s, b"first connection");
    assert!(!c.ssl().session_reused());
    assert_eq!(s.conn.info().resumed, None);
    let session = c.ssl().session().unwrap().to_owned();
    close(c, &mut s);
    (session, s)
}

/// A clean close: libssl marks the session of a connection freed without a
/// close_notify as not resumable.
fn close(mut c: SslStream<ClientEnd>, s: &mut Server) {
    c.shutdown().unwrap();
    s.pump().unwrap();
    assert!(s.conn.peer_closed());
}

/// A second connection offering `session`.
fn again(
    ctx: &SslContext,
    cfg: &Arc<ServerConfig>,
    session: &SslSession,
    now_ms: u64,
) -> (SslStream<ClientEnd>, Server) {
    let mut ssl = client_ssl(ctx, HOST);
    // SAFETY: the session came from a connection of this same context.
    unsafe { ssl.set_session(session).unwrap() };
    let (mut c, mut s) = connect_ssl(ssl, cfg.clone(), now_ms).unwrap();
    echo(&mut c, &mut s, b"second connection");
    (c, s)
}

fn config(edit: impl FnOnce(&mut ServerConfig)) -> Arc<ServerConfig> {
    let mut cfg = config_with(&[Kind::P256, Kind::Rsa2048]);
    edit(&mut cfg);
    cfg.validate().unwrap();
    Arc::new(cfg)
}

#[test]
fn tls12_session_id_resumes_in_one_job_and_one_pass() {
    let cfg = config(|_| {});
    let ctx = ctx(V12, SslOptions::NO_TICKET);
    let (session, s1) = first(&ctx, &cfg, 0);
    assert_eq!(session.id().len(), 32, "full handshake issues a session ID");
    assert_eq!(cfg.resumption.store.as_ref().unwrap().len(), 1);
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    let info = s.conn.info();
    assert_eq!(info.resumed, Some(Resumed::SessionId));
    assert_eq!((info.jobs, info.digest.passes), (1, 1));
    assert_eq!(info.suite, s1.conn.info().suite);
    assert!(info.extended_master_secret);
    // The abbreviated handshake hashed only ClientHello and ServerHello.
    assert!(info.digest.bytes < s1.conn.info().digest.bytes);
}

#[test]
fn tls12_ticket_resumes_and_is_not_stored() {
    let cfg = config(|_| {});
    let ctx = ctx(V12, SslOptions::empty());
    let (session, _) = first(&ctx, &cfg, 0);
    assert_eq!(
        cfg.resumption.store.as_ref().unwrap().len(),
        0,
        "a ticket client's session is not stored"
    );
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    assert_eq!(s.conn.info().resumed, Some(Resumed::Ticket));
    assert_eq!(s.conn.info().jobs, 1);
}

#[test]
fn tls13_psk_dhe_ke_resumption_without_certificate() {
    let cfg = config(|_| {});
    let ctx = ctx(V13, SslOptions::empty());
    let (session, _) = first(&ctx, &cfg, 0);
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    let info = s.conn.info();
    assert_eq!(info.resumed, Some(Resumed::PskDheKe));
    assert_ne!(info.group, 0, "psk_dhe_ke does an (EC)DHE");
    assert_eq!(info.scheme, 0, "no CertificateVerify when resuming");
    assert_eq!((info.jobs, info.digest.passes), (1, 1));
    // Resumed connections get a fresh ticket, which resumes in turn.
    let next = c.ssl().session().unwrap().to_owned();
    let mut s = s;
    close(c, &mut s);
    let (c3, s3) = again(&ctx, &cfg, &next, 2_000);
    assert!(c3.ssl().session_reused());
    assert_eq!(s3.conn.info().resumed, Some(Resumed::PskDheKe));
}

#[test]
fn tls13_psk_ke_only_when_configured() {
    // SSL_OP_ALLOW_NO_DHE_KEX, which the openssl crate does not name.
    let ctx = ctx(V13, SslOptions::from_bits_retain(1 << 10));
    // Default server modes: psk_dhe_ke only, even though the client offers psk_ke.
    let cfg = config(|_| {});
    let (session, _) = first(&ctx, &cfg, 0);
    let (_, s) = again(&ctx, &cfg, &session, 1_000);
    assert_eq!(s.conn.info().resumed, Some(Resumed::PskDheKe));

    let cfg = config(|c| c.resumption.psk_modes = vec![PskMode::PskKe, PskMode::PskDheKe]);
    let (session, _) = first(&ctx, &cfg, 0);
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    let info = s.conn.info();
    assert_eq!(info.resumed, Some(Resumed::PskKe));
    assert_eq!(info.group, 0, "psk_ke does no key exchange");

    // A server that takes psk_ke only, and a client that offers only psk_dhe_ke: no
    // ticket is issued, since the client could not use it.
    let cfg = config(|c| c.resumption.psk_modes = vec![PskMode::PskKe]);
    let dhe_only = self::ctx(V13, SslOptions::empty());
    let (_, mut s) = connect(&dhe_only, cfg, HOST).unwrap();
    s.pump().unwrap();
    assert_eq!(s.conn.info().resumed, None);
}

#[test]
fn tls13_resumption_after_hello_retry() {
    // libssl sends an X448 share only; this server takes P-384, so it asks again.
    let cfg = config(|c| c.groups = vec![24]);
    let ctx = client_ctx(V13, V13, |b| b.set_groups_list("X448:P-384").unwrap());
    let (session, _) = first(&ctx, &cfg, 0);
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    let info = s.conn.info();
    assert!(info.hello_retry);
    assert_eq!(info.resumed, Some(Resumed::PskDheKe));
    // The binder of the second hello covers message_hash(CH1) and the retry.
    assert_eq!(info.digest.passes, 2);
}

#[test]
fn rotated_out_ticket_keys_and_expired_sessions_mean_full_handshakes() {
    for v in [V12, V13] {
        // A key seals for 1 s and its tickets open for 2 s more; sessions live 100 s.
        let cfg = config(|c| {
            c.resumption.tickets = Some(Arc::new(TicketKeys::new(1_000, 2_000)));
            c.resumption.lifetime_s = 100;
        });
        let ctx = ctx(v, SslOptions::empty());
        let (session, _) = first(&ctx, &cfg, 10_000);
        let (c, _) = again(&ctx, &cfg, &session, 12_500);
        assert!(c.ssl().session_reused(), "{v:?}: older key still opens");
        let (c, s) = again(&ctx, &cfg, &session, 13_500);
        assert!(!c.ssl().session_reused(), "{v:?}: key rotated out");
        assert_eq!(s.conn.info().resumed, None);
    }
    // The session's own lifetime, with keys that would still open it.
    let cfg = config(|c| c.resumption.lifetime_s = 1);
    for (v, opts) in [
        (V12, SslOptions::NO_TICKET),
        (V12, SslOptions::empty()),
        (V13, SslOptions::empty()),
    ] {
        let ctx = ctx(v, opts);
        let (session, _) = first(&ctx, &cfg, 0);
        let (c, _) = again(&ctx, &cfg, &session, 999);
        assert!(c.ssl().session_reused(), "{v:?} {opts:?}: within lifetime");
        let (c, _) = again(&ctx, &cfg, &session, 1_000);
        assert!(!c.ssl().session_reused(), "{v:?} {opts:?}: expired");
    }
}

#[test]
fn resumption_needs_the_same_server_name() {
    let cfg = config(|_| {});
    let ctx = ctx(V13, SslOptions::empty());
    let (session, _) = first(&ctx, &cfg, 0);
    let mut ssl = client_ssl(&ctx, Some("other.example"));
    unsafe { ssl.set_session(&session).unwrap() };
    // The certificate does not name other.example, so the client refuses the full
    // handshake it gets; what matters is that the engine did not resume.
    let wire = Wire::default();
    let mut client = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
    let mut server = Server::new(cfg, wire);
    let _ = client.connect();
    server.pump().unwrap();
    assert_eq!(server.conn.info().resumed, None);
    assert_ne!(server.conn.info().scheme, 0, "full handshake: signed");
}

#[test]
fn bad_binder_gets_decrypt_error() {
    let cfg = config(|_| {});
    let ctx = ctx(V13, SslOptions::empty());
    let (session, _) = first(&ctx, &cfg, 0);
    let mut ssl = client_ssl(&ctx, HOST);
    unsafe { ssl.set_session(&session).unwrap() };
    let wire = Wire::default();
    let mut client = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
    let _ = client.connect();
    // The binder is the last thing in the ClientHello.
    wire.to_server
        .borrow_mut()
        .last_mut()
        .map(|b| *b ^= 1)
        .unwrap();
    let mut server = Server::new(cfg, wire.clone());
    assert_eq!(server.pump(), Err(tls::Error::BadBinder));
    assert_eq!(*wire.to_client.borrow(), [21, 3, 3, 0, 2, 2, 51]);
}

#[test]
fn disabled_resumption_issues_nothing() {
    let cfg = config(|c| c.resumption = tls::Resumption::disabled());
    for (v, opts) in [
        (V12, SslOptions::NO_TICKET),
        (V12, SslOptions::empty()),
        (V13, SslOptions::empty()),
    ] {
        let ctx = ctx(v, opts);
        let (session, _) = first(&ctx, &cfg, 0);
        let (c, s) = again(&ctx, &cfg, &session, 1);
        assert!(!c.ssl().session_reused());
        assert_eq!(s.conn.info().resumed, None);
    }
}

/// A store whose lookups answer after `polls` polls (or never), like a remote one.
#[derive(Debug)]
struct SlowStore {
    local: LocalStore,
    polls: Option<u32>,
    lookups: Mutex<u32>,
}

struct SlowLookup {
    answer: Option<Secret>,
    polls_left: Option<u32>,
}

impl PendingLookup for SlowLookup {
    fn poll(&mut self) -> Option<Option<Secret>> {
        let left = self.polls_left.as_mut()?;
        if *left > 1 {
            *left -= 1;
            return None;
        }
        Some(self.answer.take())
    }
}

impl SessionStore for SlowStore {
    fn put(&self, id: &[u8], session: Secret, expires_ms: u64) {
        self.local.put(id, session, expires_ms)
    }
    fn lookup(&self, id: &[u8], now_ms: u64) -> Lookup {
        *self.lookups.lock().unwrap() += 1;
        let Lookup::Ready(answer) = self.local.lookup(id, now_ms) else {
            unreachable!("the local store answers at once")
        };
        Lookup::Pending(Box::new(SlowLookup {
            answer,
            polls_left: self.polls,
        }))
    }
    fn len(&self) -> usize {
        self.local.len()
    }
}

#[test]
fn a_late_store_answer_resumes_and_a_missing_one_times_out_to_a_full_handshake() {
    let ctx = ctx(V12, SslOptions::NO_TICKET);
    let late = Arc::new(SlowStore {
        local: LocalStore::new(10),
        polls: Some(3),
        lookups: Mutex::new(0),
    });
    let cfg = config(|c| c.resumption.store = Some(late.clone()));
    let (session, _) = first(&ctx, &cfg, 0);
    let (c, s) = again(&ctx, &cfg, &session, 1_000);
    assert!(c.ssl().session_reused());
    assert_eq!(s.conn.info().resumed, Some(Resumed::SessionId));
    assert_eq!(*late.lookups.lock().unwrap(), 1);

    let never = Arc::new(SlowStore {
        local: LocalStore::new(10),
        polls: None,
        lookups: Mutex::new(0),
    });
    let cfg = config(|c| {
        c.resumption.store = Some(never.clone());
        c.resumption.lookup_timeout_ms = 5;
    });
    let (session, _) = first(&ctx, &cfg, 0);
    let mut ssl = client_ssl(&ctx, HOST);
    unsafe { ssl.set_session(&session).unwrap() };
    let wire = Wire::default();
    let mut client = SslStream::new(ssl, ClientEnd(wire.clone())).unwrap();
    let mut server = Server::new_at(cfg, wire.clone(), 1_000);
    let _ = client.connect();
    server.pump().unwrap();
    assert!(server.conn.pending_tls().is_empty() && wire.to_client.borrow().is_empty());
    assert_eq!(server.conn.deadline(), Some(1_005), "the lookup's deadline");
    server.conn.handle_timeout(1_004).unwrap();
    assert!(
        server.conn.take_job().is_none(),
        "still waiting before the deadline"
    );
    server.conn.handle_timeout(1_005).unwrap();
    server.pump().unwrap();
    client.connect().unwrap_or_else(|_| {
        server.pump().unwrap();
        client.connect().unwrap();
    });
    server.pump().unwrap();
    assert!(!client.ssl().session_reused());
    assert!(server.conn.is_established());
    assert_eq!(server.conn.info().resumed, None);
}

extern "C" {
    // libssl's, not wrapped by the openssl crate.
    fn SSL_SESSION_get_ticket_lifetime_hint(
        s: *const openssl_sys::SSL_SESSION,
    ) -> std::os::raw::c_ulong;
}

/// The ticket_lifetime_hint of the ticket a session holds.
fn lifetime_hint(s: &SslSession) -> std::os::raw::c_ulong {
    use foreign_types::ForeignTypeRef;
    // SAFETY: a valid session for the duration of the call.
    unsafe { SSL_SESSION_get_ticket_lifetime_hint(s.as_ptr()) }
}

/// RFC 5077 §3.3: "the server ... MAY issue a new ticket" on a ticket's resumption; it
/// does when the ticket's key no longer seals, under the current key, so a client that
/// always resumes keeps resuming across key rotations: its first ticket's key retires,
/// its renewed ticket still opens. The renewed ticket keeps the session's lifetime (it
/// does not extend it). While the ticket's key still seals, the ticket is not replaced.
#[test]
fn tls12_ticket_resumption_renews_the_ticket_under_the_current_key() {
    // A key seals for 1 s and its tickets open for 2 s more; sessions live 100 s.
    let cfg = config(|c| {
        c.resumption.tickets = Some(Arc::new(TicketKeys::new(1_000, 2_000)));
        c.resumption.lifetime_s = 100;
    });
    let ctx = ctx(V12, SslOptions::empty());
    let (first_session, _) = first(&ctx, &cfg, 10_000);
    let (c, s) = again(&ctx, &cfg, &first_session, 10_500);
    assert!(c.ssl().session_reused());
    assert_eq!(s.conn.info().resumed, Some(Resumed::Ticket));
    assert_eq!(
        c.ssl().session().unwrap().to_der().unwrap(),
        first_session.to_der().unwrap(),
        "no new ticket while the key that sealed it still seals"
    );
    let (c, s) = again(&ctx, &cfg, &first_session, 12_500);
    assert!(c.ssl().session_reused());
    assert_eq!(s.conn.info().resumed, Some(Resumed::Ticket));
    let renewed = c.ssl().session().unwrap().to_owned();
    assert_ne!(
        renewed.to_der().unwrap(),
        first_session.to_der().unwrap(),
        "a new ticket came with the resumption"
    );
    // RFC 5077 §3.3: the hint is what is left of the session's lifetime.
    assert_eq!(lifetime_hint(&renewed), 97);
    // The first ticket's key has retired; the renewed ticket opens.
    let (c, _) = again(&ctx, &cfg, &first_session, 13_500);
    assert!(!c.ssl().session_reused(), "the first ticket's key retired");
    let (c, s) = again(&ctx, &cfg, &renewed, 13_500);
    assert!(c.ssl().session_reused(), "the renewed ticket opens");
    assert_eq!(s.conn.info().resumed, Some(Resumed::Ticket));
    // Still the session's lifetime: at 110 s after the first handshake it is over.
    let renewed = c.ssl().session().unwrap().to_owned();
    let cfg_late = config(|c| {
        c.resumption.tickets = Some(Arc::new(TicketKeys::new(1_000_000, 2_000_000)));
        c.resumption.lifetime_s = 100;
    });
    let (session, _) = first(&ctx, &cfg_late, 0);
    let (c, _) = again(&ctx, &cfg_late, &session, 60_000);
    assert!(c.ssl().session_reused());
    let renewed_late = c.ssl().session().unwrap().to_owned();
    let (c, _) = again(&ctx, &cfg_late, &renewed_late, 100_000);
    assert!(
        !c.ssl().session_reused(),
        "the renewal did not extend the session"
    );
    drop(renewed);
}

/// A TLS 1.2 client context (tickets per `opts`) listing only `cipher`.
fn ctx12(opts: SslOptions, cipher: &str) -> SslContext {
    client_ctx(V12, V12, |b| {
        b.set_options(opts);
        b.set_cipher_list(cipher).unwrap();
    })
}

/// The alert the server answers a client of `ctx` with, offering `session` if given.
fn refusal(ctx: &SslContext, session: Option<&SslSession>, cfg: &Arc<ServerConfig>) -> u8 {
    let mut ssl = client_ssl(ctx, HOST);
    if let Some(s) = session {
        // SAFETY: a session of a context with the same settings but the cipher list.
        unsafe { ssl.set_session(s).unwrap() };
    }
    let (_, server_error) = connect_ssl(ssl, cfg.clone(), 0)
        .err()
        .expect("the handshake is refused");
    let e = server_error.expect("the server's error");
    e.alert().unwrap_or_else(|| panic!("no alert for {e}"))
}

/// The same rule when what the client lists instead is NULL encryption (issue 26, class
/// 8): a session is never resumed under a suite that protects nothing, and the offer is
/// refused for what it breaks, the session's suite missing (RFC 5246 §7.4.1.2, as below:
/// illegal_parameter), not for the NULL suites. Without a session, a list of NULL suites
/// alone has nothing in common with the server's. RFC 5246 §7.4.1.3: the ServerHello is
/// sent "when it was able to find an acceptable set of algorithms. If it cannot find
/// such a match, it will respond with a handshake failure alert."
#[test]
fn tls12_null_cipher_offers_are_refused_with_the_rfcs_alerts() {
    let cfg = config(|_| {});
    let null_only = "NULL-SHA256:ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0";
    for opts in [SslOptions::NO_TICKET, SslOptions::empty()] {
        let (session, _) = first(&ctx12(opts, "ECDHE-ECDSA-AES128-GCM-SHA256"), &cfg, 0);
        let nulls = ctx12(opts, null_only);
        assert_eq!(
            refusal(&nulls, Some(&session), &cfg),
            tls::error::alert::ILLEGAL_PARAMETER,
            "{opts:?}, resuming"
        );
        assert_eq!(
            refusal(&nulls, None, &cfg),
            tls::error::alert::HANDSHAKE_FAILURE,
            "{opts:?}, full"
        );
    }
}

/// RFC 5246 §7.4.1.2: "If the session_id field is not empty (implying a session
/// resumption request), this vector MUST include at least the cipher_suite from that
/// session." A client offering a session of a suite it no longer lists gets
/// illegal_parameter (as OpenSSL's server answers it).
#[test]
fn tls12_resumption_without_the_sessions_suite_is_illegal_parameter() {
    let cfg = config(|_| {});
    for opts in [SslOptions::NO_TICKET, SslOptions::empty()] {
        let (session, _) = first(&ctx12(opts, "ECDHE-ECDSA-AES128-GCM-SHA256"), &cfg, 0);
        let other = ctx12(opts, "ECDHE-ECDSA-AES256-GCM-SHA384");
        assert_eq!(
            refusal(&other, Some(&session), &cfg),
            tls::error::alert::ILLEGAL_PARAMETER,
            "{opts:?}"
        );
    }
}
