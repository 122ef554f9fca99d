//! What one poll-mode core counts about its connections (served by the control
//! socket and the metrics endpoint). Each counter has one writer, its core; the crypto
//! link's counters are the driver's (`driver::OffloadStats`) and are served beside
//! these.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use driver::offload::add;

/// Counters of one core's proxy.
#[derive(Debug, Default, Serialize)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub backend_connected: AtomicU64,
    /// Backend refused (RST) or did not answer the SYN in time.
    pub backend_failed: AtomicU64,
    /// Backend reset an established connection.
    pub backend_reset: AtomicU64,
    /// Backend closed (FIN) inside an HTTP response (HTTP-aware `tls` vservers): the
    /// client was reset rather than sent a close_notify.
    pub backend_truncated: AtomicU64,
    /// Client reset (or timed out) mid-connection.
    pub client_reset: AtomicU64,
    /// No connection slot or local port for the backend side.
    pub backend_no_slot: AtomicU64,
    /// Backends this core took out of rotation by passive health (`observe`).
    pub backend_passive_downs: AtomicU64,
    /// TLS clients that ended without needing their backend connection (a handshake
    /// and no request), so none was opened (`backend_connect` handshake or request).
    pub backend_connects_saved: AtomicU64,
    /// `[vserver.backend_tls]`: backend TLS handshakes completed in full, resumed
    /// (a ticket this core kept for that backend), and failed (certificate, alert,
    /// timeout, or a bad record later on the backend leg).
    pub backend_tls_full: AtomicU64,
    pub backend_tls_resumed: AtomicU64,
    pub backend_tls_failed: AtomicU64,
    /// Pairs that ended with both FINs passed on.
    pub completed: AtomicU64,
    pub bytes_to_backend: AtomicU64,
    pub bytes_to_client: AtomicU64,
    /// Client connections open now (a gauge).
    pub clients_open: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
    /// TLS handshakes completed, by version.
    pub tls12_handshakes: AtomicU64,
    pub tls13_handshakes: AtomicU64,
    /// Of those, how many resumed a session (session ID or ticket; TLS 1.3 PSK).
    pub tls12_resumed: AtomicU64,
    pub tls13_resumed: AtomicU64,
    /// Handshakes completed per cipher suite.
    pub tls_suites: CodeCounts<Suites>,
    /// Handshakes completed per key exchange group (resumptions without one, TLS 1.2
    /// session resumption and TLS 1.3 psk_ke, are not counted here).
    pub tls_groups: CodeCounts<Groups>,
    /// TLS handshakes: µs from the poll-loop iteration in which the ClientHello's first
    /// bytes arrived to the appliance's first answer being written (the ServerHello
    /// flight, or a HelloRetryRequest): the appliance's own share of a handshake's
    /// latency, its queueing on the core and the crypto pool included.
    pub tls_first_answer_us: Latency,
    /// TLS 1.3 handshakes whose client sent 0-RTT data, which was skipped (early data
    /// is never accepted; RFC 8446 §4.2.10).
    pub tls_early_data_skipped: AtomicU64,
    /// Handshakes whose client presented a certificate that verified.
    pub tls_client_certificates: AtomicU64,
    /// Handshakes that stapled an OCSP response (the client asked; the certificate had
    /// a valid one).
    pub tls_ocsp_stapled: AtomicU64,
    /// TLS connections that failed, by whose fault (see `tls::ErrorClass`).
    pub tls_peer_misbehaved: AtomicU64,
    pub tls_peer_incompatible: AtomicU64,
    pub tls_peer_alert: AtomicU64,
    pub tls_local_error: AtomicU64,
    /// Crypto jobs of completed handshakes and transcript bytes they hashed.
    pub tls_jobs: AtomicU64,
    pub tls_digest_bytes: AtomicU64,
    /// Application-data records sealed for clients, and the plaintext bytes in them.
    pub tls_records_out: AtomicU64,
    pub tls_record_bytes_out: AtomicU64,
    /// Data-bearing TCP segments sent to TLS clients (handshake flights included,
    /// retransmissions too); with `tls_records_out`, records per segment.
    pub tls_segments_out: AtomicU64,
    /// Why staged plaintext was sealed (see `transmit`): full-size records sealed at
    /// the quantum, and times the end of an HTTP response, the backend's FIN, its
    /// PSH, or the timer sealed everything staged.
    pub tx_seal_quantum: AtomicU64,
    pub tx_seal_http_end: AtomicU64,
    pub tx_seal_fin: AtomicU64,
    pub tx_seal_psh: AtomicU64,
    pub tx_seal_timer: AtomicU64,
    /// Backend streams an HTTP-aware vserver could not frame as HTTP/1.1 responses
    /// (the other conditions carry on for them).
    pub http_framing_errors: AtomicU64,
    /// `socks5` vservers: CONNECTs that reached their target; requests refused by the
    /// allow/deny policy (reply 0x02); failed authentications (a wrong password, or no
    /// acceptable method); commands and address types not served (0x07, 0x08);
    /// targets that refused or did not answer (0x05, 0x04); malformed SOCKS messages.
    pub socks_connects: AtomicU64,
    pub socks_refused_policy: AtomicU64,
    pub socks_auth_failed: AtomicU64,
    pub socks_unsupported: AtomicU64,
    pub socks_target_failed: AtomicU64,
    pub socks_malformed: AtomicU64,
    /// UDP ASSOCIATEs answered with a relay port.
    pub socks_associations: AtomicU64,
    /// Datagrams (and their payload bytes) relayed from clients to targets, and from
    /// targets back to clients.
    pub dgram_up: AtomicU64,
    pub dgram_bytes_up: AtomicU64,
    pub dgram_down: AtomicU64,
    pub dgram_bytes_down: AtomicU64,
    /// Secure datagrams dropped: seen already (inside the replay window), older than
    /// the window, failing authentication (forged, corrupted, another association's).
    pub dgram_replayed: AtomicU64,
    pub dgram_too_old: AtomicU64,
    pub dgram_auth_failed: AtomicU64,
    /// Plain RFC 1928 datagrams on a vserver without `plain_udp`.
    pub dgram_plain_refused: AtomicU64,
    /// Datagrams dropped: from neither the client nor a target it sent to; with an
    /// unreadable header or flags byte; FRAG≠0; a target the policy refuses; larger
    /// than the port's MTU; finding the relay's send buffers full.
    pub dgram_foreign: AtomicU64,
    pub dgram_malformed: AtomicU64,
    pub dgram_fragment_dropped: AtomicU64,
    pub dgram_refused_policy: AtomicU64,
    pub dgram_too_big: AtomicU64,
    pub dgram_send_full: AtomicU64,
}

