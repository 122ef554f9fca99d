//! Record offload: application records protected by record jobs that the caller runs
//! (inline or on the crypto pool, batched with other connections' records), instead
//! of sealed and opened on the calling core as they come.
//!
//! Both roles do it the same way (the server's [`ServerConn`] and the client's
//! [`ClientConn`], on the [`Core`] they share); the server's methods are named below,
//! the client's are the same.
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

use crate::client::ClientConn;
use crate::conn::Core;
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

/// What record offload needs of a role beyond its [`Core`].
pub(crate) trait Role {
    fn core(&self) -> &Core;
    fn core_mut(&mut self) -> &mut Core;
    fn established(&self) -> bool;
    fn failed(&self) -> Option<&Error>;
    /// Padding added to each sealed application record (TLS 1.3).
    fn padding(&self) -> usize;
    /// A record's content, type `typ`, bytes `s..e` of `rec`'s body, after opening.
    fn on_record(&mut self, typ: u8, rec: &RawRecord, s: usize, e: usize) -> Result<(), Error>;
    /// Goes on with whatever input is buffered.
    fn process_records(&mut self) -> Result<(), Error>;
    /// Ends the connection on `e` (its alert queued, if any) and returns it.
    fn check_fail(&mut self, e: Error) -> Result<(), Error>;
}

/// A record job's worth of a connection: its whole application records to open and
/// its cut records to seal, with the keys, tagged `owner`. `None`: nothing to do, work
/// already out, or offload off. An error (a malformed record) closes the connection as
/// usual: its alert is queued.
pub(crate) fn take_records<R: Role>(r: &mut R, owner: u64) -> Result<Option<RecordWork>, Error> {
    let c = r.core();
    if !c.offload || c.loan.is_some() || !r.established() {
        return Ok(None);
    }
    if let Some(e) = r.failed() {
        return Err(e.clone());
    }
    let pad = r.padding();
    match r.core_mut().lend(owner, pad) {
        Ok(w) => Ok(w),
        Err(e) => r.check_fail(e).map(|_| None),
    }
}

/// The work is back from its job: seal and open results applied, then processing goes
/// on.
pub(crate) fn complete_records<R: Role>(r: &mut R, work: RecordWork) -> Result<(), Error> {
    if let Some(e) = r.failed() {
        return Err(e.clone());
    }
    let Some(loan) = r.core_mut().loan.take() else {
        return r.check_fail(Error::Misuse("record work without a loan"));
    };
    let res = settle(r, *loan, work).and_then(|_| r.process_records());
    match res {
        Ok(()) => Ok(()),
        Err(e) => r.check_fail(e),
    }
}

/// The job carrying the connection's work was lost (its worker died): the input lent
/// with it is gone, so the connection ends with an internal_error alert, sealed with
/// the write key's copy.
pub(crate) fn fail_records<R: Role>(r: &mut R, e: CryptoError) -> Result<(), Error> {
    let c = r.core_mut();
    let Some(loan) = c.loan.take() else {
        return Ok(());
    };
    if loan.open.is_some() {
        c.deframer.reset();
    }
    if let (Some(l), Some(w)) = (&loan.seal, c.write.as_mut()) {
        w.recover(l.seq);
    }
    if let Some(err) = r.failed() {
        return Err(err.clone());
    }
    r.check_fail(Error::from(e))
}

/// Input is on its way that the plaintext does not show yet: records out with a job, or
/// whole records waiting for one.
pub(crate) fn input_pending<R: Role>(r: &R) -> bool {
    let c = r.core();
    if c.loan.as_ref().is_some_and(|l| l.open.is_some()) {
        return true;
    }
    // After close_notify nothing more is opened: records behind it are never read.
    !c.peer_closed
        && c.offload
        && r.failed().is_none()
        && matches!(c.deframer.peek_record(c.deframer.pos()), Ok(Some(_)))
}

/// Keys back, sealed records out, opened records read.
fn settle<R: Role>(r: &mut R, loan: Loan, work: RecordWork) -> Result<(), Error> {
    let RecordWork { open, seal, .. } = work;
    let mut result = Ok(());
    let c = r.core_mut();
    match (loan.seal, seal) {
        (None, None) => {}
        (Some(_), Some(b)) => {
            let w = c.write.as_mut().ok_or(Error::Misuse("write key"))?;
            w.restore(b.key);
            if let Some(e) = b.error {
                result = Err(Error::from(e));
            } else if b.done != b.ops.len() {
                result = Err(Error::Misuse("seal batch stopped early"));
            } else if c.out_pos == c.out.len() {
                c.out = b.buf;
                c.out_pos = 0;
            } else {
                c.out.extend_from_slice(&b.buf);
            }
        }
        _ => return Err(Error::Misuse("record work does not match the loan")),
    }
    match (loan.open, open) {
        (None, None) => {}
        (Some(l), Some(b)) => {
            let rd = c.read.as_mut().ok_or(Error::Misuse("read key"))?;
            rd.restore(b.key);
            rd.seq = l.seq + b.done as u64;
            let next = match l.records.get(b.done) {
                Some(rec) => rec.start - HEADER,
                None => l.end,
            };
            c.deframer.restore(b.buf, next);
            for (rec, op) in l.records.iter().zip(&b.ops).take(b.done) {
                if r.core().peer_closed || result.is_err() {
                    break;
                }
                let c = r.core();
                let payload = &c.deframer.bytes()[op.start..op.start + op.len];
                let rd = c.read.as_ref().ok_or(Error::Misuse("read key"))?;
                let (typ, len) = rd.opened(rec.typ, payload)?;
                let s = op.start - rec.start;
                result = r.on_record(typ, rec, s, s + len);
            }
            if let (Ok(()), Some(e)) = (&result, b.error) {
                result = Err(Error::from(e));
            }
        }
        _ => return Err(Error::Misuse("record work does not match the loan")),
    }
    result
}

