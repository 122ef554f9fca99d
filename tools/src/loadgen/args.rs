//! `loadgen`'s command line: every flag, its default, and the checks that name the
//! flag at fault.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::net::DpdkArgs;

/// The command line as clap reads it: each flag with its help, its default and its
/// own check; [`parse`] then checks what flags say together.
#[derive(clap::Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    // A flag given twice: the last one counts (scripts add to a base command line).
    args_override_self = true,
    about = "TLS load against any server: handshakes, resumptions, requests or bulk transfer per second",
    after_help = "Modes (--mode): full = connect, full handshake, close_notify, close (default); resume = the same, \
resuming one session per thread (see --resume); request = connect, handshake, one GET (Connection: close), read \
the whole response, close; bulk = keep-alive GETs on long-lived connections, one request per operation.\n\n\
Exit status: 0 when at least one operation succeeded (errors are in the report), 1 when none did, 2 for a bad command line."
)]
struct Raw {
    /// The server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// What one operation is: full, resume, request or bulk.
    #[arg(long, value_name = "MODE", default_value = "full", value_parser = mode)]
    mode: Mode,

    /// Connections in flight at most, over all threads (1..=65536).
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Load")]
    concurrency: usize,
    /// Event-loop threads, each with its share of the connections (1..=256).
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Load")]
    threads: usize,
    /// Pin thread i to the i-th CPU of LIST, e.g. 0 or 0,1 (default: not pinned).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Load"
    )]
    cpus: Vec<usize>,
    /// Open loop: R operations per second arrive on a fixed schedule and latency counts
    /// from when each was due (no coordinated omission); without it the loop is closed.
    #[arg(long, value_name = "R", value_parser = rate, allow_negative_numbers = true, help_heading = "Load")]
    rate: Option<f64>,
    /// Stop starting operations after T, e.g. 10s, 500ms (at most 600s).
    #[arg(long, value_name = "T", default_value = "10s", value_parser = |v: &str| parse_duration("--duration", v), help_heading = "Load")]
    duration: Duration,
    /// Stop after N operations have started (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Load")]
    count: Option<u64>,
    /// An operation not done in T fails as `timeout`.
    #[arg(long, value_name = "T", default_value = "5s", value_parser = |v: &str| parse_duration("--timeout", v), help_heading = "Load")]
    timeout: Duration,

    /// Run the connections on the appliance's own data path: DPDK (net_af_packet on
    /// IFACE) and its smoltcp stack, busy-polled by one thread (--threads 1).
    #[arg(
        long,
        value_name = "IFACE",
        help_heading = "Network (default: the kernel's TCP)"
    )]
    dpdk: Option<String>,
    /// The address loadgen's stack takes on IFACE, e.g. 10.77.0.50/24 (one the kernel
    /// does not have; the target must be in its subnet).
    #[arg(
        long,
        value_name = "A/P",
        help_heading = "Network (default: the kernel's TCP)"
    )]
    dpdk_addr: Option<String>,

    /// The TLS client: libssl (OpenSSL 3, the reference) or own (the appliance engine's
    /// TLS 1.3 client role: cheaper per handshake).
    #[arg(long, value_name = "E", default_value = "libssl", value_parser = engine, help_heading = "TLS")]
    engine: EngineKind,
    /// The only version offered: 1.2 or 1.3 (default: both; --engine own: 1.3).
    #[arg(long = "tls", value_name = "V", value_parser = version, help_heading = "TLS")]
    tls: Option<Version>,
    /// id (TLS 1.2 session ID), ticket (TLS 1.2 ticket) or psk (TLS 1.3); default psk
    /// with --tls 1.3, ticket with --tls 1.2.
    #[arg(long, value_name = "KIND", value_parser = resume_kind, help_heading = "TLS")]
    resume: Option<Resume>,
    /// TLS 1.2 cipher list (OpenSSL syntax).
    #[arg(long, value_name = "LIST", help_heading = "TLS")]
    ciphers: Option<String>,
    /// TLS 1.3 suites, e.g. TLS_AES_128_GCM_SHA256.
    #[arg(long, value_name = "L", help_heading = "TLS")]
    ciphersuites: Option<String>,
    /// Key-exchange groups, e.g. X25519 or P-256:X25519 (the own engine also
    /// X25519MLKEM768, the post-quantum hybrid).
    #[arg(long, value_name = "LIST", help_heading = "TLS")]
    groups: Option<String>,
    /// Signature algorithms offered, e.g. ECDSA+SHA256 or rsa_pss_rsae_sha256.
    #[arg(long, value_name = "LIST", help_heading = "TLS")]
    sigalgs: Option<String>,
    /// Server name sent; default: HOST when it is a name, none for an address.
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    sni: Option<String>,
    /// Protocols offered, comma-separated, e.g. http/1.1.
    #[arg(long, value_name = "LIST", value_parser = alpn, help_heading = "TLS")]
    alpn: Option<Vec<String>>,
    /// Verify the server against this CA bundle (PEM).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (--engine own then skips the
    /// CertificateVerify signature check too; the server's Finished is always checked).
    #[arg(long, help_heading = "TLS")]
    no_verify: bool,
    /// --engine own: one key share per thread for every connection (no key generation
    /// per handshake; the (EC)DHE with the server's fresh share still runs).
    #[arg(
        long,
        help_heading = "Cheapenings (--engine own only; the server's work is unchanged)"
    )]
    reuse_key_share: bool,
    /// --engine own, resume mode: every connection offers the thread's first ticket and
    /// closes without waiting for a new one.
    #[arg(
        long,
        help_heading = "Cheapenings (--engine own only; the server's work is unchanged)"
    )]
    reuse_ticket: bool,

    /// Request target.
    #[arg(long, value_name = "P", default_value = "/", value_parser = http_path, help_heading = "HTTP (request and bulk modes)")]
    path: String,
    /// Host header (default: --sni, else HOST).
    #[arg(long, value_name = "H", help_heading = "HTTP (request and bulk modes)")]
    host: Option<String>,
    /// Bulk: reconnect after N requests (default: never).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "HTTP (request and bulk modes)")]
    requests_per_conn: Option<u64>,

    /// The final report as one JSON object on stdout.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, help_heading = "Output")]
    quiet: bool,
    /// Also write the latency distribution as an SVG percentile plot.
    #[arg(long, value_name = "FILE.svg", value_parser = plot_path, help_heading = "Output")]
    plot: Option<PathBuf>,
    /// Print shell completions for SHELL and exit.
    #[arg(long, value_name = "SHELL", value_enum, help_heading = "Output")]
    completions: Option<clap_complete::Shell>,
    /// Write the man page (loadgen.1) into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

