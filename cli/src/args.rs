//! The command line, defined once with clap: parsing, help, errors, shell completions
//! (`appliancectl completions bash`) and man pages (`appliancectl man DIR`) all come
//! from these definitions. [`Cmd::words`] turns a parsed command back into the words the
//! dispatcher in `main` matches on.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Exit status, as the help shows it.
const EXIT: &str =
    "Exit status: 0 done; 1 the appliance could not be reached or refused; 2 usage error.

The control socket is --socket PATH, else $APPLIANCE_SOCKET, else the [control] socket
of --config FILE, else /run/appliance/control.sock.";

#[derive(Parser, Debug)]
#[command(
    name = "appliancectl",
    version,
    about = "Manage a running TLS offload appliance through its control socket",
    after_help = EXIT,
    propagate_version = true
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<String>,
    /// The daemon's configuration, to find its control socket.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<String>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Seconds between samples: 0.1 to 3600.
fn interval(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.1..=3600.0).contains(v))
        .ok_or_else(|| format!("{s:?}: give seconds in [0.1, 3600]"))
}

/// A backend address as configured.
fn address(s: &str) -> Result<String, String> {
    s.parse::<SocketAddrV4>()
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?}: ADDRESS must be ip:port as configured"))
}

#[derive(Args, Debug, Clone, Copy)]
pub struct Interval {
    /// Seconds between the two samples rates are computed from.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = interval)]
    pub interval: f64,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Version, pid, uptime, configuration, port and cores, vservers enabled, backends
    /// up, totals of connections and handshakes.
    Status,
    /// Tables of the daemon's state.
    Show {
        #[command(subcommand)]
        what: Show,
    },
    /// Same as `show stats`.
    Stats(Interval),
    /// Drop every TLS session on every node (a PURGE to the cluster and the repository;
    /// ticket keys are not changed).
    Flush {
        #[command(subcommand)]
        what: Flush,
    },
    /// Enable or disable a vserver: a disabled vserver resets new connections (RST); its
    /// open connections carry on.
    Vserver {
        action: Switch,
        /// The vserver's name.
        name: String,
    },
    /// Drain or enable a backend: a draining backend is chosen for no new connection;
    /// its open connections carry on. Without --vserver: in every vserver that has it.
    Backend {
        action: BackendSwitch,
        /// ip:port as configured.
        #[arg(value_parser = address)]
        address: String,
        /// Only in this vserver.
        #[arg(long, value_name = "NAME")]
        vserver: Option<String>,
    },
    /// Read the configuration file again and apply it at once (open connections carry
    /// on); a file with an error, or a change that needs a restart, is refused with
    /// that error and the running configuration stays (exit status 1).
    Reload,
    /// A live view: show stats and show backends, redrawn every SECS.
    Top {
        #[command(flatten)]
        interval: Interval,
        /// Redraw N times (default: until interrupted).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Exit status 0 if the daemon answers.
    Ping,
    /// Read a password on stdin and print USER:HASH (Argon2id, random salt) for a
    /// socks5 vserver's users_file; no daemon needed, the password is never printed.
    HashPassword {
        /// 1 to 255 bytes, no ':'.
        user: String,
    },
    /// Print shell completions for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (appliancectl.1 and one per command) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum Show {
    /// Samples the counters twice, SECS apart, and prints rates: handshakes/s by
    /// version, full and resumed, and by suite; connections; per-core busy %; crypto
    /// workers' queues and latency (--json: one raw sample).
    Stats(Interval),
    /// Name, listen address, mode, enabled, balancing, health check, backends up.
    Vservers,
    /// Per vserver and backend: state (up, down, draining), weight, connections,
    /// failures, health checks, passive take-downs.
    Backends,
    /// Per tls vserver and certificate: subject, SANs, key, expiry, days left.
    Certs,
    /// Each open client connection; each tls vserver's session cache and tickets.
    Sessions,
    /// TLS sessions held, lookups by tier (local, peer, repository), evictions.
    SessionStore,
    /// This node and the others: state, last heard, lag; replication counters.
    Cluster,
    /// socks5 vservers: requests by outcome, UDP associations open and made,
    /// datagrams and bytes each way, datagrams dropped by reason (replayed, forged,
    /// plain refused, ...), and each open association.
    Socks,
}

#[derive(Subcommand, Debug)]
pub enum Flush {
    /// Every TLS session on every node.
    SessionStore,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Switch {
    Enable,
    Disable,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum BackendSwitch {
    Drain,
    Enable,
}

impl Cmd {
    /// The command as words (what `main`'s dispatcher matches on).
    pub fn words(&self) -> Vec<String> {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        match self {
            Cmd::Status => w(&["status"]),
            Cmd::Show { what } => {
                let x = match what {
                    Show::Stats(_) => "stats",
                    Show::Vservers => "vservers",
                    Show::Backends => "backends",
                    Show::Certs => "certs",
                    Show::Sessions => "sessions",
                    Show::SessionStore => "session-store",
                    Show::Cluster => "cluster",
                    Show::Socks => "socks",
                };
                w(&["show", x])
            }
            Cmd::Stats(_) => w(&["stats"]),
            Cmd::Flush {
                what: Flush::SessionStore,
            } => w(&["flush", "session-store"]),
            Cmd::Vserver { action, name } => {
                let a = match action {
                    Switch::Enable => "enable",
                    Switch::Disable => "disable",
                };
                w(&["vserver", a, name])
            }
            Cmd::Backend {
                action, address, ..
            } => {
                let a = match action {
                    BackendSwitch::Drain => "drain",
                    BackendSwitch::Enable => "enable",
                };
                w(&["backend", a, address])
            }
            Cmd::Reload => w(&["reload"]),
            Cmd::Top { .. } => w(&["top"]),
            Cmd::Ping => w(&["ping"]),
            Cmd::HashPassword { user } => w(&["hash-password", user]),
            Cmd::Completions { .. } => w(&["completions"]),
            Cmd::Man { .. } => w(&["man"]),
        }
    }

    /// The options some commands take: the sampling interval, the redraw count, and
    /// `backend --vserver`.
    pub fn options(&self) -> (f64, Option<u64>, Option<String>) {
        match self {
            Cmd::Stats(i)
            | Cmd::Show {
                what: Show::Stats(i),
            } => (i.interval, None, None),
            Cmd::Top { interval, count } => (interval.interval, *count, None),
            Cmd::Backend { vserver, .. } => (1.0, None, vserver.clone()),
            _ => (1.0, None, None),
        }
    }
}

/// Shell completions on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "appliancectl", &mut std::io::stdout());
}

/// `appliancectl.1` and `appliancectl-COMMAND.1` into `dir`.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}
