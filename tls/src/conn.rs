//! The connection core the server and the client roles share: the record layer's state
//! (the deframer, both directions' protection, the output and plaintext buffers), the
//! handshake-message joiner, the record content rules ([`record::Inbound`]), the
//! close state, the keying material exporter, and the state of record offload
//! ([`crate::offload`]). A role holds one [`Core`] and adds its own state machine; what
//! is the same for both roles (buffers in and out, alerts, exporting) is done here once.
//!
//! What it must not do: know which role it serves or any handshake state.

use crypto_offload::Secret;

use crate::codec::HandshakeJoiner;
use crate::error::{alert, Error};
use crate::exporter::Exporter;
use crate::msgs::content;
use crate::record::{self, Cipher, Deframer, Inbound};

#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) deframer: Deframer,
    pub(crate) hs_buf: HandshakeJoiner,
    /// The record content rules both roles share (warning alerts in a row).
    pub(crate) inbound: Inbound,
    pub(crate) read: Option<Cipher>,
    pub(crate) write: Option<Cipher>,
    /// Protected bytes for the peer, from `out_pos` on.
    pub(crate) out: Vec<u8>,
    pub(crate) out_pos: usize,
    /// Decrypted application bytes, from `app_pos` on.
    pub(crate) app_in: Vec<u8>,
    pub(crate) app_pos: usize,
    /// The peer sent close_notify.
    pub(crate) peer_closed: bool,
    /// close_notify (or a fatal alert) has been written: nothing more is sealed.
    pub(crate) close_sent: bool,
    /// What keying material is exported from once the keys are agreed (RFC 5705,
    /// RFC 8446 §7.5).
    pub(crate) exporter: Option<Exporter>,
    /// Plaintext for the peer not yet sealed (`ServerConn::stage`).
    pub(crate) staged: Vec<u8>,
    /// Record offload ([`crate::offload`]): application records are protected by
    /// record jobs the caller runs, not here.
    pub(crate) offload: bool,
    /// Offload: record lengths cut from the front of `staged`, waiting for a job.
    pub(crate) cuts: Vec<usize>,
    /// Offload: the bytes in `cuts`.
    pub(crate) committed: usize,
    /// Offload: close_notify follows the records in `cuts`.
    pub(crate) close_wanted: bool,
    /// Offload: what is lent to a record job.
    pub(crate) loan: Option<Box<crate::offload::Loan>>,
}

impl Core {
    /// Feature `hostile` (tests only): seal each `(content type, inner plaintext)` as
    /// one record under the current write key, whatever it holds.
    #[cfg(feature = "hostile")]
    pub(crate) fn hostile_seal(&mut self, records: &[(u8, &[u8])]) -> Result<(), Error> {
        let write = self.write.as_mut().ok_or(Error::Misuse("no write key"))?;
        for (typ, body) in records {
            write.seal(&mut self.out, *typ, body, 0)?;
        }
        Ok(())
    }

    /// A core whose handshake messages may be up to `max_handshake` bytes.
    pub(crate) fn new(max_handshake: usize) -> Self {
        Core {
            deframer: Deframer::default(),
            hs_buf: HandshakeJoiner::new(max_handshake),
            inbound: Inbound::default(),
            read: None,
            write: None,
            out: Vec::new(),
            out_pos: 0,
            app_in: Vec::new(),
            app_pos: 0,
            peer_closed: false,
            close_sent: false,
            exporter: None,
            staged: Vec::new(),
            offload: false,
            cuts: Vec::new(),
            committed: 0,
            close_wanted: false,
            loan: None,
        }
    }

    /// How many TLS bytes the deframer takes now (none once the peer closed).
    pub(crate) fn tls_room(&self) -> usize {
        if self.peer_closed {
            0
        } else {
            self.deframer.room()
        }
    }

    /// Takes TLS bytes from the peer; returns how many.
    pub(crate) fn read_tls(&mut self, data: &[u8]) -> usize {
        if self.peer_closed {
            return 0;
        }
        self.deframer.push(data)
    }

    /// Bytes on their way to the peer: protected and waiting, staged, and out with a
    /// record job to be sealed (what the output bounds count).
    pub(crate) fn queued_out(&self) -> usize {
        let lent = self.loan.as_ref().map_or(0, |l| l.sealing_bytes());
        self.out.len() - self.out_pos + self.staged.len() + lent
    }

    pub(crate) fn pending_tls(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    pub(crate) fn consume_tls(&mut self, n: usize) {
        crate::codec::consume(&mut self.out, &mut self.out_pos, n);
    }

    pub(crate) fn plaintext(&self) -> &[u8] {
        &self.app_in[self.app_pos..]
    }

    pub(crate) fn consume_plaintext(&mut self, n: usize) {
        crate::codec::consume(&mut self.app_in, &mut self.app_pos, n);
    }

    /// An alert record: protected once a write key exists, else in plaintext.
    pub(crate) fn write_alert(&mut self, desc: u8) -> Result<(), Error> {
        let body = alert::record(desc);
        match self.write.as_mut() {
            Some(w) => w.seal(&mut self.out, content::ALERT, &body, 0),
            None => {
                record::write_plain(&mut self.out, content::ALERT, &body);
                Ok(())
            }
        }
    }

    /// Keying material from the connection's exporter, once `established`.
    pub(crate) fn export(
        &self,
        established: bool,
        label: &[u8],
        context: Option<&[u8]>,
        len: usize,
    ) -> Result<Secret, Error> {
        match (&self.exporter, established) {
            (Some(x), true) => x
                .export(label, context, len)
                .map_err(|e| Error::Crypto(e.to_string())),
            _ => Err(Error::Misuse(
                "keying material before the handshake is complete",
            )),
        }
    }

    /// Frees the capacity of every buffer that holds nothing now (TLS input and output,
    /// the handshake joiner, decrypted and staged plaintext). Nothing buffered is
    /// touched; harmless at any time.
    pub(crate) fn release_idle_buffers(&mut self) {
        self.deframer.release_if_drained();
        self.hs_buf.release_if_empty();
        crate::codec::release_if_drained(&mut self.out, &mut self.out_pos);
        crate::codec::release_if_drained(&mut self.app_in, &mut self.app_pos);
        if self.staged.is_empty() && self.cuts.is_empty() {
            self.staged = Vec::new();
            self.cuts = Vec::new();
        }
    }
}