/// `--completions` and `--man`: what they print or write, as help text is printed.
fn generated(
    shell: Option<clap_complete::Shell>,
    man: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    use clap::CommandFactory;
    if let Some(sh) = shell {
        let mut out = Vec::new();
        clap_complete::generate(sh, &mut Raw::command(), "loadgen", &mut out);
        return Ok(Some(String::from_utf8_lossy(&out).into_owned()));
    }
    if let Some(dir) = man {
        let mut page = Vec::new();
        clap_mangen::Man::new(Raw::command())
            .render(&mut page)
            .and_then(|()| std::fs::create_dir_all(dir))
            .and_then(|()| std::fs::write(dir.join("loadgen.1"), page))
            .map_err(|e| format!("--man {}: {e}", dir.display()))?;
        return Ok(Some(String::new()));
    }
    Ok(None)
}

fn mode(v: &str) -> Result<Mode, String> {
    Ok(match v {
        "full" => Mode::Full,
        "resume" | "resumed" => Mode::Resume,
        "request" => Mode::Request,
        "bulk" => Mode::Bulk,
        _ => {
            return Err(format!(
                "--mode: {v:?} is not one of full, resume, request, bulk"
            ))
        }
    })
}

fn resume_kind(v: &str) -> Result<Resume, String> {
    Ok(match v {
        "id" | "session-id" => Resume::SessionId,
        "ticket" => Resume::Ticket,
        "psk" => Resume::Psk,
        _ => return Err(format!("--resume: {v:?} is not one of id, ticket, psk")),
    })
}

fn version(v: &str) -> Result<Version, String> {
    match v {
        "1.2" => Ok(Version::Tls12),
        "1.3" => Ok(Version::Tls13),
        _ => Err(format!("--tls: {v:?} is not 1.2 or 1.3")),
    }
}

fn engine(v: &str) -> Result<EngineKind, String> {
    match v {
        "libssl" => Ok(EngineKind::Libssl),
        "own" => Ok(EngineKind::Own),
        _ => Err(format!("--engine: {v:?} is not libssl or own")),
    }
}

