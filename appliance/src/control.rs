//! The control socket: a Unix stream socket, mode 0600, that answers one command per
//! connection with one JSON document. Only the daemon's own user (or root) is served:
//! the peer's credentials (`SO_PEERCRED`) are checked on every connection, so a
//! permissive umask or a copied socket path does not open it to anyone else.
//!
//! Commands (one line): `ping` → `{"ok":true}`; `stats` → every counter (see
//! [`crate::runtime::Snapshot`]). Unknown commands get `{"error": "..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Answers a command; runs on the control thread.
pub type Handler = Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>;

/// The listening control socket; the socket file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
}

/// Uid of the process at the other end of `s`.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file) and serves on a thread.
    pub fn start(path: &Path, handler: Handler) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            // A live daemon answers; a dead one's file is stale and removed.
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another running appliance", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        std::thread::Builder::new().name("control".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let uid = peer_uid(&conn);
                if uid != Some(me) && uid != Some(0) {
                    log::warn!("control socket: refused a connection from uid {uid:?}");
                    let _ = writeln!(conn, "{}", serde_json::json!({"error": "permission denied: the control socket admits only its owner"}));
                    continue;
                }
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let reply = handler(line.trim());
                let _ = writeln!(conn, "{reply}");
            }
        })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one command to a control socket and returns the JSON reply.
pub fn request(path: &Path, command: &str) -> std::io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    writeln!(s, "{command}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
