//! `appliance --config FILE`: the daemon.
//!
//! Start-up order, each step failing with a message that names what to fix:
//! configuration → log → access log → CPU claims → DPDK EAL → port → poll-mode
//! cores → control socket → metrics.
//!
//! Shutdown: the first SIGINT/SIGTERM closes the listening ports (new connections
//! are refused with a RST) and lets open connections finish for up to
//! `control.drain_timeout`; then, or at a second signal, whatever is still open is
//! reset. The cores stop, the access log is written out, the port is closed and EAL
//! released. SIGHUP reloads the configuration file exactly as `appliancectl reload`
//! does (the same validation; a refusal keeps the running configuration), and SIGUSR1
//! reopens the access log (logrotate's `postrotate`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use appliance::config::{Config, Driver, LogFormat};
use appliance::control::ControlServer;
use appliance::live::Phase;
use appliance::runtime;
use dataplane::dpdk::{DpdkPort, DpdkPortConfig};
use dataplane::PortQueue;

/// The command line (clap: help, errors, completions and the man page from one place).
#[derive(clap::Parser, Debug)]
#[command(
    name = "appliance",
    version,
    about = "The TLS offload appliance daemon: DPDK poll-mode cores, TLS termination, proxying",
    after_help = "Signals: SIGHUP reloads the configuration (as `appliancectl reload`), SIGUSR1 reopens the access log, SIGINT/SIGTERM drain and stop.\nEnvironment: RUST_LOG=info|debug|warn (default info)."
)]
struct Args {
    /// The appliance's TOML configuration (see README).
    #[arg(short = 'c', long, value_name = "FILE", required_unless_present_any = ["completions", "man"])]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (as `nginx -t`).
    #[arg(short = 't', long)]
    check: bool,
    /// Print shell completions for SHELL and exit.
    #[arg(long, value_name = "SHELL", value_enum)]
    completions: Option<clap_complete::Shell>,
    /// Write the man page (appliance.8) into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("appliance: error: {msg}");
    ExitCode::from(2)
}

