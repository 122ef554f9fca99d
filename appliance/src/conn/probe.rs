//! A health check's connection as a handler: it connects to the backend, runs the
//! check ([`crate::health::Probe::step`]) as the socket moves, and reports the verdict
//! to the core's probe list. Its deadline is the check's timeout.

use driver::{Cx, Next, Wake};
use netstack::ConnId;

use super::abort;
use crate::backends::CheckResult;
use crate::core::CoreApp;
use crate::health::Step;

/// One check in flight.
pub struct ProbeConn {
    /// The probe's index in the core's list, and the list's epoch when it started (a
    /// reload or drain replaces the list; checks of an older one are abandoned).
    pub k: usize,
    pub epoch: u64,
    pub conn: ConnId,
    pub deadline_us: u64,
}

impl ProbeConn {
    pub fn deadline_us(&self) -> u64 {
        self.deadline_us
    }

    pub fn step(&mut self, cx: &mut Cx<'_>, app: &mut CoreApp, wake: Wake) -> Next {
        if !app.probe_current(self.k, self.epoch, self.conn) {
            self.cut(cx);
            return Next::Done;
        }
        if wake.timer && cx.now_us >= self.deadline_us {
            self.cut(cx);
            app.probe_done(self.k, CheckResult::Timeout, cx.now_ms());
            return Next::Done;
        }
        let now_ms = cx.now_ms();
        let Some(s) = cx.stack.socket(self.conn) else {
            app.probe_done(self.k, CheckResult::Closed, cx.now_ms());
            return Next::Done;
        };
        match app.probe_step(self.k, s, now_ms) {
            Step::Wait => Next::Wait,
            Step::Done(r) => {
                cx.stack.release(self.conn);
                app.probe_done(self.k, r, cx.now_ms());
                Next::Done
            }
        }
    }

    /// Abandons the check: its connection is reset and released.
    pub fn cut(&mut self, cx: &mut Cx<'_>) {
        abort(cx, self.conn);
        cx.stack.release(self.conn);
    }
}
