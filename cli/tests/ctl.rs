//! `appliancectl` against a stand-in control socket: what it sends for each command,
//! what a person sees, what `--json` prints, and its exit status for refusals,
//! malformed replies, an absent daemon and usage errors. The stand-in answers with
//! the same `control-proto` types the daemon uses.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;

use control_proto::{BackendAction, Request};

/// A control socket that answers each connection's request with `answer(request)`
/// and reports the requests it got.
struct Daemon {
    path: PathBuf,
    seen: mpsc::Receiver<Request>,
}

impl Daemon {
    fn start(name: &str, answer: fn(&Request) -> String) -> Daemon {
        let dir = std::env::temp_dir().join(format!("ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, seen) = mpsc::channel();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let req = Request::parse(&line).expect("appliancectl sends valid requests");
                let _ = writeln!(conn, "{}", answer(&req));
                let _ = tx.send(req);
            }
        });
        Daemon { path, seen }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_appliancectl"))
            .arg("--socket")
            .arg(&self.path)
            .args(args)
            .env_remove("APPLIANCE_SOCKET")
            .output()
            .unwrap()
    }
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

const STATUS: &str = r#"{"version":"0.1.0","pid":42,"uptime_secs":12.5,"config":"/etc/appliance/appliance.toml","config_generation":3,"config_applied_secs_ago":2.0,"port":"net_af_packet0","cores":2,"crypto":"inline","vservers":2,"vservers_enabled":1,"backends":3,"backends_up":2,"backends_down":1,"backends_draining":0,"proxied_connections":7,"accepted":1000,"clients_open":5,"tls_handshakes":900,"tls_resumed":300}"#;

const STORE: &str = r#"{"node":"b","key_fingerprint":"0a1b","local":{"entries":12,"capacity":20000,"bytes":4096,"tombstones":1,"evictions":0,"expired":0},"lookups":{"hits_local":5,"hits_peer":3,"hits_repository":2,"misses":1,"timeouts":1},"cluster":{"node":"b","state":"ready","multicast":false,"members":[{"name":"a","id":1,"addr":"10.80.0.1:7946","up":true,"state":"ready","incarnation":7,"last_heard_ago_ms":150,"lag":0,"behind":0},{"name":"c","id":3,"addr":"10.80.0.3:7946","up":false,"state":"syncing","incarnation":9,"last_heard_ago_ms":null,"lag":4,"behind":2}],"last_seq":40,"queue_depth":0,"retransmit_buffer":3,"unacked_adds":1,"replication_lag":4,"self_receipt_rtt_ms":null,"counters":{"sent":100,"received":90,"nacks_sent":2,"forged":1,"replayed":3},"channel_full":0,"send_errors":0},"repository":null}"#;

fn answer(req: &Request) -> String {
    match req {
        Request::Status => STATUS.into(),
        Request::Backend { vserver, .. } if vserver.as_deref() == Some("nope") => {
            r#"{"error":"no vserver named \"nope\"; there are: web"}"#.into()
        }
        Request::Backend { address, .. } => {
            format!(r#"{{"ok":true,"backend":"{address}","draining":true,"vservers":["web"]}}"#)
        }
        Request::Vservers => r#"{"unexpected":true}"#.into(),
        Request::SessionStore => STORE.into(),
        _ => r#"{"ok":true}"#.into(),
    }
}

#[test]
fn status_is_a_summary_for_people_and_the_daemons_json_for_scripts() {
    let d = Daemon::start("status", answer);
    let o = d.ctl(&["status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("appliance 0.1.0 (pid 42)"), "{out}");
    assert!(
        out.contains("vservers: 1 of 2 enabled; backends: 2 up, 1 down, 0 draining of 3"),
        "{out}"
    );
    assert!(out.contains("TLS handshakes: 900 (300 resumed)"), "{out}");
    assert_eq!(d.seen.recv().unwrap(), Request::Status);
    let o = d.ctl(&["--json", "status"]);
    assert!(o.status.success());
    assert_eq!(text(&o.stdout).trim_end(), STATUS);
}

#[test]
fn a_backend_switch_sends_its_vserver_and_a_refusal_exits_1_with_the_daemons_words() {
    let d = Daemon::start("backend", answer);
    let o = d.ctl(&["backend", "drain", "10.0.0.2:80", "--vserver", "web"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).trim_end(),
        "backend 10.0.0.2:80: draining (no new connections) in vserver(s) web"
    );
    assert_eq!(
        d.seen.recv().unwrap(),
        Request::Backend {
            action: BackendAction::Drain,
            address: "10.0.0.2:80".into(),
            vserver: Some("web".into()),
        }
    );
    let o = d.ctl(&["backend", "enable", "10.0.0.2:80", "--vserver", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("the appliance refused: no vserver named \"nope\""),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_reply_of_the_wrong_shape_is_an_error_not_an_empty_table() {
    let d = Daemon::start("shape", answer);
    let o = d.ctl(&["show", "vservers"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unexpected reply"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn no_daemon_exits_1_and_usage_errors_exit_2_without_asking() {
    let dir = std::env::temp_dir().join(format!("ctl-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_appliancectl"))
        .arg("--socket")
        .arg(dir.join("absent.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot reach the appliance"),
        "{}",
        text(&o.stderr)
    );
    let d = Daemon::start("usage", answer);
    for args in [
        &["backend", "drain", "not-an-address"][..],
        &["frobnicate"],
        &["show", "everything"],
        &["status", "--interval", "0"],
    ] {
        let o = d.ctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
    assert!(d.seen.try_recv().is_err(), "a usage error sent a request");
}

#[test]
fn the_session_store_shows_as_tiers_and_as_a_cluster() {
    let d = Daemon::start("store", answer);
    let o = d.ctl(&["show", "session-store"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("node b: 12 TLS session(s) of 20000"), "{out}");
    assert!(
        out.contains(
            "lookups: 5 hit here, 3 from a peer, 2 from the repository, 1 missed, 1 timed out"
        ),
        "{out}"
    );
    assert!(
        out.contains("cluster: ready (unicast), 1 of 2 other node(s) up"),
        "{out}"
    );
    assert_eq!(d.seen.recv().unwrap(), Request::SessionStore);
    let o = d.ctl(&["show", "cluster"]);
    let out = text(&o.stdout);
    assert!(o.status.success());
    assert!(out.contains("node b (ready, unicast), key 0a1b"), "{out}");
    let c_line = out
        .lines()
        .find(|l| l.starts_with("c "))
        .unwrap_or_default();
    assert!(c_line.contains("DOWN") && c_line.contains("never"), "{out}");
    assert!(out.contains("dropped: 1 forged, 3 replayed"), "{out}");
}