fn alpn(v: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = v.split(',').map(str::to_string).collect();
    if list.iter().any(|p| p.is_empty() || p.len() > 255) {
        return Err(format!(
            "--alpn: {v:?} must be comma-separated names of 1 to 255 bytes"
        ));
    }
    Ok(list)
}

fn http_path(v: &str) -> Result<String, String> {
    if !v.starts_with('/') || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "--path: {v:?} must start with / and contain no spaces or controls"
        ));
    }
    Ok(v.to_string())
}

fn rate(v: &str) -> Result<f64, String> {
    v.parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 10_000_000.0)
        .ok_or(format!(
            "--rate: {v:?} is not a rate between 0 and 10000000 per second"
        ))
}

fn plot_path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!("--plot: {} is not a directory", dir.display()));
    }
    Ok(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Resume,
    Request,
    Bulk,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Resume => "resume",
            Mode::Request => "request",
            Mode::Bulk => "bulk",
        }
    }

    /// Operations send an HTTP request.
    pub fn http(self) -> bool {
        matches!(self, Mode::Request | Mode::Bulk)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    SessionId,
    Ticket,
    Psk,
}

impl Resume {
    pub fn name(self) -> &'static str {
        match self {
            Resume::SessionId => "id",
            Resume::Ticket => "ticket",
            Resume::Psk => "psk",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Any,
    Tls12,
    Tls13,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::Any => "1.2-1.3",
            Version::Tls12 => "1.2",
            Version::Tls13 => "1.3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Libssl,
    Own,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Libssl => "libssl",
            EngineKind::Own => "own",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub engine: EngineKind,
    pub reuse_key_share: bool,
    pub reuse_ticket: bool,
    /// As given, for reports.
    pub target_text: String,
    pub target: SocketAddr,
    pub mode: Mode,
    pub resume: Option<Resume>,
    pub version: Version,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    pub groups: Option<String>,
    pub sigalgs: Option<String>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub ca: Option<PathBuf>,
    pub verify: bool,
    pub path: String,
    pub host: String,
    pub requests_per_conn: Option<u64>,
    pub concurrency: usize,
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub count: Option<u64>,
    pub timeout: Duration,
    pub json: bool,
    pub quiet: bool,
    /// `--plot`: where the latency plot goes.
    pub plot: Option<PathBuf>,
    /// `--dpdk`: connections on our own stack over a DPDK port.
    pub dpdk: Option<DpdkArgs>,
}

impl Args {
    /// What the client skips that a real one would do, as the report names it.
    pub fn cheapenings(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if !self.verify {
            c.push("no-verify");
        }
        if self.reuse_key_share {
            c.push("reuse-key-share");
        }
        if self.reuse_ticket {
            c.push("reuse-ticket");
        }
        c
    }
}

/// What parsing found: arguments to run with, or the help (or version) text to print.
pub enum Parsed {
    Run(Box<Args>),
    Help(String),
}

/// `10s`, `500ms`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(flag: &str, v: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        (v, 1.0)
    };
    let secs = num
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or(format!("{flag}: {v:?} is not a duration (e.g. 10s, 500ms)"))?
        * scale;
    if !(0.001..=600.0).contains(&secs) {
        return Err(format!("{flag}: {v:?} must be between 1ms and 600s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits `HOST:PORT` (`[v6]:PORT` too) and resolves it to the first address.
fn resolve(v: &str) -> Result<(SocketAddr, Option<String>), String> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok((a, None));
    }
    let (host, port) = v
        .rsplit_once(':')
        .ok_or(format!("--target: {v:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--target: {port:?} in {v:?} is not a port number"))?;
    if host.is_empty() {
        return Err(format!("--target: {v:?} has no host"));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("--target: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or(format!("--target: {host:?} has no address"))?;
    Ok((addr, Some(host.to_string())))
}

pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Parsed, String> {
    use clap::Parser;
    let raw = match Raw::try_parse_from(std::iter::once("loadgen".to_string()).chain(argv)) {
        Ok(r) => r,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Ok(Parsed::Help(e.to_string()))
                }
                _ => Err(e.to_string()),
            }
        }
    };
    let Raw {
        target,
        mode,
        concurrency,
        threads,
        cpus,
        rate,
        duration,
        count,
        timeout,
        dpdk: dpdk_iface,
        dpdk_addr,
        engine,
        tls,
        resume,
        ciphers,
        ciphersuites,
        groups,
        sigalgs,
        sni,
        alpn,
        ca,
        no_verify,
        reuse_key_share,
        reuse_ticket,
        path,
        host,
        requests_per_conn,
        json,
        quiet,
        plot,
        completions,
        man,
    } = raw;
    if let Some(text) = generated(completions, man.as_deref())? {
        return Ok(Parsed::Help(text));
    }
    let mut version = tls.unwrap_or(Version::Any);
    let mut resume = resume;
    let alpn = alpn.unwrap_or_default();
    let verify = !no_verify;

    let target_text = target.ok_or("--target HOST:PORT is required")?;
    let (addr, host_name) = resolve(&target_text)?;
    if !(1..=65536).contains(&concurrency) {
        return Err(format!("--concurrency: {concurrency} must be 1..=65536"));
    }
    if !(1..=256).contains(&threads) {
        return Err(format!("--threads: {threads} must be 1..=256"));
    }
    if threads > concurrency {
        return Err(format!(
            "--threads: {threads} threads need at least as many connections (--concurrency {concurrency})"
        ));
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(c) = cpus.iter().find(|&&c| c >= ncpu) {
        return Err(format!(
            "--cpus: CPU {c} does not exist (this machine has {ncpu})"
        ));
    }
    if engine == EngineKind::Own {
        if version == Version::Tls12 {
            return Err(
                "--tls: --engine own speaks TLS 1.3 only (use --engine libssl for 1.2)".into(),
            );
        }
        if ciphers.is_some() {
            return Err(
                "--ciphers: a TLS 1.2 cipher list; --engine own speaks TLS 1.3 only \
                        (use --ciphersuites)"
                    .into(),
            );
        }
        version = Version::Tls13;
    } else if reuse_key_share {
        return Err("--reuse-key-share: only --engine own can reuse a key share".into());
    } else if reuse_ticket {
        return Err(
            "--reuse-ticket: only --engine own has this choice (libssl always \
                    reuses its first session)"
                .into(),
        );
    }
    if reuse_ticket && mode != Mode::Resume {
        return Err("--reuse-ticket applies to --mode resume only".into());
    }
    if mode == Mode::Resume {
        let kind = match (resume, version) {
            (Some(r), _) => r,
            (None, Version::Tls13) => Resume::Psk,
            (None, Version::Tls12) => Resume::Ticket,
            (None, Version::Any) => {
                return Err("--mode resume needs --tls 1.2 or --tls 1.3 (or --resume KIND)".into())
            }
        };
        match (kind, version) {
            (Resume::Psk, Version::Tls12) => {
                return Err("--resume psk is TLS 1.3 resumption; it needs --tls 1.3".into())
            }
            (Resume::SessionId | Resume::Ticket, Version::Tls13) => {
                return Err(format!(
                    "--resume {} is TLS 1.2 resumption; it needs --tls 1.2",
                    kind.name()
                ))
            }
            _ => {}
        }
        // Without a version, the kind decides it.
        if version == Version::Any {
            version = if kind == Resume::Psk {
                Version::Tls13
            } else {
                Version::Tls12
            };
        }
        resume = Some(kind);
    } else if resume.is_some() {
        return Err("--resume applies to --mode resume only".into());
    }
    if requests_per_conn.is_some() && mode != Mode::Bulk {
        return Err("--requests-per-conn applies to --mode bulk only".into());
    }
    let dpdk = match (dpdk_iface, dpdk_addr) {
        (None, None) => None,
        (None, Some(_)) => return Err("--dpdk-addr needs --dpdk IFACE".into()),
        (Some(_), None) => {
            return Err("--dpdk needs --dpdk-addr A.B.C.D/P (loadgen's own address)".into())
        }
        (Some(iface), Some(cidr)) => Some(dpdk_args(iface, &cidr, addr, threads)?),
    };
    let sni = sni.or(host_name.clone());
    let host = host
        .or(sni.clone())
        .unwrap_or_else(|| addr.ip().to_string());
    if host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("--host: {host:?} contains spaces or controls"));
    }
    Ok(Parsed::Run(Box::new(Args {
        engine,
        reuse_key_share,
        reuse_ticket,
        target_text,
        target: addr,
        mode,
        resume,
        version,
        ciphers,
        ciphersuites,
        groups,
        sigalgs,
        sni,
        alpn,
        ca,
        verify,
        path,
        host,
        requests_per_conn,
        concurrency,
        threads,
        cpus,
        rate,
        duration,
        count,
        timeout,
        json,
        quiet,
        plot,
        dpdk,
    })))
}

