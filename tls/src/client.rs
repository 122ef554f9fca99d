//! The engine's client role: a sans-IO TLS 1.3 client (RFC 8446), full handshakes with
//! an (EC)DHE key share and resumption with a ticket (psk_dhe_ke), application data,
//! KeyUpdate, NewSessionTicket and close_notify; and TLS 1.2 ([`tls12`]: ECDHE, the
//! extended master secret, tickets and session IDs) when the configuration lists
//! TLS 1.2 suites. Both share the record layer, the handshake-message joiner and the
//! message parsers with the server role.
//!
//! It is driven like [`crate::ServerConn`]: [`ClientConn::read_tls`] bytes from the
//! server, [`ClientConn::process`], write [`ClientConn::pending_tls`] out. Its crypto
//! runs on the calling thread, or, after [`ClientConn::set_jobs`], as jobs the caller
//! runs where it likes (the crypto pool): each handshake step that needs the heavy math
//! (the TLS 1.3 (EC)DHE and key schedule after the ServerHello, the server's
//! authentication and the client's flight after its Finished, the whole TLS 1.2 key
//! exchange after ServerHelloDone) becomes one [`crypto_offload::Job::Call`] from
//! [`ClientConn::take_job`], and the connection waits for [`ClientConn::complete`]. The load generator uses it;
//! what it is allowed to cheapen is chosen by the caller and named where it is used:
//! a [`KeyShare`] may be reused across connections, a [`Ticket`] offered again, and
//! [`ClientConfig::verifier`] left out (no chain, name or CertificateVerify check; the
//! server's Finished is always checked).
//!
//! A server's CertificateRequest is answered with the configured certificate (its
//! precomputed Certificate message, the seed's client-side precomputation, and a
//! CertificateVerify) or, with none configured or none the server accepts, an empty
//! Certificate (RFC 8446 §4.4.2; the server decides).
//!
//! A HelloRetryRequest (RFC 8446 §4.1.4) is answered once: a second ClientHello with
//! the same random, a share for the group the server chose, its cookie, and the PSK
//! (if its hash fits the suite) bound over the rewritten transcript.
//!
//! Not built: post-handshake authentication, 0-RTT, TLS 1.2 renegotiation (refused).

mod tls12;

use std::sync::Arc;

use crypto_offload::job::CallResult;
use crypto_offload::{
    prim::random, CryptoError, Done, Group, HashAlg, Job, Secret, ServerVerifier,
};

use crate::jobs::client13::{
    psk_binder, ticket_psk, tls13_client_finish, tls13_client_hello, ClientAuth, KeyShare,
    ServerAuth, Tls13ClientFinish, Tls13ClientFinishDone, Tls13ClientHello, Tls13ClientHelloDone,
    Tls13ClientState,
};
use crate::jobs::{call, tls13_next_secret, Chunk, TrafficKey};

use crate::codec::{end_len, put_u16, start_len};
use crate::conn::Core;
use crate::error::{alert, Error};
use crate::msgs::{
    content, ext, group, hs, parse_certificate, parse_certificate_verify, put_ext, scheme, suite,
    version, CertificateRequest13, EncryptedExtensions, NewSessionTicket, ServerHello,
};
use crate::record::{Cipher, Content, Protection, MAX_FRAGMENT};
use crate::server::{pick_scheme_of, sig_alg_of, suite_info};

/// Largest handshake message the client accepts (a long certificate chain fits).
const MAX_HANDSHAKE: usize = 1 << 17;
/// Output the client buffers before [`ClientConn::send`] takes no more.
const MAX_OUT: usize = 1 << 17;

/// What a client offers and checks; shared by its connections.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The host name sent as SNI (none for an IP address).
    pub server_name: Option<String>,
    /// ALPN protocols offered, most preferred first.
    pub alpn: Vec<Vec<u8>>,
    /// Cipher suites offered, most preferred first: TLS 1.3 suites offer TLS 1.3,
    /// TLS 1.2 suites TLS 1.2 (both: the server chooses).
    pub suites: Vec<u16>,
    /// Groups offered; the connection's [`KeyShare`] must be for one of them.
    pub groups: Vec<u16>,
    /// Signature schemes accepted for the server's CertificateVerify.
    pub schemes: Vec<u16>,
    /// Verify the server's chain, name and CertificateVerify; `None`: do not.
    pub verifier: Option<Arc<ServerVerifier>>,
    /// The certificate and key a CertificateRequest is answered with.
    pub certificate: Option<Arc<crate::CertifiedKey>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server_name: None,
            alpn: Vec::new(),
            suites: vec![
                suite::TLS13_AES_128_GCM_SHA256,
                suite::TLS13_AES_256_GCM_SHA384,
                suite::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            groups: vec![group::X25519, group::SECP256R1, group::SECP384R1],
            schemes: vec![
                scheme::ECDSA_SECP256R1_SHA256,
                scheme::ECDSA_SECP384R1_SHA384,
                scheme::RSA_PSS_RSAE_SHA256,
                scheme::RSA_PSS_RSAE_SHA384,
                scheme::RSA_PSS_RSAE_SHA512,
            ],
            verifier: None,
            certificate: None,
        }
    }
}

impl ClientConfig {
    /// Whether its suites offer TLS 1.3 (`tls13`) or TLS 1.2 (`!tls13`).
    pub fn offers(&self, tls13: bool) -> bool {
        self.suites.iter().any(|&s| suite::is_tls13(s) == tls13)
    }

    /// The group of the key share a ClientHello offers: its first group, when TLS 1.3
    /// is offered; `None` for TLS 1.2 only (then [`ClientConn::without_share`]), or
    /// when no group is one the engine can make a share of.
    pub fn share_group(&self) -> Option<Group> {
        if !self.offers(true) {
            return None;
        }
        self.groups.first().and_then(|&g| group_of(g))
    }

