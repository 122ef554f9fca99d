//! The access log: one line per finished client connection, written by a thread of
//! its own so the poll-mode cores never touch a file.
//!
//! A core hands each finished connection's [`AccessRecord`] to a bounded channel
//! without waiting; when the channel is full the record is dropped and counted
//! (`access_log_dropped`), never queued without bound. The writer appends to the
//! file (opened with `O_APPEND`, so `logrotate`'s `copytruncate` works) and flushes
//! whenever the channel runs dry, so a line is on disk within milliseconds of its
//! connection's end.
//!
//! ## Format (`[log] format = "text"`, the default)
//! One line of `key=value` fields after the UTC time; a field with nothing to say
//! is `-`, and a value with spaces or quotes is written in double quotes:
//!
//! ```text
//! 2026-11-21T11:37:18.034Z client=10.77.0.100:40312 vserver=secure listen=10.77.0.1:443 tls=TLSv1.3 suite=TLS_AES_128_GCM_SHA256 sni=appliance.test alpn=http/1.1 resumed=no handshake_ms=1.84 backend=10.77.0.2:8080 bytes_in=87 bytes_out=16777598 duration_ms=4012.55 close=done
//! ```
//!
//! - `client`: the client's address and port; `vserver`, `listen`: which vserver.
//! - `tls`, `suite`, `sni`, `alpn`: the handshake (all `-` for a `tcp` vserver, or a
//!   TLS connection that ended before its handshake did).
//! - `resumed`: `no`, or how: `session_id`, `ticket` (TLS 1.2), `psk` (TLS 1.3).
//! - `handshake_ms`: from the accepted TCP connection to the completed handshake.
//! - `backend`: the backend chosen, `-` if none was.
//! - `bytes_in`, `bytes_out`: plaintext from the client to the backend, and from the
//!   backend to the client.
//! - `duration_ms`: from accept to the end.
//! - `socks`, `user` (`socks5` vservers only): the request (`connect` or
//!   `udp_associate`; for an association `backend` is its relay address and the
//!   bytes are datagram payload) and the authenticated user or certificate subject.
//! - `backend_tls`, `backend_resumed` (vservers with `[vserver.backend_tls]` only):
//!   the backend connection's TLS version and suite (`TLSv1.3/TLS_AES_128_GCM_SHA256`)
//!   and whether it resumed a session (`yes`/`no`); `-` when its handshake did not
//!   complete.
//! - `close`: why it ended: `done` (both sides closed in order), `client_reset`,
//!   `backend_failed` (refused or no answer), `backend_reset`, `backend_tls_failed`
//!   (the backend's TLS handshake or records failed; `error` says why), `tls_error` (then
//!   `error="..."` says which), `no_backend` (FIN), `no_backend_503`, `disabled`
//!   (vserver disabled: RST), `no_slot` (no connection for the backend side),
//!   `client_closed` (before its ClientHello), `shutdown` (reset at the drain
//!   deadline).
//!
//! With `[log] format = "json"` each line is one JSON object with the same keys (and
//! `ts`), absent values as `null`, numbers as numbers.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::config::LogFormat;

/// Records the channel holds before cores drop them.
pub const QUEUE: usize = 65_536;

/// One finished client connection.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord {
    /// Wall-clock end, milliseconds since the Unix epoch.
    pub end_unix_ms: u64,
    pub client: Option<SocketAddrV4>,
    pub vserver: Option<std::sync::Arc<str>>,
    pub listen: Option<SocketAddrV4>,
    pub tls: Option<TlsFields>,
    pub handshake_us: Option<u64>,
    pub backend: Option<SocketAddrV4>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    pub close: &'static str,
    pub error: Option<String>,
    /// `socks5` vservers: the request served (`connect`, `udp_associate`) and who
    /// made it (the RFC 1929 user or the client certificate's subject).
    pub socks: Option<&'static str>,
    pub user: Option<String>,
    /// `[vserver.backend_tls]`: the backend leg's version/suite and whether it
    /// resumed; `None` until (or unless) its handshake completed.
    pub backend_tls: Option<BackendTlsFields>,
    /// The vserver speaks TLS to its backends (the fields are written, `-` if empty).
    pub backend_tls_on: bool,
}

/// What the backend leg's TLS handshake agreed.
#[derive(Debug, Clone, Copy)]
pub struct BackendTlsFields {
    pub version: &'static str,
    pub suite: &'static str,
    pub resumed: bool,
}

/// What the handshake agreed.
#[derive(Debug, Clone, Default)]
pub struct TlsFields {
    pub version: &'static str,
    pub suite: &'static str,
    pub sni: Option<String>,
    pub alpn: Option<String>,
    /// "no", "session_id", "ticket", "psk".
    pub resumed: &'static str,
}