/// Checks `--dpdk IFACE --dpdk-addr CIDR` against the target and thread count.
fn dpdk_args(
    iface: String,
    cidr: &str,
    target: SocketAddr,
    threads: usize,
) -> Result<DpdkArgs, String> {
    if iface.is_empty() || iface.len() > 15 || iface.contains([',', '=', '/', ' ']) {
        return Err(format!("--dpdk: {iface:?} is not an interface name"));
    }
    let bad = || {
        format!("--dpdk-addr: {cidr:?} is not an IPv4 address with a prefix, e.g. 10.77.0.50/24")
    };
    let (ip, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(bad)?;
    let SocketAddr::V4(t) = target else {
        return Err(format!(
            "--target: {target} is IPv6; --dpdk speaks IPv4 only"
        ));
    };
    if !netstack::in_subnet(*t.ip(), addr, prefix) {
        return Err(format!(
            "--target: {} is not in --dpdk-addr's subnet {cidr} (loadgen's stack has no gateway)",
            t.ip()
        ));
    }
    if *t.ip() == addr {
        return Err(format!("--dpdk-addr: {addr} is the target's own address"));
    }
    if threads != 1 {
        return Err(format!(
            "--threads: --dpdk drives its one port queue from one thread (got {threads})"
        ));
    }
    Ok(DpdkArgs {
        iface,
        addr,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Help(_) => Err("help".into()),
        }
    }

    #[test]
    fn defaults_and_derived_fields() {
        let a = run(&["--target", "127.0.0.1:4433"]).unwrap();
        assert_eq!(a.mode, Mode::Full);
        assert_eq!(a.version, Version::Any);
        assert_eq!((a.concurrency, a.threads), (16, 1));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert!(a.verify && a.sni.is_none() && a.rate.is_none());
        assert_eq!(a.host, "127.0.0.1");
        let a = run(&[
            "--target",
            "localhost:4433",
            "--mode",
            "resume",
            "--tls",
            "1.3",
        ])
        .unwrap();
        assert_eq!(a.sni.as_deref(), Some("localhost"));
        assert_eq!(a.resume, Some(Resume::Psk));
        let a = run(&[
            "--target",
            "127.0.0.1:1",
            "--mode",
            "resume",
            "--resume",
            "id",
        ])
        .unwrap();
        assert_eq!(
            (a.resume, a.version),
            (Some(Resume::SessionId), Version::Tls12)
        );
        assert_eq!(
            run(&["--target", "127.0.0.1:1", "--duration", "250ms"])
                .unwrap()
                .duration,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn a_flag_given_twice_takes_the_last_value() {
        let a = run(&[
            "--target",
            "127.0.0.1:1",
            "--concurrency",
            "4",
            "--concurrency",
            "8",
        ])
        .unwrap();
        assert_eq!(a.concurrency, 8);
    }

    #[test]
    fn completions_and_the_man_page_come_from_the_definitions() {
        let Ok(Parsed::Help(bash)) = parse(["--completions".to_string(), "bash".to_string()])
        else {
            panic!("completions");
        };
        assert!(bash.contains("_loadgen") && bash.contains("--reuse-key-share"));
        let dir = std::env::temp_dir().join(format!("loadgen-man-{}", std::process::id()));
        let r = parse(["--man".to_string(), dir.display().to_string()]);
        assert!(matches!(r, Ok(Parsed::Help(_))));
        let page = std::fs::read_to_string(dir.join("loadgen.1")).unwrap();
        assert!(page.contains("\\-\\-concurrency"), "{page}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dpdk_settings() {
        let a = run(&[
            "--target",
            "10.77.0.1:443",
            "--dpdk",
            "lg-h0",
            "--dpdk-addr",
            "10.77.0.50/24",
        ])
        .unwrap();
        let d = a.dpdk.unwrap();
        assert_eq!(
            (d.iface.as_str(), d.addr, d.prefix),
            ("lg-h0", Ipv4Addr::new(10, 77, 0, 50), 24)
        );
        assert!(run(&["--target", "10.77.0.1:443"]).unwrap().dpdk.is_none());
    }

    #[test]
    fn each_mistake_names_its_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--target"),
            (&["--target", "nocolon"], "--target"),
            (&["--target", "h:99999"], "--target"),
            (&["--target", "127.0.0.1:1", "--mode", "fast"], "--mode"),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--plot",
                    "/nonexistent/dir/p.svg",
                ],
                "--plot",
            ),
            (
                &["--target", "10.0.0.1:1", "--dpdk", "veth0"],
                "--dpdk-addr",
            ),
            (
                &["--target", "10.0.0.1:1", "--dpdk-addr", "10.0.0.2/24"],
                "--dpdk IFACE",
            ),
            (
                &[
                    "--target",
                    "10.0.0.1:1",
                    "--dpdk",
                    "v0",
                    "--dpdk-addr",
                    "10.0.0.2",
                ],
                "--dpdk-addr",
            ),
            (
                &[
                    "--target",
                    "10.0.0.1:1",
                    "--dpdk",
                    "v0",
                    "--dpdk-addr",
                    "10.0.0.2/33",
                ],
                "--dpdk-addr",
            ),
            (
                &[
                    "--target",
                    "10.0.1.1:1",
                    "--dpdk",
                    "v0",
                    "--dpdk-addr",
                    "10.0.0.2/24",
                ],
                "subnet",
            ),
            (
                &[
                    "--target",
                    "10.0.0.2:1",
                    "--dpdk",
                    "v0",
                    "--dpdk-addr",
                    "10.0.0.2/24",
                ],
                "target's own address",
            ),
            (
                &[
                    "--target",
                    "10.0.0.1:1",
                    "--dpdk",
                    "v0,x=1",
                    "--dpdk-addr",
                    "10.0.0.2/24",
                ],
                "--dpdk",
            ),
            (
                &[
                    "--target",
                    "10.0.0.1:1",
                    "--dpdk",
                    "v0",
                    "--dpdk-addr",
                    "10.0.0.2/24",
                    "--threads",
                    "2",
                ],
                "--threads",
            ),
            (&["--target", "127.0.0.1:1", "--tls", "1.4"], "--tls"),
            (
                &["--target", "127.0.0.1:1", "--concurrency", "0"],
                "--concurrency",
            ),
            (
                &["--target", "127.0.0.1:1", "--concurrency", "x"],
                "--concurrency",
            ),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--threads",
                    "4",
                    "--concurrency",
                    "2",
                ],
                "--threads",
            ),
            (
                &["--target", "127.0.0.1:1", "--duration", "forever"],
                "--duration",
            ),
            (
                &["--target", "127.0.0.1:1", "--duration", "601s"],
                "--duration",
            ),
            (&["--target", "127.0.0.1:1", "--rate", "-5"], "--rate"),
            (&["--target", "127.0.0.1:1", "--cpus", "9999"], "--cpus"),
            (
                &["--target", "127.0.0.1:1", "--mode", "resume"],
                "--mode resume",
            ),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--mode",
                    "resume",
                    "--tls",
                    "1.2",
                    "--resume",
                    "psk",
                ],
                "--resume psk",
            ),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--mode",
                    "resume",
                    "--tls",
                    "1.3",
                    "--resume",
                    "ticket",
                ],
                "--resume ticket",
            ),
            (&["--target", "127.0.0.1:1", "--resume", "id"], "--resume"),
            (&["--target", "127.0.0.1:1", "--path", "no-slash"], "--path"),
            (&["--target", "127.0.0.1:1", "--alpn", "h2,"], "--alpn"),
            (
                &["--target", "127.0.0.1:1", "--engine", "boring"],
                "--engine",
            ),
            (
                &["--target", "127.0.0.1:1", "--engine", "own", "--tls", "1.2"],
                "--tls",
            ),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--engine",
                    "own",
                    "--ciphers",
                    "AES",
                ],
                "--ciphers",
            ),
            (
                &["--target", "127.0.0.1:1", "--reuse-key-share"],
                "--reuse-key-share",
            ),
            (
                &[
                    "--target",
                    "127.0.0.1:1",
                    "--engine",
                    "own",
                    "--reuse-ticket",
                ],
                "--reuse-ticket",
            ),
            (
                &["--target", "127.0.0.1:1", "--count"],
                "a value is required for '--count <N>'",
            ),
            (&["--target", "127.0.0.1:1", "--bogus"], "--bogus"),
        ];
        for (args, want) in cases {
            let e = run(args).expect_err(&format!("{args:?} should fail"));
            assert!(e.contains(want), "{args:?}: {e:?} does not name {want:?}");
        }
    }
}