impl Core {
    /// Record work is out with a job.
    pub(crate) fn records_lent(&self) -> bool {
        self.loan.is_some()
    }

    /// Output is on its way that the pending TLS bytes do not show yet: records cut
    /// and not sealed, a close_notify to follow them, or a seal out with a job.
    pub(crate) fn sealing(&self) -> bool {
        !self.cuts.is_empty()
            || self.close_wanted
            || self.loan.as_ref().is_some_and(|l| l.seal.is_some())
    }

    /// Offload's `seal_staged`: cut uncommitted staged plaintext into records.
    pub(crate) fn cut_staged(&mut self, q: usize, all: bool) -> crate::Sealed {
        let mut done = crate::Sealed::default();
        let avail = self.staged.len() - self.committed;
        let mut pos = 0;
        while avail - pos >= q || (all && pos < avail) {
            let n = (avail - pos).min(q);
            self.cuts.push(n);
            pos += n;
            done.records += 1;
            done.bytes += n;
        }
        self.committed += pos;
        done
    }

    /// Offload's `close`: with records cut or out, close_notify follows them in the next
    /// job (`true`); else the caller writes it at once.
    pub(crate) fn close_after_records(&mut self, established: bool) -> bool {
        if established {
            self.cut_staged(MAX_FRAGMENT, true);
        }
        if self.cuts.is_empty() && self.loan.is_none() {
            return false;
        }
        self.close_wanted = true;
        true
    }

    /// Records the next job may open: TLS 1.3 application_data (the type every
    /// protected record wears; its inner type is known only once opened); TLS 1.2
    /// alerts, handshake messages and application data (a change_cipher_spec now is
    /// an error the direct path reports).
    pub(crate) fn batchable(&self, typ: u8) -> bool {
        match self.read.as_ref().map(|r| r.mode) {
            Some(Protection::Tls13) => typ == content::APPLICATION_DATA,
            Some(_) => matches!(
                typ,
                content::ALERT | content::HANDSHAKE | content::APPLICATION_DATA
            ),
            None => false,
        }
    }

    /// With offload on and the handshake done, the next buffered record waits for a
    /// record job rather than being opened here.
    pub(crate) fn next_for_job(&self, established: bool) -> Result<bool, Error> {
        if !self.offload || !established {
            return Ok(false);
        }
        let next = self.deframer.peek_record(self.deframer.pos())?;
        Ok(next.is_some_and(|r| self.batchable(r.typ)))
    }

    fn lend(&mut self, owner: u64, pad: usize) -> Result<Option<RecordWork>, Error> {
        let (open, open_loan) = self.lend_input()?;
        let (seal, seal_loan) = self.lend_output(pad)?;
        if open.is_none() && seal.is_none() {
            return Ok(None);
        }
        self.loan = Some(Box::new(Loan {
            open: open_loan,
            seal: seal_loan,
        }));
        Ok(Some(RecordWork { owner, open, seal }))
    }