/// A core's end of the access log.
#[derive(Clone)]
pub struct AccessSender {
    tx: Sender<AccessRecord>,
}

impl AccessSender {
    /// Queues `r` without waiting; `false` if the queue is full (dropped).
    pub fn send(&self, r: AccessRecord) -> bool {
        match self.tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The writer thread; it ends once every [`AccessSender`] is gone and the queue is
/// written out.
pub struct AccessLog {
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set to make the writer close the file and open the path again (SIGUSR1, after
    /// logrotate moved it).
    reopen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AccessLog {
    /// Opens `path` for appending (creating it, mode 0640) and starts the writer.
    pub fn start(path: &Path, format: LogFormat) -> std::io::Result<(AccessLog, AccessSender)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open(path)?;
        let (tx, rx) = bounded(QUEUE);
        let reopen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, flag) = (path.to_path_buf(), reopen.clone());
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, file, format, &path, &flag))?;
        Ok((
            AccessLog {
                thread: Some(thread),
                reopen,
            },
            AccessSender { tx },
        ))
    }

    /// Makes the writer close the file and open its path again (within 200 ms): what
    /// logrotate's `postrotate` asks with SIGUSR1. Lines queued meanwhile are kept.
    pub fn reopen(&self) {
        self.reopen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for the writer to finish (call after the cores, which hold the
    /// senders, have stopped).
    pub fn finish(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log file at `path`, opened for appending (created mode 0640).
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn write_loop(
    rx: Receiver<AccessRecord>,
    file: std::fs::File,
    format: LogFormat,
    path: &Path,
    reopen: &std::sync::atomic::AtomicBool,
) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
    let mut line = String::with_capacity(512);
    let mut failed = false;
    loop {
        if reopen.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let _ = out.flush();
            match open(path) {
                Ok(f) => {
                    out = std::io::BufWriter::with_capacity(64 << 10, f);
                    failed = false;
                    log::info!("access log: reopened {}", path.display());
                }
                Err(e) => log::error!(
                    "access log: cannot reopen {}: {e}; writing on to the old file",
                    path.display()
                ),
            }
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => {
                line.clear();
                format_record(&r, format, &mut line);
                line.push('\n');
                if let Err(e) = out.write_all(line.as_bytes()) {
                    if !failed {
                        log::error!("access log: cannot write: {e}");
                        failed = true;
                    }
                }
                if !rx.is_empty() {
                    continue;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        if let Err(e) = out.flush() {
            if !failed {
                log::error!("access log: cannot write: {e}");
                failed = true;
            }
        }
    }
}

/// UTC time `2026-11-21T11:37:18.034Z` of `ms` since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Appends `r` as one line (no newline) in `format`.
pub fn format_record(r: &AccessRecord, format: LogFormat, out: &mut String) {
    use std::fmt::Write as _;
    let t = r.tls.as_ref();
    let ms = |us: u64| us as f64 / 1000.0;
    let fields: [(&str, Option<String>); 19] = [
        ("client", r.client.map(|a| a.to_string())),
        ("vserver", r.vserver.as_ref().map(|v| v.to_string())),
        ("listen", r.listen.map(|a| a.to_string())),
        ("tls", t.map(|t| t.version.to_string())),
        ("suite", t.map(|t| t.suite.to_string())),
        ("sni", t.and_then(|t| t.sni.clone())),
        ("alpn", t.and_then(|t| t.alpn.clone())),
        ("resumed", t.map(|t| t.resumed.to_string())),
        (
            "handshake_ms",
            r.handshake_us.map(|u| format!("{:.2}", ms(u))),
        ),
        ("backend", r.backend.map(|a| a.to_string())),
        ("bytes_in", Some(r.bytes_in.to_string())),
        ("bytes_out", Some(r.bytes_out.to_string())),
        ("duration_ms", Some(format!("{:.2}", ms(r.duration_us)))),
        ("close", Some(r.close.to_string())),
        ("error", r.error.clone()),
        ("socks", r.socks.map(str::to_string)),
        ("user", r.user.clone()),
        (
            "backend_tls",
            r.backend_tls.map(|b| format!("{}/{}", b.version, b.suite)),
        ),
        (
            "backend_resumed",
            r.backend_tls
                .map(|b| if b.resumed { "yes" } else { "no" }.to_string()),
        ),
    ];
    const NUMBERS: [&str; 4] = ["handshake_ms", "bytes_in", "bytes_out", "duration_ms"];
    match format {
        LogFormat::Text => {
            out.push_str(&utc(r.end_unix_ms));
            for (k, v) in fields {
                // Fields only some connections have are left out when empty.
                if matches!(k, "error" | "socks" | "user") && v.is_none() {
                    continue;
                }
                if k.starts_with("backend_") && !r.backend_tls_on {
                    continue;
                }
                let _ = write!(out, " {k}=");
                match v {
                    None => out.push('-'),
                    Some(v) if v.is_empty() || v.contains([' ', '"', '=', '\\']) => {
                        out.push('"');
                        for c in v.chars() {
                            if c == '"' || c == '\\' {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    }
                    Some(v) => out.push_str(&v),
                }
            }
        }
        LogFormat::Json => {
            let mut o = serde_json::Map::new();
            o.insert("ts".into(), utc(r.end_unix_ms).into());
            for (k, v) in fields {
                let val = match v {
                    None => serde_json::Value::Null,
                    Some(v) if NUMBERS.contains(&k) => v
                        .parse::<f64>()
                        .map(serde_json::Value::from)
                        .unwrap_or(serde_json::Value::String(v)),
                    Some(v) => serde_json::Value::String(v),
                };
                o.insert(k.into(), val);
            }
            let _ = write!(out, "{}", serde_json::Value::Object(o));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(utc(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18T11:06:40.000Z"); // date -u -d @1795000000
    }

    fn record() -> AccessRecord {
        AccessRecord {
            end_unix_ms: 951_827_696_789,
            client: Some("10.0.0.9:40000".parse().unwrap()),
            vserver: Some("secure".into()),
            listen: Some("10.0.0.1:443".parse().unwrap()),
            tls: Some(TlsFields {
                version: "TLSv1.3",
                suite: "TLS_AES_128_GCM_SHA256",
                sni: Some("a.test".into()),
                alpn: None,
                resumed: "psk",
            }),
            handshake_us: Some(1840),
            backend: None,
            bytes_in: 87,
            bytes_out: 1000,
            duration_us: 4_012_550,
            close: "tls_error",
            error: Some("peer sent alert \"bad_certificate\"".into()),
            socks: None,
            user: None,
            backend_tls: None,
            backend_tls_on: false,
        }
    }

    #[test]
    fn backend_tls_fields_only_for_vservers_that_re_encrypt() {
        let mut r = record();
        let mut s = String::new();
        format_record(&r, LogFormat::Text, &mut s);
        assert!(!s.contains("backend_tls"), "{s}");
        r.backend_tls_on = true;
        s.clear();
        format_record(&r, LogFormat::Text, &mut s);
        assert!(s.ends_with("backend_tls=- backend_resumed=-"), "{s}");
        r.backend_tls = Some(BackendTlsFields {
            version: "TLSv1.3",
            suite: "TLS_AES_128_GCM_SHA256",
            resumed: true,
        });
        s.clear();
        format_record(&r, LogFormat::Text, &mut s);
        assert!(
            s.ends_with("backend_tls=TLSv1.3/TLS_AES_128_GCM_SHA256 backend_resumed=yes"),
            "{s}"
        );
        s.clear();
        format_record(&r, LogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["backend_resumed"], "yes");
    }

    #[test]
    fn text_line_has_every_field_and_quotes_what_needs_it() {
        let mut s = String::new();
        format_record(&record(), LogFormat::Text, &mut s);
        assert_eq!(
            s,
            "2000-02-29T12:34:56.789Z client=10.0.0.9:40000 vserver=secure listen=10.0.0.1:443 \
             tls=TLSv1.3 suite=TLS_AES_128_GCM_SHA256 sni=a.test alpn=- resumed=psk \
             handshake_ms=1.84 backend=- bytes_in=87 bytes_out=1000 duration_ms=4012.55 \
             close=tls_error error=\"peer sent alert \\\"bad_certificate\\\"\""
        );
    }

    #[test]
    fn json_line_parses_with_numbers_and_nulls() {
        let mut s = String::new();
        format_record(&record(), LogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["ts"], "2000-02-29T12:34:56.789Z");
        assert_eq!(v["bytes_out"], 1000.0);
        assert_eq!(v["handshake_ms"], 1.84);
        assert_eq!(v["backend"], serde_json::Value::Null);
        assert_eq!(v["error"], "peer sent alert \"bad_certificate\"");
        assert_eq!(v["socks"], serde_json::Value::Null);
    }

    #[test]
    fn socks_lines_name_the_request_and_the_user() {
        let mut r = record();
        r.tls = None;
        r.error = None;
        r.close = "client_closed";
        r.socks = Some("udp_associate");
        r.user = Some("CN=alice smith".into());
        let mut s = String::new();
        format_record(&r, LogFormat::Text, &mut s);
        assert!(
            s.ends_with("close=client_closed socks=udp_associate user=\"CN=alice smith\""),
            "{s}"
        );
    }
}