    /// Refuses settings the client role cannot offer, naming them.
    pub fn validate(&self) -> Result<(), String> {
        if self.suites.is_empty() {
            return Err("no cipher suite".into());
        }
        if let Some(s) = self.suites.iter().find(|&&s| suite_info(s).is_none()) {
            return Err(format!(
                "cipher suite {s:#06x} is not one the client role has"
            ));
        }
        if self.groups.is_empty() {
            return Err("no group".into());
        }
        if let Some(g) = self.groups.iter().find(|&&g| group_of(g).is_none()) {
            return Err(format!("group {g} is not supported"));
        }
        if self.schemes.is_empty() {
            return Err("no signature scheme".into());
        }
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err("an ALPN protocol name is empty or longer than 255 bytes".into());
        }
        Ok(())
    }
}

/// The group code's key exchange.
pub fn group_of(g: u16) -> Option<Group> {
    crate::server::group_of(g)
}

/// The IANA name of a TLS 1.3 suite (as OpenSSL prints it).
pub fn suite_name(s: u16) -> &'static str {
    suite::name(s)
}

/// A resumption ticket from a NewSessionTicket, with the PSK it stands for (zeroized
/// when dropped, never printed).
#[derive(Clone)]
pub struct Ticket {
    suite: u16,
    version: u16,
    /// TLS 1.3: the ticket; TLS 1.2: the RFC 5077 ticket, or empty (session ID).
    ticket: Vec<u8>,
    /// TLS 1.2: the server's session ID.
    session_id: Vec<u8>,
    /// TLS 1.3: the PSK; TLS 1.2: the master secret.
    psk: Secret,
    age_add: u32,
    received_ms: u64,
    lifetime_s: u32,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ticket({} bytes, suite {:#06x})",
            self.ticket.len(),
            self.suite
        )
    }
}

impl Ticket {
    /// Still within its lifetime at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.received_ms) < u64::from(self.lifetime_s) * 1000
    }
    /// The protocol version of the session (0x0304 or 0x0303).
    pub fn version(&self) -> u16 {
        self.version
    }
    fn hash(&self) -> HashAlg {
        suite_info(self.suite).map_or(HashAlg::Sha256, |i| i.hash)
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// 0x0304 (TLS 1.3) or 0x0303 (TLS 1.2), once the ServerHello is in.
    pub version: u16,
    pub suite: u16,
    pub group: Option<u16>,
    pub resumed: bool,
    pub alpn: Option<Vec<u8>>,
    /// The verified server certificate's subject.
    pub peer: Option<String>,
    /// KeyUpdates received from the server.
    pub key_updates: u32,
    /// The server sent a HelloRetryRequest.
    pub retried: bool,
    /// The server asked for a certificate; whether one was sent.
    pub certificate_requested: bool,
    pub certificate_sent: bool,
}

enum State {
    ServerHello(Box<AwaitHello>),
    Flight(Box<AwaitFlight>),
    Traffic(Box<Secrets>),
    /// A TLS 1.2 handshake, from the ServerHello to the server's Finished.
    Tls12(Box<tls12::Handshake12>),
    Traffic12,
    /// A handshake step is out as a job ([`ClientConn::complete`] goes on).
    Waiting,
    Closed,
}

/// What to do with a handshake step's result.
enum Then {
    Hello13 {
        resumed: bool,
    },
    Finish13 {
        hash: HashAlg,
        aead: crypto_offload::AeadAlg,
    },
    Flight12(Box<tls12::Handshake12>),
}

struct AwaitHello {
    client_hello: Vec<u8>,
    /// The key share offered: none when TLS 1.3 is not offered (TLS 1.2 makes its
    /// ECDHE key after the ServerKeyExchange, or takes this one when its group fits).
    share: Option<KeyShare>,
    offered: Option<Ticket>,
    random: [u8; 32],
    /// The legacy_session_id sent (a TLS 1.2 session's, or random with a ticket).
    session_id: Vec<u8>,
    /// After a HelloRetryRequest: the transcript before the second ClientHello
    /// (message_hash of the first, then the HelloRetryRequest) and its suite.
    retried: Option<(Vec<u8>, u16)>,
}

/// The encrypted part of the server's flight, message by message.
struct AwaitFlight {
    crypto: Box<Tls13ClientState>,
    resumed: bool,
    ee: Option<Vec<u8>>,
    cert: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    cv: Option<(Vec<u8>, u16, Vec<u8>)>,
    /// The server's CertificateRequest, and the answer prepared for it.
    client_auth: Option<ClientAuth>,
}

struct Secrets {
    hash: HashAlg,
    aead: crypto_offload::AeadAlg,
    server: Secret,
    client: Secret,
    resumption_master: Secret,
}

/// One TLS 1.3 client connection.
pub struct ClientConn {
    cfg: Arc<ClientConfig>,
    state: State,
    /// Records, buffers, the joiner and record offload: what both roles share.
    pub(crate) core: Core,
    info: ClientInfo,
    ticket: Option<Ticket>,
    now_ms: u64,
    error: Option<Error>,
    /// TLS 1.2: the ticket offered and accepted (kept when no new one comes).
    offered_ticket12: Option<Vec<u8>>,
    /// Handshake steps come as jobs ([`ClientConn::set_jobs`]); the one not yet taken,
    /// and what its result is for.
    jobs: bool,
    job: Option<Job>,
    then: Option<Then>,
    /// Feature `hostile`: how to spoil the client Finished before it is sealed.
    #[cfg(feature = "hostile")]
    finished_edit: Option<fn(&mut Vec<u8>)>,
}

impl ClientConn {
    /// A connection whose ClientHello is ready in [`ClientConn::pending_tls`]. `share`
    /// is the key share to offer (fresh, or reused); `resume` a ticket to offer.
    pub fn new(
        cfg: Arc<ClientConfig>,
        share: KeyShare,
        resume: Option<&Ticket>,
        now_ms: u64,
    ) -> Result<Self, Error> {
        Self::start(cfg, Some(share), resume, now_ms)
    }

