//! Test support: Debian's `redis-server` started on 127.0.0.1 with no persistence and
//! killed by PID at the end. A missing `redis-server` fails the test (tools/setup.sh
//! installs it).
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// A server on `port`, or on a free one. `redis-server --port 0` means "no TCP", so
    /// a free port is picked here and released first; another test may take it in
    /// between, and then this server exits (or another program answers there): the
    /// server counts as up only once it answers PING itself, and a start that lost its
    /// port is tried again on another.
    pub fn start(port: Option<u16>) -> RedisServer {
        for _ in 0..5 {
            let p = port.unwrap_or_else(|| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let mut child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server not found: install Debian's redis-server (tools/setup.sh)");
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // it could not take the port
                }
                if answers_ping(p) {
                    return RedisServer { child, port: p };
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "redis-server did not listen on {p}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(port.is_none(), "redis-server could not take port {p}");
        }
        panic!("redis-server could not take a free port in five tries");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the PID of the child this test started.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0);
    }

    pub fn cli(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli not found (Debian's redis-tools)");
        assert!(out.status.success());
        out.stdout
    }
}

/// A Redis server answers PING on `port`.
fn answers_ping(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGCONT first in case a test stopped it; then SIGKILL by PID.
        // SAFETY: kill(2) on the PID of the child this test started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