    /// Whole batchable records, as many as the plaintext bound leaves room for.
    fn lend_input(&mut self) -> Result<(Option<AeadBatch>, Option<OpenLoan>), Error> {
        let Some(read) = self.read.as_ref() else {
            return Ok((None, None));
        };
        if self.peer_closed {
            return Ok((None, None));
        }
        let mut budget = MAX_PLAINTEXT_BUFFERED.saturating_sub(self.app_in.len() - self.app_pos);
        let mut at = self.deframer.pos();
        let mut records = Vec::new();
        let mut ops = Vec::new();
        while budget > 0 {
            let rec = match self.deframer.peek_record(at) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if records.is_empty() => return Err(e),
                Err(_) => break, // reported when it is first in line
            };
            if !self.batchable(rec.typ) {
                break;
            }
            let header = self.deframer.header(&rec);
            let seq = read.seq + records.len() as u64;
            match read.open_op(seq, header, self.deframer.bytes(), rec.start, rec.end) {
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
        let read = self.read.as_mut().ok_or(Error::Misuse("read key"))?;
        let seq = read.reserve(records.len())?;
        let key = read.lend(false)?;
        let buf = self.deframer.lend();
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
    fn lend_output(&mut self, pad: usize) -> Result<(Option<AeadBatch>, Option<SealLoan>), Error> {
        if self.cuts.is_empty() && !self.close_wanted {
            return Ok((None, None));
        }
        let Some(w) = self.write.as_mut() else {
            return Ok((None, None));
        };
        let n = self.cuts.len() + usize::from(self.close_wanted);
        // Sequence numbers and key first: nothing staged is dropped if they fail.
        let seq = w.reserve(n)?;
        let key = w.lend(true)?;
        let w = self.write.as_ref().ok_or(Error::Misuse("write key"))?;
        let mut buf = Vec::with_capacity(self.committed + n * (HEADER + 8 + 1 + 16));
        let mut ops = Vec::with_capacity(n);
        let mut pos = 0;
        for (i, &len) in self.cuts.iter().enumerate() {
            let data = &self.staged[pos..pos + len];
            ops.push(w.seal_op(
                seq + i as u64,
                &mut buf,
                content::APPLICATION_DATA,
                data,
                pad,
            ));
            pos += len;
        }
        if self.close_wanted {
            let close = [1, alert::CLOSE_NOTIFY];
            ops.push(w.seal_op(
                seq + self.cuts.len() as u64,
                &mut buf,
                content::ALERT,
                &close,
                0,
            ));
            self.close_wanted = false;
            self.close_sent = true;
        }
        self.staged.drain(..pos);
        self.cuts.clear();
        self.committed = 0;
        let bytes = buf.len();
        Ok((
            Some(AeadBatch::new(key, buf, ops, false)),
            Some(SealLoan { seq, bytes }),
        ))
    }
}

/// The same public methods on both roles.
macro_rules! offload_api {
    ($role:ty) => {
        impl $role {
            /// Protect application records in record jobs (see [`crate::offload`]). Set
            /// it before the handshake completes; records already cut stay as they are.
            pub fn set_record_offload(&mut self, on: bool) {
                self.core.offload = on;
            }

            /// Record offload is on.
            pub fn record_offload(&self) -> bool {
                self.core.offload
            }

            /// Record work is out with a job (until `complete_records`).
            pub fn records_lent(&self) -> bool {
                self.core.records_lent()
            }

            /// Output is on its way that `pending_tls` does not show yet: records cut
            /// and not sealed, a close_notify to follow them, or a seal out with a job.
            pub fn sealing(&self) -> bool {
                self.core.sealing()
            }

            /// Input is on its way that `plaintext` does not show yet: records out with
            /// a job, or whole records waiting for one.
            pub fn input_pending(&self) -> bool {
                input_pending(self)
            }

            /// A record job's worth of this connection, tagged `owner` (see
            /// [`crate::offload`]).
            pub fn take_records(&mut self, owner: u64) -> Result<Option<RecordWork>, Error> {
                take_records(self, owner)
            }

            /// The work is back from its job: seal and open results applied, then
            /// processing goes on.
            pub fn complete_records(&mut self, work: RecordWork) -> Result<(), Error> {
                complete_records(self, work)
            }

            /// The job carrying this connection's work was lost: the connection ends
            /// with an internal_error alert.
            pub fn fail_records(&mut self, e: CryptoError) -> Result<(), Error> {
                fail_records(self, e)
            }
        }
    };
}

offload_api!(ServerConn);
offload_api!(ClientConn);

impl ServerConn {
    /// Seals what follows on the calling core from now on, for a last answer the
    /// connection closes with (no record job comes after it). `false`, and nothing
    /// changed, while records are cut or lent: the caller waits for them.
    pub fn seal_inline_from_now(&mut self) -> bool {
        let c = &self.core;
        if c.loan.is_some() || !c.cuts.is_empty() || c.close_wanted {
            return false;
        }
        self.core.offload = false;
        true
    }
}

impl Role for ServerConn {
    fn core(&self) -> &Core {
        &self.core
    }
    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }
    fn established(&self) -> bool {
        self.is_established()
    }
    fn failed(&self) -> Option<&Error> {
        self.error()
    }
    fn padding(&self) -> usize {
        self.cfg.record_padding
    }
    fn on_record(&mut self, typ: u8, rec: &RawRecord, s: usize, e: usize) -> Result<(), Error> {
        ServerConn::on_record(self, typ, rec, s, e)
    }
    fn process_records(&mut self) -> Result<(), Error> {
        ServerConn::process_records(self)
    }
    fn check_fail(&mut self, e: Error) -> Result<(), Error> {
        ServerConn::check_fail(self, e)
    }
}

impl Role for ClientConn {
    fn core(&self) -> &Core {
        &self.core
    }
    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }
    fn established(&self) -> bool {
        self.is_established()
    }
    fn failed(&self) -> Option<&Error> {
        self.error()
    }
    fn padding(&self) -> usize {
        0
    }
    fn on_record(&mut self, typ: u8, rec: &RawRecord, s: usize, e: usize) -> Result<(), Error> {
        self.on_content(typ, rec.start + s, rec.start + e, true)
    }
    fn process_records(&mut self) -> Result<(), Error> {
        ClientConn::process_records(self)
    }
    fn check_fail(&mut self, e: Error) -> Result<(), Error> {
        self.fail(e.clone());
        Err(e)
    }
}