    /// [`ClientConn::new`] for a configuration that offers TLS 1.2 only: its
    /// ClientHello carries no key share, so none is made (a TLS 1.2 full handshake
    /// makes its ECDHE key when the server has said its group; a resumption needs
    /// none). A configuration that offers TLS 1.3 is refused (`Misuse`).
    pub fn without_share(
        cfg: Arc<ClientConfig>,
        resume: Option<&Ticket>,
        now_ms: u64,
    ) -> Result<Self, Error> {
        if cfg.offers(true) {
            return Err(Error::Misuse("TLS 1.3 is offered: a key share is needed"));
        }
        Self::start(cfg, None, resume, now_ms)
    }

    fn start(
        cfg: Arc<ClientConfig>,
        share: Option<KeyShare>,
        resume: Option<&Ticket>,
        now_ms: u64,
    ) -> Result<Self, Error> {
        let share_group = share
            .as_ref()
            .map(|share| {
                cfg.groups
                    .iter()
                    .copied()
                    .find(|&g| group_of(g) == Some(share.group()))
                    .ok_or(Error::Misuse("the key share's group is not offered"))
            })
            .transpose()?;
        let offered = resume
            .filter(|t| t.live(now_ms) && cfg.suites.contains(&t.suite))
            .cloned();
        let mut random_bytes = [0u8; 32];
        random(&mut random_bytes)?;
        // A TLS 1.2 session is offered by its ID, or with a ticket by a fresh random
        // ID the server echoes when it accepts (RFC 5077 §3.4).
        let session_id = match &offered {
            Some(t) if t.version == version::TLS12 && t.ticket.is_empty() => t.session_id.clone(),
            Some(t) if t.version == version::TLS12 => {
                let mut id = vec![0u8; 32];
                random(&mut id)?;
                id
            }
            _ => Vec::new(),
        };
        let client_hello = client_hello(
            &cfg,
            &Hello {
                random: &random_bytes,
                session_id: &session_id,
                share: share.as_ref().zip(share_group),
                resume: offered.as_ref(),
                cookie: None,
                prefix: &[],
            },
            now_ms,
        )?;
        let mut out = Vec::with_capacity(client_hello.len() + 5);
        crate::record::write_plain(&mut out, content::HANDSHAKE, &client_hello);
        Ok(ClientConn {
            cfg,
            state: State::ServerHello(Box::new(AwaitHello {
                client_hello,
                share,
                offered,
                random: random_bytes,
                session_id,
                retried: None,
            })),
            core: Core {
                out,
                ..Core::new(MAX_HANDSHAKE)
            },
            info: ClientInfo {
                group: share_group,
                ..ClientInfo::default()
            },
            ticket: None,
            now_ms,
            error: None,
            offered_ticket12: None,
            jobs: false,
            job: None,
            then: None,
            #[cfg(feature = "hostile")]
            finished_edit: None,
        })
    }

    // ----- getters

    pub fn is_handshaking(&self) -> bool {
        matches!(
            self.state,
            State::ServerHello(_) | State::Flight(_) | State::Tls12(_) | State::Waiting
        )
    }

    /// Handshake steps become jobs for the caller to run ([`ClientConn::take_job`],
    /// then [`ClientConn::complete`]) instead of running inside `process`.
    pub fn set_jobs(&mut self, on: bool) {
        self.jobs = on;
    }

    /// The crypto job the connection needs run, if any.
    pub fn take_job(&mut self) -> Option<Job> {
        self.job.take()
    }

    /// A job is out: the connection waits for its [`ClientConn::complete`].
    pub fn awaiting_job(&self) -> bool {
        self.then.is_some()
    }

