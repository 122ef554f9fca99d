//! Record offload: application records protected by record jobs that the caller runs
//! (inline or on the crypto pool, batched with other connections' records), instead
//! of sealed and opened on the calling core as they come.
//!
//! # Driving it
//! Turn it on with [`ServerConn::set_record_offload`]. Then, once the handshake is
//! done:
//! - [`ServerConn::seal_staged`] (and `send`, `close`) only *cut* staged plaintext
//!   into records; nothing is encrypted yet.
//! - [`ServerConn::process`] leaves whole application records in the input buffer.
//! - [`ServerConn::take_records`] lends the connection's input buffer, the records cut
//!   for output (laid out with their headers, plaintext copied in once from the
//!   stage), and the key of each direction to one [`RecordWork`]. The caller puts it in
//!   a [`crypto_offload::RecordJob`] with other connections' work and runs it.
//! - [`ServerConn::complete_records`] takes the work back: sealed records join
//!   [`ServerConn::pending_tls`], opened records are read as usual (plaintext to
//!   [`ServerConn::plaintext`], alerts, KeyUpdate). If the job was lost,
//!   [`ServerConn::fail_records`] ends the connection with an internal_error alert,
//!   sealed with a copy of the write key kept for that.
//!
//! While work is out the connection takes no TLS bytes (they wait in the transport),
//! processes nothing and seals nothing; its staging keeps taking plaintext.
//! [`ServerConn::sealing`] and [`ServerConn::input_pending`] say whether bytes are on
//! their way, so a caller does not close the transport under them.
//!
//! # Copies
//! The input buffer goes to the job and back: records are opened in place, and the
//! plaintext is then copied once into the buffer the backend reads from (which must be
//! contiguous; the same copy the direct path makes). Output: staged plaintext is
//! copied once into the record buffer, which goes to the job and back and becomes the
//! output buffer (when the previous output has all gone; else it is appended, a
//! second copy).

use crypto_offload::{AeadBatch, CryptoError, RecordWork};

use crate::error::{alert, Error};
use crate::msgs::content;
use crate::record::{Protection, RawRecord, HEADER, MAX_FRAGMENT};
use crate::server::{ServerConn, MAX_PLAINTEXT_BUFFERED};

/// What a connection has lent to a record job.
#[derive(Debug)]
pub(crate) struct Loan {
    open: Option<OpenLoan>,
    seal: Option<SealLoan>,
}

impl Loan {
    /// Output bytes out with the job (counted against the output bound).
    pub(crate) fn sealing_bytes(&self) -> usize {
        self.seal.as_ref().map_or(0, |s| s.bytes)
    }
}

#[derive(Debug)]
struct OpenLoan {
    records: Vec<RawRecord>,
    /// The first record's sequence number.
    seq: u64,
    /// Where the input continues after the lent records.
    end: usize,
}

#[derive(Debug)]
struct SealLoan {
    seq: u64,
    bytes: usize,
}

impl ServerConn {
    /// Protect application records in record jobs (see [`crate::offload`]). Set it
    /// before the handshake completes; records already cut stay as they are.
    pub fn set_record_offload(&mut self, on: bool) {
        self.core.offload = on;
    }

    /// Record offload is on.
    pub fn record_offload(&self) -> bool {
        self.core.offload
    }

    /// Record work is out with a job (until [`ServerConn::complete_records`]).
    pub fn records_lent(&self) -> bool {
        self.core.loan.is_some()
    }

    /// Seals what follows on the calling core from now on, for a last answer the
    /// connection closes with (no record job comes after it). `false`, and nothing
    /// changed, while records are cut or lent: the caller waits for them.
    pub fn seal_inline_from_now(&mut self) -> bool {
        if self.core.loan.is_some() || !self.core.cuts.is_empty() || self.core.close_wanted {
            return false;
        }
        self.core.offload = false;
        true
    }

    /// Output is on its way that [`ServerConn::pending_tls`] does not show yet: records
    /// cut and not sealed, a close_notify to follow them, or a seal out with a job.
    pub fn sealing(&self) -> bool {
        !self.core.cuts.is_empty()
            || self.core.close_wanted
            || self.core.loan.as_ref().is_some_and(|l| l.seal.is_some())
    }

    /// Input is on its way that [`ServerConn::plaintext`] does not show yet: records
    /// out with a job, or whole records waiting for one.
    pub fn input_pending(&self) -> bool {
        if self.core.loan.as_ref().is_some_and(|l| l.open.is_some()) {
            return true;
        }
        self.core.offload
            && self.error.is_none()
            && matches!(
                self.core.deframer.peek_record(self.core.deframer.pos()),
                Ok(Some(_))
            )
    }