/// A set of TLS codes counted one by one (cipher suites, groups).
pub trait CodeSet {
    /// Every code counted, in the order served.
    const ALL: &'static [u16];
    /// The IANA name a code is served under.
    fn name(code: u16) -> &'static str;
}

/// The engine's cipher suites.
#[derive(Debug)]
pub struct Suites;

impl CodeSet for Suites {
    const ALL: &'static [u16] = &tls::msgs::suite::ALL;
    fn name(code: u16) -> &'static str {
        tls::msgs::suite::name(code)
    }
}

/// The engine's key exchange groups.
#[derive(Debug)]
pub struct Groups;

impl CodeSet for Groups {
    const ALL: &'static [u16] = &tls::msgs::group::ALL;
    fn name(code: u16) -> &'static str {
        tls::msgs::group::name(code)
    }
}

/// Handshakes completed per code of `C`, in `C::ALL` order; served as a map from the
/// code's IANA name to its count.
#[derive(Debug)]
pub struct CodeCounts<C: CodeSet>(Box<[AtomicU64]>, std::marker::PhantomData<C>);

impl<C: CodeSet> Default for CodeCounts<C> {
    fn default() -> Self {
        CodeCounts(
            C::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            std::marker::PhantomData,
        )
    }
}

impl<C: CodeSet> CodeCounts<C> {
    pub fn count(&self, code: u16) {
        if let Some(i) = C::ALL.iter().position(|&c| c == code) {
            add(&self.0[i], 1);
        }
    }
}

impl<C: CodeSet> Serialize for CodeCounts<C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (c, &code) in self.0.iter().zip(C::ALL.iter()) {
            m.serialize_entry(C::name(code), &c.load(Ordering::Relaxed))?;
        }
        m.end()
    }
}

/// Upper bounds (µs) of [`Latency`]'s buckets; one more bucket takes the rest.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000,
    100_000,
];

/// A latency histogram of fixed buckets, counted with atomics on one core. Serialized
/// as a map from each bucket's upper bound in µs ("+Inf" for the last) to its count
/// (not cumulative), and `sum_us`, the sum of every value.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    pub fn record(&self, us: u64) {
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        add(&self.buckets[i], 1);
        add(&self.sum_us, us);
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.buckets.len() + 1))?;
        for (i, c) in self.buckets.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            match LATENCY_BOUNDS_US.get(i) {
                Some(b) => m.serialize_entry(&b.to_string(), &n)?,
                None => m.serialize_entry("+Inf", &n)?,
            }
        }
        m.serialize_entry("sum_us", &self.sum_us.load(Ordering::Relaxed))?;
        m.end()
    }
}

/// Published copy of the queue counters (the queue itself is owned by the core).
#[derive(Debug, Default, Serialize)]
pub struct QueueStats {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Bursts handed to the NIC (af_packet: `sendto` kicks).
    pub tx_bursts: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub rx_dropped: AtomicU64,
    /// Mbufs of the queue's pool in use (a gauge).
    pub mbufs_in_use: AtomicU64,
}