    /// Applies a finished job, then goes on with what is buffered. On an error the
    /// connection closes with its alert queued, as in `process`.
    pub fn complete(&mut self, done: Result<Done, CryptoError>) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = match (self.then.take(), done) {
            (Some(then), Ok(Done::Call(v))) => {
                self.apply(then, Ok(v)).and_then(|_| self.process_records())
            }
            (Some(then), Err(e)) => self.apply(then, Err(e)),
            (None, _) => Err(Error::Misuse("a completion with no job out")),
            (Some(_), Ok(_)) => Err(Error::Misuse("a completion of another kind")),
        };
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    /// Runs a handshake step: here and now, or as a job (then `then` waits for it).
    fn step<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> Result<T, CryptoError> + Send + 'static,
        then: Then,
    ) -> Result<(), Error> {
        if !self.jobs {
            let r = f().map(|v| Box::new(v) as CallResult);
            return self.apply(then, r);
        }
        self.job = Some(call(f));
        self.then = Some(then);
        self.state = State::Waiting;
        Ok(())
    }

    /// Goes on from a step's result.
    fn apply(&mut self, then: Then, r: Result<CallResult, CryptoError>) -> Result<(), Error> {
        let v = r?;
        let wrong = || Error::Misuse("a step's result of another type");
        match then {
            Then::Hello13 { resumed } => {
                let d = v.downcast::<Tls13ClientHelloDone>().map_err(|_| wrong())?;
                self.hello13_done(*d, resumed)
            }
            Then::Finish13 { hash, aead } => {
                let d = v.downcast::<Tls13ClientFinishDone>().map_err(|_| wrong())?;
                self.finish13_done(*d, hash, aead)
            }
            Then::Flight12(h) => {
                let d = v.downcast::<tls12::Flight12Done>().map_err(|_| wrong())?;
                self.flight12_done(h, *d)
            }
        }
    }
    /// Keying material (RFC 8446 §7.5), as [`crate::ServerConn::export_keying_material`]
    /// on the other end computes it; only once established.
    pub fn export_keying_material(
        &self,
        label: &[u8],
        context: Option<&[u8]>,
        len: usize,
    ) -> Result<crypto_offload::Secret, Error> {
        self.core.export(self.is_established(), label, context, len)
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Traffic(_) | State::Traffic12)
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// The server sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.core.peer_closed
    }
    pub fn info(&self) -> &ClientInfo {
        &self.info
    }
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
    /// The newest ticket the server gave on this connection.
    pub fn ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref()
    }
    /// Takes the newest ticket the server gave (a caller that caches tickets per
    /// server takes each once).
    pub fn take_ticket(&mut self) -> Option<Ticket> {
        self.ticket.take()
    }

    // ----- input

    /// How many TLS bytes [`ClientConn::read_tls`] would take now.
    pub fn tls_room(&self) -> usize {
        if self.is_closed() {
            0
        } else {
            self.core.tls_room()
        }
    }

    /// Take up to [`ClientConn::tls_room`] bytes from the server; returns how many.
    pub fn read_tls(&mut self, data: &[u8]) -> usize {
        if self.is_closed() {
            return 0;
        }
        self.core.read_tls(data)
    }

    /// Advance on whatever input is buffered. On an error the connection closes with
    /// the alert the error calls for queued in [`ClientConn::pending_tls`].
    pub fn process(&mut self, now_ms: u64) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.now_ms = self.now_ms.max(now_ms);
        if self.core.loan.is_some() {
            return Ok(()); // records wait for the keys to come back
        }
        let r = self.process_records();
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    // ----- output

    /// TLS bytes to write to the server.
    pub fn pending_tls(&self) -> &[u8] {
        self.core.pending_tls()
    }
    pub fn consume_tls(&mut self, n: usize) {
        self.core.consume_tls(n)
    }

    /// Decrypted application data from the server.
    pub fn plaintext(&self) -> &[u8] {
        self.core.plaintext()
    }
    pub fn consume_plaintext(&mut self, n: usize) {
        self.core.consume_plaintext(n)
    }

    /// Protect and queue application data; returns how much was taken (0 before the
    /// handshake is done or while the output is full). Each write becomes its own
    /// records (up to 2^14 bytes each); with record offload on they are cut here and
    /// sealed by the next record job.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        if !self.is_established() || self.core.close_sent || self.core.close_wanted {
            return Ok(0);
        }
        let room = MAX_OUT.saturating_sub(self.core.queued_out());
        let n = data.len().min(room);
        if self.core.offload {
            self.core.staged.extend_from_slice(&data[..n]);
            self.core.cut_staged(MAX_FRAGMENT, true);
            return Ok(n);
        }
        let write = self
            .core
            .write
            .as_mut()
            .ok_or(Error::Misuse("no write key"))?;
        for chunk in data[..n].chunks(MAX_FRAGMENT) {
            write.seal(&mut self.core.out, content::APPLICATION_DATA, chunk, 0)?;
        }
        Ok(n)
    }

    /// Frees the capacity of every buffer that holds nothing now (as
    /// [`crate::ServerConn::release_idle_buffers`]): for a connection about to sit idle.
    pub fn release_idle_buffers(&mut self) {
        self.core.release_idle_buffers()
    }

    /// Queue close_notify (once); the connection takes no more data to send.
    pub fn close(&mut self) {
        if self.core.close_sent || self.core.close_wanted || self.is_closed() {
            return;
        }
        let established = self.is_established();
        if self.core.offload && self.core.close_after_records(established) {
            return;
        }
        self.core.close_sent = true;
        let _ = self.write_alert(alert::CLOSE_NOTIFY);
    }

    // ----- internals

    pub(crate) fn fail(&mut self, e: Error) {
        if let (Some(a), false) = (e.alert(), self.core.close_sent) {
            let _ = self.write_alert(a);
            self.core.close_sent = true;
        }
        self.error = Some(e);
        self.state = State::Closed;
    }

    fn write_alert(&mut self, desc: u8) -> Result<(), Error> {
        self.core.write_alert(desc)
    }

    pub(crate) fn process_records(&mut self) -> Result<(), Error> {
        loop {
            if self.then.is_some() {
                return Ok(()); // the rest waits for the step's result
            }
            if let Some(msg) = self.core.hs_buf.next_message()? {
                self.handshake_message(msg)?;
                continue;
            }
            if self.is_closed() || self.core.peer_closed {
                return Ok(());
            }
            if self.core.next_for_job(self.is_established())? {
                return Ok(()); // for the next record job (`take_records`)
            }
            let Some(rec) = self.core.deframer.next_record()? else {
                return Ok(());
            };
            let header = self.core.deframer.header(&rec);
            // Opened in place; the plaintext is read where it lies (no copy of it).
            let (typ, start, end, protected) = match self.core.read.as_mut() {
                Some(c) if rec.typ != content::CHANGE_CIPHER_SPEC => {
                    let (typ, s, e) = c.open(header, self.core.deframer.body_mut(&rec))?;
                    (typ, rec.start + s, rec.start + e, true)
                }
                _ => (rec.typ, rec.start, rec.end, false),
            };
            self.on_content(typ, start, end, protected)?;
        }
    }

    /// A record's content: type `typ`, bytes `start..end` of the input buffer, after
    /// any opening (here, or in a record job: `protected`).
    pub(crate) fn on_content(
        &mut self,
        typ: u8,
        start: usize,
        end: usize,
        protected: bool,
    ) -> Result<(), Error> {
        let body = &self.core.deframer.bytes()[start..end];
        let tls13 = self.info.version == version::TLS13;
        let joining = !self.core.hs_buf.is_empty();
        match self.core.inbound.content(typ, body, tls13, joining) {
            Ok(Content::Handshake) => self.core.hs_buf.push(body),
            Ok(Content::AppData) if self.is_established() => {
                self.core.app_in.extend_from_slice(body);
                Ok(())
            }
            Ok(Content::AppData) => {
                Err(Error::UnexpectedMessage("application data before Finished"))
            }
            Ok(Content::PeerClosed) => {
                self.core.peer_closed = true;
                Ok(())
            }
            Ok(Content::Nothing) => Ok(()),
            // TLS 1.2: the server's keys from here on.
            Ok(Content::ChangeCipherSpec) if matches!(self.state, State::Tls12(_)) => {
                self.change_cipher_spec12()
            }
            // RFC 8446 §5: a compatibility CCS during the handshake is dropped; a
            // protected one is unexpected_message.
            Ok(Content::ChangeCipherSpec) if self.is_handshaking() && !protected => Ok(()),
            Ok(Content::ChangeCipherSpec) => Err(Error::UnexpectedMessage("change_cipher_spec")),
            Err(e) => {
                if matches!(e, Error::PeerAlert(_)) {
                    // Nothing to answer with: the server has given up.
                    self.core.close_sent = true;
                }
                Err(e)
            }
        }
    }

    fn handshake_message(&mut self, msg: Vec<u8>) -> Result<(), Error> {
        let typ = msg[0];
        match std::mem::replace(&mut self.state, State::Closed) {
            State::ServerHello(w) if typ == hs::SERVER_HELLO => self.server_hello(*w, msg),
            State::Flight(f) => self.flight(*f, typ, msg),
            State::Traffic(t) => self.post_handshake(t, typ, &msg[4..]),
            State::Tls12(h) => self.message12(h, typ, msg),
            // RFC 5246 §7.4.1.1: a HelloRequest MAY be ignored; renegotiation is not
            // offered (no RFC 5746 renegotiated_connection).
            State::Traffic12 if typ == hs::HELLO_REQUEST && msg.len() == 4 => {
                self.state = State::Traffic12;
                Ok(())
            }
            State::Traffic12 => Err(Error::UnexpectedMessage("handshake message after Finished")),
            State::ServerHello(_) => Err(Error::UnexpectedMessage("expected ServerHello")),
            State::Waiting => Err(Error::Misuse("a message while a step is out")),
            State::Closed => Err(Error::UnexpectedMessage("handshake after close")),
        }
    }

    fn server_hello(&mut self, w: AwaitHello, msg: Vec<u8>) -> Result<(), Error> {
        let sh = ServerHello::parse(&msg[4..])?;
        let (offers13, offers12) = (self.cfg.offers(true), self.cfg.offers(false));
        match sh.version {
            Some(version::TLS13) if offers13 => {}
            None if offers12 && !sh.retry && w.retried.is_none() => {
                return self.server_hello12(w, &sh, &msg)
            }
            // A version we did not offer, or one that refused TLS 1.3's negotiation.
            _ => return Err(Error::ProtocolVersion),
        }
        if sh.legacy_version != version::TLS12 {
            return Err(Error::IllegalParameter("ServerHello legacy_version"));
        }
        if sh.retry {
            return self.hello_retry(w, &sh, &msg);
        }
        if sh.unsolicited || sh.tls12_extensions {
            return Err(Error::IllegalParameter("unsolicited ServerHello extension"));
        }
        if sh.session_id != w.session_id.as_slice() {
            return Err(Error::IllegalParameter("session id echo"));
        }
        if !self.cfg.suites.contains(&sh.suite) {
            return Err(Error::IllegalParameter("cipher suite not offered"));
        }
        if w.retried.as_ref().is_some_and(|(_, s)| *s != sh.suite) {
            // RFC 8446 §4.1.4: the ServerHello's suite must be the HelloRetryRequest's.
            return Err(Error::IllegalParameter(
                "cipher suite differs from the HelloRetryRequest's",
            ));
        }
        let info = suite_info(sh.suite).ok_or(Error::IllegalParameter("cipher suite"))?;
        let (g, server_share) = sh.key_share.ok_or(Error::MissingExtension(
            "key_share (psk_ke was not offered)",
        ))?;
        if Some(g) != self.info.group {
            return Err(Error::IllegalParameter("key share group not offered"));
        }
        let psk = match (sh.psk, &w.offered) {
            (None, _) => None,
            (Some(0), Some(t)) if t.hash() == info.hash && t.version == version::TLS13 => {
                Some(t.psk.clone())
            }
            (Some(0), Some(_)) => {
                return Err(Error::IllegalParameter("resumed suite has another hash"))
            }
            (Some(_), _) => return Err(Error::IllegalParameter("PSK identity not offered")),
        };
        let resumed = psk.is_some();
        let suite = sh.suite;
        let server_share = server_share.to_vec();
        // RFC 8446 §5.1: the key changes at a record boundary.
        if !self.core.hs_buf.is_empty() {
            return Err(Error::UnexpectedMessage(
                "handshake data after ServerHello in the same record",
            ));
        }
        self.info.suite = suite;
        self.info.version = version::TLS13;
        self.info.resumed = resumed;
        let job = Tls13ClientHello {
            hash: info.hash,
            aead: info.aead,
            share: w
                .share
                .ok_or(Error::Misuse("TLS 1.3 without a key share offered"))?,
            server_share,
            psk,
            transcript: match w.retried {
                Some((prefix, _)) => vec![
                    Chunk::Owned(prefix),
                    Chunk::Owned(w.client_hello),
                    Chunk::Owned(msg),
                ],
                None => vec![Chunk::Owned(w.client_hello), Chunk::Owned(msg)],
            },
        };
        self.step(move || tls13_client_hello(job), Then::Hello13 { resumed })
    }

    /// The handshake keys are there: the server's encrypted flight comes next.
    fn hello13_done(&mut self, d: Tls13ClientHelloDone, resumed: bool) -> Result<(), Error> {
        self.core.read = Some(Cipher::new(d.handshake_read, Protection::Tls13));
        self.core.write = Some(Cipher::new(d.handshake_write, Protection::Tls13));
        self.state = State::Flight(Box::new(AwaitFlight {
            crypto: d.state,
            resumed,
            ee: None,
            cert: None,
            cv: None,
            client_auth: None,
        }));
        Ok(())
    }

    /// RFC 8446 §4.1.4: a HelloRetryRequest, answered with a second ClientHello.
    fn hello_retry(&mut self, w: AwaitHello, sh: &ServerHello, msg: &[u8]) -> Result<(), Error> {
        if w.retried.is_some() {
            return Err(Error::UnexpectedMessage("a second HelloRetryRequest"));
        }
        if sh.unsolicited || sh.psk.is_some() {
            return Err(Error::IllegalParameter(
                "HelloRetryRequest extension not offered",
            ));
        }
        if !self.core.hs_buf.is_empty() {
            return Err(Error::UnexpectedMessage(
                "handshake data after HelloRetryRequest in the same record",
            ));
        }
        if !self.cfg.suites.contains(&sh.suite) {
            return Err(Error::IllegalParameter("cipher suite not offered"));
        }
        let info = suite_info(sh.suite).ok_or(Error::IllegalParameter("cipher suite"))?;
        let group = match sh.key_share {
            Some((g, _)) => {
                // "the selected_group field ... was not offered in supported_groups or
                // ... corresponds to a group which was provided in the key_share
                // extension in the original ClientHello": illegal_parameter.
                if !self.cfg.groups.contains(&g) || Some(g) == self.info.group {
                    return Err(Error::IllegalParameter("HelloRetryRequest group"));
                }
                g
            }
            None if sh.cookie.is_some() => self.info.group.ok_or(Error::Misuse("no group"))?,
            // "would not result in any change in the ClientHello": illegal_parameter.
            None => {
                return Err(Error::IllegalParameter(
                    "HelloRetryRequest that changes nothing",
                ))
            }
        };
        let share = match w.share {
            Some(share) if Some(group) == self.info.group => share,
            _ => {
                let g = group_of(group).ok_or(Error::IllegalParameter("group"))?;
                KeyShare::generate(g)?
            }
        };
        // The first ClientHello is replaced in the transcript by its hash.
        let h1 = crypto_offload::prim::hash(info.hash, &w.client_hello)?;
        let mut prefix = vec![hs::MESSAGE_HASH, 0, 0, h1.len() as u8];
        prefix.extend_from_slice(&h1);
        prefix.extend_from_slice(msg);
        // A PSK stays only if its hash is the suite's.
        let offered = w.offered.filter(|t| t.hash() == info.hash);
        let client_hello = client_hello(
            &self.cfg,
            &Hello {
                random: &w.random,
                session_id: &w.session_id,
                share: Some((&share, group)),
                resume: offered.as_ref(),
                cookie: sh.cookie,
                prefix: &prefix,
            },
            self.now_ms,
        )?;
        crate::record::write_plain(&mut self.core.out, content::HANDSHAKE, &client_hello);
        self.info.group = Some(group);
        self.info.retried = true;
        self.state = State::ServerHello(Box::new(AwaitHello {
            client_hello,
            share: Some(share),
            offered,
            random: w.random,
            session_id: w.session_id,
            retried: Some((prefix, sh.suite)),
        }));
        Ok(())
    }

    fn flight(&mut self, mut f: AwaitFlight, typ: u8, msg: Vec<u8>) -> Result<(), Error> {
        let body = &msg[4..];
        match typ {
            hs::ENCRYPTED_EXTENSIONS if f.ee.is_none() => {
                let ee = EncryptedExtensions::parse(body)?;
                if let Some(p) = ee.alpn {
                    if !self.cfg.alpn.iter().any(|o| o == p) {
                        return Err(Error::IllegalParameter("ALPN protocol not offered"));
                    }
                    self.info.alpn = Some(p.to_vec());
                }
                f.ee = Some(msg);
            }
            // RFC 8446 §4.3.2: not in a PSK handshake, at most once, before the
            // server's Certificate.
            hs::CERTIFICATE_REQUEST
                if f.ee.is_some() && !f.resumed && f.cert.is_none() && f.client_auth.is_none() =>
            {
                f.client_auth = Some(self.answer_certificate_request(msg)?);
            }
            hs::CERTIFICATE if f.ee.is_some() && !f.resumed && f.cert.is_none() => {
                let chain = parse_certificate(body, true)?;
                if chain.is_empty() {
                    return Err(Error::Decode("the server sent no certificate"));
                }
                f.cert = Some((msg, chain));
            }
            hs::CERTIFICATE_VERIFY if f.cert.is_some() && f.cv.is_none() => {
                let (s, sig) = parse_certificate_verify(body)?;
                // RFC 8446 §4.4.3: RSA signatures MUST use an RSASSA-PSS algorithm.
                let pkcs1 = matches!(
                    s,
                    scheme::RSA_PKCS1_SHA256 | scheme::RSA_PKCS1_SHA384 | scheme::RSA_PKCS1_SHA512
                );
                if !self.cfg.schemes.contains(&s) || pkcs1 {
                    return Err(Error::IllegalParameter("signature scheme not offered"));
                }
                let sig = sig.to_vec();
                f.cv = Some((msg, s, sig));
            }
            hs::FINISHED if f.ee.is_some() && (f.resumed || f.cv.is_some()) => {
                return self.finish(f, msg);
            }
            _ => {
                return Err(Error::UnexpectedMessage(
                    "out of order in the server's flight",
                ))
            }
        }
        self.state = State::Flight(Box::new(f));
        Ok(())
    }

    fn finish(&mut self, f: AwaitFlight, server_finished: Vec<u8>) -> Result<(), Error> {
        let auth = match (f.cert, f.cv) {
            (Some((certificate, chain)), Some((certificate_verify, s, signature))) => {
                Some(ServerAuth {
                    certificate,
                    chain,
                    certificate_verify,
                    sig_alg: sig_alg_of(s),
                    signature,
                    verifier: self.cfg.verifier.clone(),
                })
            }
            _ => None,
        };
        let hash = suite_info(self.info.suite).map_or(HashAlg::Sha256, |i| i.hash);
        let aead = suite_info(self.info.suite)
            .map(|i| i.aead)
            .ok_or(Error::Misuse("no suite"))?;
        if let Some(ca) = &f.client_auth {
            self.info.certificate_requested = true;
            self.info.certificate_sent = ca.signer.is_some();
        }
        if !self.core.hs_buf.is_empty() {
            return Err(Error::UnexpectedMessage(
                "handshake data after Finished in the same record",
            ));
        }
        let job = Tls13ClientFinish {
            state: f.crypto,
            encrypted_extensions: f.ee.unwrap_or_default(),
            client_auth: f.client_auth,
            auth,
            server_finished,
        };
        self.step(
            move || tls13_client_finish(job),
            Then::Finish13 { hash, aead },
        )
    }

    /// The server is authenticated and its Finished checked: our flight goes out under
    /// the handshake key, and the application keys take over.
    fn finish13_done(
        &mut self,
        d: Tls13ClientFinishDone,
        hash: HashAlg,
        aead: crypto_offload::AeadAlg,
    ) -> Result<(), Error> {
        self.info.peer = d.peer;
        #[allow(unused_mut)]
        let mut client_finished = d.client_finished;
        #[cfg(feature = "hostile")]
        if let Some(edit) = self.finished_edit {
            edit(&mut client_finished);
        }
        let write = self
            .core
            .write
            .as_mut()
            .ok_or(Error::Misuse("no write key"))?;
        // Certificate, CertificateVerify and Finished: a long chain spans records.
        for part in client_finished.chunks(MAX_FRAGMENT) {
            write.seal(&mut self.core.out, content::HANDSHAKE, part, 0)?;
        }
        self.core.read = Some(Cipher::new(d.app_read, Protection::Tls13));
        self.core.write = Some(Cipher::new(d.app_write, Protection::Tls13));
        self.core.exporter = Some(d.exporter);
        self.state = State::Traffic(Box::new(Secrets {
            hash,
            aead,
            server: d.server_app_secret,
            client: d.client_app_secret,
            resumption_master: d.resumption_master,
        }));
        Ok(())
    }

    /// The answer to a CertificateRequest: the configured certificate's precomputed
    /// Certificate message and a scheme the server accepts for its key, or an empty
    /// Certificate when there is no such certificate.
    fn answer_certificate_request(&self, msg: Vec<u8>) -> Result<ClientAuth, Error> {
        let cr = CertificateRequest13::parse(&msg[4..])?;
        if !cr.context.is_empty() {
            // RFC 8446 §4.3.2: "This field SHALL be zero length unless used for the
            // post-handshake authentication exchanges".
            return Err(Error::IllegalParameter(
                "certificate_request_context in the handshake",
            ));
        }
        let chosen = self.cfg.certificate.as_ref().and_then(|ck| {
            pick_scheme_of(ck.kind, true, |s| cr.schemes.contains(&s)).map(|s| (ck, s))
        });
        Ok(match chosen {
            Some((ck, s)) => ClientAuth {
                certificate_request: msg,
                certificate: Chunk::Shared(ck.cert13.clone()),
                signer: Some((ck.key.clone(), sig_alg_of(s), s)),
            },
            None => ClientAuth {
                certificate_request: msg,
                // Empty context, empty certificate_list.
                certificate: Chunk::Owned(vec![hs::CERTIFICATE, 0, 0, 4, 0, 0, 0, 0]),
                signer: None,
            },
        })
    }

    fn post_handshake(&mut self, mut t: Box<Secrets>, typ: u8, body: &[u8]) -> Result<(), Error> {
        match typ {
            hs::NEW_SESSION_TICKET => {
                let nst = NewSessionTicket::parse(body)?;
                self.ticket = Some(Ticket {
                    suite: self.info.suite,
                    version: version::TLS13,
                    ticket: nst.ticket.to_vec(),
                    session_id: Vec::new(),
                    psk: ticket_psk(t.hash, t.resumption_master.bytes(), nst.nonce)?,
                    age_add: nst.age_add,
                    received_ms: self.now_ms,
                    lifetime_s: nst.lifetime_s,
                });
            }
            hs::KEY_UPDATE => {
                let requested = match body {
                    [0] => false,
                    [1] => true,
                    _ => return Err(Error::IllegalParameter("KeyUpdate request")),
                };
                if !self.core.hs_buf.is_empty() {
                    return Err(Error::UnexpectedMessage(
                        "data after KeyUpdate in its record",
                    ));
                }
                self.info.key_updates += 1;
                t.server = tls13_next_secret(t.hash, t.server.bytes())?;
                let key = TrafficKey::tls13(t.hash, t.aead, t.server.bytes(), false)?;
                self.core.read = Some(Cipher::new(key, Protection::Tls13));
                if requested && !self.core.close_sent {
                    let write = self
                        .core
                        .write
                        .as_mut()
                        .ok_or(Error::Misuse("no write key"))?;
                    write.seal(
                        &mut self.core.out,
                        content::HANDSHAKE,
                        &[hs::KEY_UPDATE, 0, 0, 1, 0],
                        0,
                    )?;
                    t.client = tls13_next_secret(t.hash, t.client.bytes())?;
                    let key = TrafficKey::tls13(t.hash, t.aead, t.client.bytes(), true)?;
                    self.core.write = Some(Cipher::new(key, Protection::Tls13));
                }
            }
            _ => return Err(Error::UnexpectedMessage("handshake message after Finished")),
        }
        self.state = State::Traffic(t);
        Ok(())
    }
}