/// The daemon's log on stderr: text for people, or one JSON object per line.
fn init_log(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => {
            b.format_timestamp_millis();
        }
        LogFormat::Json => {
            b.format(|buf, rec| {
                use std::io::Write;
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let line = serde_json::json!({
                    "ts": appliance::access::utc(ms),
                    "level": rec.level().as_str(),
                    "target": rec.target(),
                    "msg": rec.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
    }
    b.init();
}

fn main() -> ExitCode {
    use clap::{CommandFactory, Parser};
    let args = Args::parse();
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "appliance",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &args.man {
        let man = clap_mangen::Man::new(Args::command()).section("8");
        let mut page = Vec::new();
        let written = man
            .render(&mut page)
            .and_then(|()| std::fs::create_dir_all(dir))
            .and_then(|()| std::fs::write(dir.join("appliance.8"), page));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("writing the man page to {}: {e}", dir.display())),
        };
    }
    let check = args.check;
    let Some(path) = args.config else {
        return fail("--config FILE is required");
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    init_log(cfg.log.format);
    if check {
        println!(
            "{}: configuration is valid ({} vserver(s))",
            path.display(),
            cfg.vservers.len()
        );
        return ExitCode::SUCCESS;
    }
    if cfg.dataplane.driver == Driver::Memory {
        return fail(format!(
            "{}: dataplane.driver: \"memory\" exists for tests only; the daemon needs \"dpdk\"",
            path.display()
        ));
    }
    // Pinned poll-mode cores own their CPUs: a second appliance on one is refused.
    // Unpinned ones (`pin = false`: several instances on a small box, as the cluster
    // tests run them) share CPUs with everything else and claim none.
    let _cores = if cfg.dataplane.pin {
        match dataplane::cores::claim_cores(&cfg.dataplane.cores) {
            Ok(l) => Some(l),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    if let Err(e) = dataplane::dpdk::init_eal(&cfg.dataplane.eal_args) {
        return fail(e);
    }
    let abs = std::fs::canonicalize(&path).unwrap_or(path);
    let code = run(&cfg, &abs);
    dataplane::dpdk::cleanup_eal();
    code
}

fn run(cfg: &Config, config_path: &std::path::Path) -> ExitCode {
    let (access_log, access) = match &cfg.log.access {
        None => (None, None),
        Some(p) => match appliance::access::AccessLog::start(p, cfg.log.format) {
            Ok((log, tx)) => {
                log::info!("access log: {}", p.display());
                (Some(log), Some(tx))
            }
            Err(e) => return fail(format!("log.access {}: {e}", p.display())),
        },
    };
    let mut port = match DpdkPort::open(&DpdkPortConfig {
        name: cfg.dataplane.port.clone(),
        queues: cfg.dataplane.cores.len(),
        rx_desc: cfg.dataplane.rx_descriptors,
        tx_desc: cfg.dataplane.tx_descriptors,
        mbufs_per_queue: cfg.dataplane.mbufs_per_queue,
        mtu: cfg.dataplane.mtu,
    }) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (up, speed) = port.link();
    log::info!("link {} ({speed} Mb/s)", if up { "up" } else { "down" });
    let queues: Vec<Box<dyn PortQueue>> = port
        .take_queues()
        .into_iter()
        .map(|q| Box::new(q) as Box<dyn PortQueue>)
        .collect();
    let running = match runtime::start(cfg, config_path, port.info().clone(), queues, access) {
        Ok(r) => r,
        Err(e) => return fail(format!("starting poll-mode cores: {e}")),
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            running.stop();
            let _ = running.join();
            return fail(format!("cannot install the signal handlers: {e}"));
        }
    };
    let state = std::sync::Arc::new(appliance::control::State {
        config_path: config_path.to_path_buf(),
        counters: running.counters.clone(),
        live: running.live.clone(),
        reloads_failed: Default::default(),
        workers: running.crypto_workers.clone(),
        routes: running.crypto_routes.clone(),
        port: running.port.clone(),
        started: running.started,
    });
    let handler = appliance::control::handler(state.clone());
    let control = match ControlServer::start(&cfg.control.socket, handler) {
        Ok(c) => c,
        Err(e) => {
            running.stop();
            let _ = running.join();
            return fail(format!(
                "control socket {}: {e}",
                cfg.control.socket.display()
            ));
        }
    };
    let _metrics = match &cfg.metrics {
        None => None,
        Some(m) => match appliance::metrics::MetricsServer::start(m.listen, state.clone()) {
            Ok(s) => {
                log::info!("metrics: Prometheus text at http://{}/metrics", s.addr);
                Some(s)
            }
            Err(e) => {
                running.stop();
                let _ = running.join();
                return fail(format!("metrics.listen {}: {e}", m.listen));
            }
        },
    };
    for v in &cfg.vservers {
        log::info!(
            "vserver {} ({:?}) listening on {} -> {:?}",
            v.name,
            v.mode,
            v.listen,
            v.backends
                .iter()
                .map(|b| format!("{} (weight {})", b.addr, b.weight))
                .collect::<Vec<_>>()
        );
    }
    if cfg.crypto.workers == 0 {
        log::info!("crypto: inline on the poll-mode cores");
    } else {
        log::info!(
            "crypto: {} worker(s), {}, queues of {}",
            cfg.crypto.workers,
            if cfg.crypto.cpus.is_empty() {
                "not pinned".to_string()
            } else {
                format!("on CPUs {:?}", cfg.crypto.cpus)
            },
            cfg.crypto.queue_depth
        );
    }
    for r in running.crypto_routes.iter() {
        log::info!("crypto device: {} on {}", r.operation, r.device);
    }
    log::info!(
        "ready: {} poll-mode core(s) on CPUs {:?}, idle policy {:?}, control socket {}",
        cfg.dataplane.cores.len(),
        cfg.dataplane.cores,
        cfg.dataplane.idle,
        cfg.control.socket.display()
    );
    let mut last = running.snapshot();
    let mut last_log = std::time::Instant::now();
    let mut last_staples = std::time::Instant::now();
    while signals.stop.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(100));
        if signals.hup.swap(false, Ordering::Relaxed) {
            log::warn!("SIGHUP: reloading {}", config_path.display());
            // The same validation and refusal as `appliancectl reload`.
            let _ = appliance::control::reload(&state);
        }
        if signals.usr1.swap(false, Ordering::Relaxed) {
            match &access_log {
                Some(log) => {
                    log::info!("SIGUSR1: reopening the access log");
                    log.reopen();
                }
                None => log::info!("SIGUSR1: no access log to reopen ([log] access is not set)"),
            }
        }
        if last_staples.elapsed() >= Duration::from_secs(10) {
            state.live.refresh_staples(appliance::unix_now());
            last_staples = std::time::Instant::now();
        }
        let interval = cfg.control.stats_interval;
        if !interval.is_zero() && last_log.elapsed() >= interval {
            let now = running.snapshot();
            log_stats(&last, &now);
            last = now;
            last_log = std::time::Instant::now();
        }
    }
    drain(&running, cfg.control.drain_timeout, &signals.stop);
    running.stop();
    let result = running.join();
    if let Some(log) = access_log {
        // The cores held the senders; with them gone the writer empties its queue.
        log.finish();
    }
    drop(control);
    let last_stats = port.device_stats();
    log::info!(
        "port totals: rx {} frames, tx {} frames, missed {}, rx errors {}, tx errors {}",
        last_stats.ipackets,
        last_stats.opackets,
        last_stats.imissed,
        last_stats.ierrors,
        last_stats.oerrors
    );
    drop(port);
    match result {
        Ok(()) => {
            log::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Closes the ports and waits until no client connection is open, the deadline
/// passes, or a second signal comes; then resets what is left.
fn drain(running: &runtime::Running, limit: Duration, signals: &std::sync::atomic::AtomicU32) {
    let total = |f: fn(&runtime::CoreCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
        running
            .counters
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    };
    let open = || total(|c| &c.proxy.clients_open);
    let live = &running.live;
    live.set_phase(Phase::Draining);
    let start = std::time::Instant::now();
    log::warn!(
        "stopping: signal received; ports closed, draining {} client connection(s) for up to {limit:?} (a second signal resets them at once)",
        open()
    );
    let mut last_note = start;
    // Connections the proxy has finished with may still have bytes in flight; they
    // are gone from the stacks once TCP has delivered them and closed.
    let held = || total(|c| &c.stack.active);
    loop {
        let n = open();
        if n == 0 && (held() == 0 || start.elapsed() >= limit) {
            log::info!(
                "drained in {:.1}s: no client connection open",
                start.elapsed().as_secs_f64()
            );
            return;
        }
        if n > 0 && (start.elapsed() >= limit || signals.load(Ordering::Relaxed) > 1) {
            log::warn!("drain ended with {n} client connection(s) open: resetting them");
            live.set_phase(Phase::Cutting);
            // The cores send the RSTs in their next iterations.
            let t0 = std::time::Instant::now();
            while open() > 0 && t0.elapsed() < Duration::from_millis(500) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
        if last_note.elapsed() >= Duration::from_secs(1) {
            last_note = std::time::Instant::now();
            log::info!(
                "draining: {n} client connection(s) open, {:.0}s left",
                limit.saturating_sub(start.elapsed()).as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the signals asked for, set by their handlers and read by the main loop: SIGINT
/// and SIGTERM (counted: the first drains, the second cuts), SIGHUP (reload, as
/// `appliancectl reload`) and SIGUSR1 (reopen the access log, for logrotate).
struct Signals {
    stop: std::sync::Arc<std::sync::atomic::AtomicU32>,
    hup: std::sync::Arc<std::sync::atomic::AtomicBool>,
    usr1: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let s = Signals {
            stop: Default::default(),
            hup: Default::default(),
            usr1: Default::default(),
        };
        for sig in [SIGINT, SIGTERM] {
            let stop = s.stop.clone();
            // SAFETY: the handler only increments an atomic (async-signal-safe).
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    stop.fetch_add(1, Ordering::Relaxed);
                })?;
            }
        }
        signal_hook::flag::register(SIGHUP, s.hup.clone())?;
        signal_hook::flag::register(SIGUSR1, s.usr1.clone())?;
        Ok(s)
    }
}

fn log_stats(a: &runtime::Snapshot, b: &runtime::Snapshot) {
    for (x, y) in a.cores.iter().zip(&b.cores) {
        let get = |v: &control_proto::reply::Counters, k: &str| {
            v.get(k).and_then(|n| n.as_u64()).unwrap_or(0)
        };
        log::info!(
            "core {}: busy {:.1}%, rx {} tx {} frames, active {} conns, accepted {}, backend failures {}",
            y.index,
            100.0 * y.loops.busy_fraction_since(&x.loops),
            get(&y.queue, "rx_frames") - get(&x.queue, "rx_frames"),
            get(&y.queue, "tx_frames") - get(&x.queue, "tx_frames"),
            get(&y.stack, "active"),
            get(&y.proxy, "accepted") - get(&x.proxy, "accepted"),
            get(&y.proxy, "backend_failed") - get(&x.proxy, "backend_failed"),
        );
    }
}