    /// A record job's worth of this connection: its whole application records to open
    /// and its cut records to seal, with the keys, tagged `owner`. `None`: nothing to
    /// do, work already out, or offload off. An error (a malformed record) closes the
    /// connection as usual: its alert is queued.
    pub fn take_records(&mut self, owner: u64) -> Result<Option<RecordWork>, Error> {
        if !self.core.offload || self.core.loan.is_some() || !self.is_established() {
            return Ok(None);
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.lend(owner);
        match r {
            Ok(w) => Ok(w),
            Err(e) => self.check_fail(e).map(|_| None),
        }
    }

    /// The work is back from its job: seal and open results applied, then processing
    /// goes on as after [`ServerConn::process`].
    pub fn complete_records(&mut self, work: RecordWork) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some(loan) = self.core.loan.take() else {
            return self.check_fail(Error::Misuse("record work without a loan"));
        };
        let r = self
            .settle(*loan, work)
            .and_then(|_| self.process_records());
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.check_fail(e),
        }
    }

    /// The job carrying this connection's work was lost (its worker died): the input
    /// lent with it is gone, so the connection ends with an internal_error alert,
    /// sealed with the write key's copy.
    pub fn fail_records(&mut self, e: CryptoError) -> Result<(), Error> {
        let Some(loan) = self.core.loan.take() else {
            return Ok(());
        };
        if loan.open.is_some() {
            self.core.deframer.reset();
        }
        if let (Some(l), Some(w)) = (&loan.seal, self.core.write.as_mut()) {
            w.recover(l.seq);
        }
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        self.check_fail(Error::from(e))
    }

    /// Offload's `seal_staged`: cut uncommitted staged plaintext into records.
    pub(crate) fn cut_staged(&mut self, q: usize, all: bool) -> crate::Sealed {
        let mut done = crate::Sealed::default();
        let avail = self.core.staged.len() - self.core.committed;
        let mut pos = 0;
        while avail - pos >= q || (all && pos < avail) {
            let n = (avail - pos).min(q);
            self.core.cuts.push(n);
            pos += n;
            done.records += 1;
            done.bytes += n;
        }
        self.core.committed += pos;
        done
    }

    /// Offload's `close`: with records cut or out, close_notify follows them in the next
    /// job (`true`); else the caller writes it at once.
    pub(crate) fn close_after_records(&mut self) -> bool {
        if self.is_established() {
            self.cut_staged(MAX_FRAGMENT, true);
        }
        if self.core.cuts.is_empty() && self.core.loan.is_none() {
            return false;
        }
        self.core.close_wanted = true;
        true
    }

    /// Records the next job may open: TLS 1.3 application_data (the type every
    /// protected record wears; its inner type is known only once opened); TLS 1.2
    /// alerts, handshake messages and application data (a change_cipher_spec now is
    /// an error the direct path reports).
    pub(crate) fn batchable(&self, typ: u8) -> bool {
        match self.core.read.as_ref().map(|r| r.mode) {
            Some(Protection::Tls13) => typ == content::APPLICATION_DATA,
            Some(_) => matches!(
                typ,
                content::ALERT | content::HANDSHAKE | content::APPLICATION_DATA
            ),
            None => false,
        }
    }

    fn lend(&mut self, owner: u64) -> Result<Option<RecordWork>, Error> {
        let (open, open_loan) = self.lend_input()?;
        let (seal, seal_loan) = self.lend_output()?;
        if open.is_none() && seal.is_none() {
            return Ok(None);
        }
        self.core.loan = Some(Box::new(Loan {
            open: open_loan,
            seal: seal_loan,
        }));
        Ok(Some(RecordWork { owner, open, seal }))
    }

    /// Whole batchable records, as many as the plaintext bound leaves room for.
    fn lend_input(&mut self) -> Result<(Option<AeadBatch>, Option<OpenLoan>), Error> {
        let Some(read) = self.core.read.as_ref() else {
            return Ok((None, None));
        };
        if self.core.peer_closed {
            return Ok((None, None));
        }
        let mut budget =
            MAX_PLAINTEXT_BUFFERED.saturating_sub(self.core.app_in.len() - self.core.app_pos);
        let mut at = self.core.deframer.pos();
        let mut records = Vec::new();
        let mut ops = Vec::new();
        while budget > 0 {
            let rec = match self.core.deframer.peek_record(at) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if records.is_empty() => return Err(e),
                Err(_) => break, // reported when it is first in line
            };
            if !self.batchable(rec.typ) {
                break;
            }
            let header = self.core.deframer.header(&rec);
            let seq = read.seq + records.len() as u64;
            match read.open_op(seq, header, self.core.deframer.bytes(), rec.start, rec.end) {
                Ok(op) => ops.push(op),
                Err(e) if records.is_empty() => return Err(e),
                Err(_) => break,
            }
            budget = budget.saturating_sub(rec.end - rec.start);
            at = rec.end;
            records.push(rec);
        }
        if records.is_empty() {
            return Ok((None, None));
        }
        let tls13 = read.mode == Protection::Tls13;
        let read = self.core.read.as_mut().ok_or(Error::Misuse("read key"))?;
        let seq = read.reserve(records.len())?;
        let key = read.lend(false)?;
        let buf = self.core.deframer.lend();
        Ok((
            Some(AeadBatch::new(key, buf, ops, tls13)),
            Some(OpenLoan {
                records,
                seq,
                end: at,
            }),
        ))
    }

    /// The records cut from the stage, and a close_notify if one is wanted.
    fn lend_output(&mut self) -> Result<(Option<AeadBatch>, Option<SealLoan>), Error> {
        if self.core.cuts.is_empty() && !self.core.close_wanted {
            return Ok((None, None));
        }
        let Some(w) = self.core.write.as_mut() else {
            return Ok((None, None));
        };
        let n = self.core.cuts.len() + usize::from(self.core.close_wanted);
        // Sequence numbers and key first: nothing staged is dropped if they fail.
        let seq = w.reserve(n)?;
        let key = w.lend(true)?;
        let w = self.core.write.as_ref().ok_or(Error::Misuse("write key"))?;
        let pad = self.cfg.record_padding;
        let mut buf = Vec::with_capacity(self.core.committed + n * (HEADER + 8 + 1 + 16));
        let mut ops = Vec::with_capacity(n);
        let mut pos = 0;
        for (i, &len) in self.core.cuts.iter().enumerate() {
            let data = &self.core.staged[pos..pos + len];
            ops.push(w.seal_op(
                seq + i as u64,
                &mut buf,
                content::APPLICATION_DATA,
                data,
                pad,
            ));
            pos += len;
        }
        if self.core.close_wanted {
            let close = [1, alert::CLOSE_NOTIFY];
            ops.push(w.seal_op(
                seq + self.core.cuts.len() as u64,
                &mut buf,
                content::ALERT,
                &close,
                0,
            ));
            self.core.close_wanted = false;
            self.core.close_sent = true;
        }
        self.core.staged.drain(..pos);
        self.core.cuts.clear();
        self.core.committed = 0;
        let bytes = buf.len();
        Ok((
            Some(AeadBatch::new(key, buf, ops, false)),
            Some(SealLoan { seq, bytes }),
        ))
    }

    /// Keys back, sealed records out, opened records read.
    fn settle(&mut self, loan: Loan, work: RecordWork) -> Result<(), Error> {
        let RecordWork { open, seal, .. } = work;
        let mut result = Ok(());
        match (loan.seal, seal) {
            (None, None) => {}
            (Some(_), Some(b)) => {
                let w = self.core.write.as_mut().ok_or(Error::Misuse("write key"))?;
                w.restore(b.key);
                if let Some(e) = b.error {
                    result = Err(Error::from(e));
                } else if b.done != b.ops.len() {
                    result = Err(Error::Misuse("seal batch stopped early"));
                } else if self.core.out_pos == self.core.out.len() {
                    self.core.out = b.buf;
                    self.core.out_pos = 0;
                } else {
                    self.core.out.extend_from_slice(&b.buf);
                }
            }
            _ => return Err(Error::Misuse("record work does not match the loan")),
        }
        match (loan.open, open) {
            (None, None) => {}
            (Some(l), Some(b)) => {
                let r = self.core.read.as_mut().ok_or(Error::Misuse("read key"))?;
                r.restore(b.key);
                r.seq = l.seq + b.done as u64;
                let next = match l.records.get(b.done) {
                    Some(rec) => rec.start - HEADER,
                    None => l.end,
                };
                self.core.deframer.restore(b.buf, next);
                for (rec, op) in l.records.iter().zip(&b.ops).take(b.done) {
                    if self.core.peer_closed || result.is_err() {
                        break;
                    }
                    let payload = &self.core.deframer.bytes()[op.start..op.start + op.len];
                    let r = self.core.read.as_ref().ok_or(Error::Misuse("read key"))?;
                    let (typ, len) = r.opened(rec.typ, payload)?;
                    let s = op.start - rec.start;
                    result = self.on_record(typ, rec, s, s + len);
                }
                if let (Ok(()), Some(e)) = (&result, b.error) {
                    result = Err(Error::from(e));
                }
            }
            _ => return Err(Error::Misuse("record work does not match the loan")),
        }
        result
    }
}