/// What differs between ClientHellos of one configuration.
struct Hello<'a> {
    random: &'a [u8; 32],
    session_id: &'a [u8],
    /// The key share and its group's code point (needed when TLS 1.3 is offered).
    share: Option<(&'a KeyShare, u16)>,
    resume: Option<&'a Ticket>,
    /// A HelloRetryRequest's cookie to echo.
    cookie: Option<&'a [u8]>,
    /// The transcript before this ClientHello (after a HelloRetryRequest), which the
    /// PSK binder covers too.
    prefix: &'a [u8],
}

/// The ClientHello message (with its handshake header).
fn client_hello(cfg: &ClientConfig, h: &Hello, now_ms: u64) -> Result<Vec<u8>, Error> {
    let resume = h.resume;
    let mut m = vec![hs::CLIENT_HELLO, 0, 0, 0, 3, 3];
    m.extend_from_slice(h.random);
    // legacy_session_id: a TLS 1.2 session's; else empty (no middlebox compatibility
    // mode).
    m.push(h.session_id.len() as u8);
    m.extend_from_slice(h.session_id);
    let (offers13, offers12) = (cfg.offers(true), cfg.offers(false));
    let at = start_len(&mut m, 2);
    for &s in &cfg.suites {
        put_u16(&mut m, s);
    }
    end_len(&mut m, at, 2);
    m.extend_from_slice(&[1, 0]);
    let exts_at = start_len(&mut m, 2);
    if let Some(name) = &cfg.server_name {
        put_ext(&mut m, ext::SERVER_NAME, |b| {
            let list = start_len(b, 2);
            b.push(0);
            let n = start_len(b, 2);
            b.extend_from_slice(name.as_bytes());
            end_len(b, n, 2);
            end_len(b, list, 2);
        });
    }
    put_ext(&mut m, ext::SUPPORTED_VERSIONS, |b| {
        let at = start_len(b, 1);
        if offers13 {
            put_u16(b, version::TLS13);
        }
        if offers12 {
            put_u16(b, version::TLS12);
        }
        end_len(b, at, 1);
    });
    if offers12 {
        // RFC 8422 §5.1.2 (uncompressed only), RFC 7627 §5.1, RFC 5746 §3.4 (an empty
        // renegotiated_connection: a first handshake), RFC 5077 §3.2.
        put_ext(&mut m, ext::EC_POINT_FORMATS, |b| {
            b.extend_from_slice(&[1, 0])
        });
        put_ext(&mut m, ext::EXTENDED_MASTER_SECRET, |_| {});
        put_ext(&mut m, ext::RENEGOTIATION_INFO, |b| b.push(0));
        put_ext(&mut m, ext::SESSION_TICKET, |b| {
            if let Some(t) = resume.filter(|t| t.version == version::TLS12) {
                b.extend_from_slice(&t.ticket);
            }
        });
    }
    put_ext(&mut m, ext::SUPPORTED_GROUPS, |b| {
        let at = start_len(b, 2);
        for &g in &cfg.groups {
            put_u16(b, g);
        }
        end_len(b, at, 2);
    });
    let schemes = if offers12 {
        tls12::offered_schemes12(cfg)
    } else {
        cfg.schemes.clone()
    };
    put_ext(&mut m, ext::SIGNATURE_ALGORITHMS, |b| {
        let at = start_len(b, 2);
        for &s in &schemes {
            put_u16(b, s);
        }
        end_len(b, at, 2);
    });
    if offers13 {
        let (share, share_group) = h
            .share
            .ok_or(Error::Misuse("TLS 1.3 is offered without a key share"))?;
        put_ext(&mut m, ext::KEY_SHARE, |b| {
            let list = start_len(b, 2);
            put_u16(b, share_group);
            let k = start_len(b, 2);
            b.extend_from_slice(share.public());
            end_len(b, k, 2);
            end_len(b, list, 2);
        });
    }
    if !cfg.alpn.is_empty() {
        put_ext(&mut m, ext::ALPN, |b| {
            let at = start_len(b, 2);
            for p in &cfg.alpn {
                b.push(p.len() as u8);
                b.extend_from_slice(p);
            }
            end_len(b, at, 2);
        });
    }
    if let Some(c) = h.cookie {
        put_ext(&mut m, ext::COOKIE, |b| {
            let at = start_len(b, 2);
            b.extend_from_slice(c);
            end_len(b, at, 2);
        });
    }
    // psk_dhe_ke: servers give tickets only to clients that say they can use them.
    if offers13 {
        put_ext(&mut m, ext::PSK_KEY_EXCHANGE_MODES, |b| {
            b.extend_from_slice(&[1, 1])
        });
    }
    let resume = resume.filter(|t| t.version == version::TLS13 && offers13);
    let binder_len = resume.map(|t| t.hash().output_len());
    if let Some(t) = resume {
        // RFC 8446 §4.2.11: last; the binder is computed over everything before the
        // binders list, so it is written as zeros first.
        let age = (now_ms.saturating_sub(t.received_ms) as u32).wrapping_add(t.age_add);
        let n = binder_len.unwrap_or(32);
        put_ext(&mut m, ext::PRE_SHARED_KEY, |b| {
            let ids = start_len(b, 2);
            let id = start_len(b, 2);
            b.extend_from_slice(&t.ticket);
            end_len(b, id, 2);
            b.extend_from_slice(&age.to_be_bytes());
            end_len(b, ids, 2);
            put_u16(b, (n + 1) as u16);
            b.push(n as u8);
            b.resize(b.len() + n, 0);
        });
    }
    end_len(&mut m, exts_at, 2);
    let body_len = m.len() - 4;
    if body_len >= 1 << 16 {
        return Err(Error::Misuse("ClientHello too long"));
    }
    m[1..4].copy_from_slice(&[
        (body_len >> 16) as u8,
        (body_len >> 8) as u8,
        body_len as u8,
    ]);
    if let (Some(t), Some(n)) = (resume, binder_len) {
        let cut = m.len() - n - 3;
        let binder = if h.prefix.is_empty() {
            psk_binder(t.hash(), t.psk.bytes(), &m[..cut])?
        } else {
            psk_binder(t.hash(), t.psk.bytes(), &[h.prefix, &m[..cut]].concat())?
        };
        let end = m.len();
        m[end - n..].copy_from_slice(binder.bytes());
    }
    Ok(m)
}

/// What a hostile client does that a correct one never would, for conformance tests of
/// a server (feature `hostile`, enabled only by this crate's own tests: never in the
/// appliance or loadgen).
#[cfg(feature = "hostile")]
impl ClientConn {
    /// Spoil the client Finished message (header included) before it is sealed.
    pub fn hostile_edit_finished(&mut self, edit: fn(&mut Vec<u8>)) {
        self.finished_edit = Some(edit);
    }

    /// Seal each `(content type, inner plaintext)` as one record under the current
    /// write key, whatever it holds (a handshake message cut in pieces, data between
    /// them).
    pub fn hostile_seal(&mut self, records: &[(u8, &[u8])]) -> Result<(), Error> {
        self.core.hostile_seal(records)
    }
}
