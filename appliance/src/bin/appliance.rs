//! `appliance --config FILE`: the daemon.
//!
//! Start-up order, each step failing with a message that names what to fix:
//! configuration → CPU claims → DPDK EAL → port → poll-mode cores → control socket.
//! SIGINT/SIGTERM stop the cores, then the port is closed and EAL released.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use appliance::config::{Config, Driver};
use appliance::control::ControlServer;
use appliance::runtime;
use dataplane::dpdk::{DpdkPort, DpdkPortConfig};
use dataplane::PortQueue;

const USAGE: &str = "usage: appliance --config FILE [--check]

  --config FILE   the appliance's TOML configuration (see README)
  --check         validate the configuration and exit
Environment: RUST_LOG=info|debug|warn (default info)";

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("appliance: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let mut args = std::env::args().skip(1);
    let (mut config, mut check) = (None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--check" => check = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return fail(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let Some(path) = config else {
        return fail(format!("--config FILE is required\n{USAGE}"));
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
    let _cores = match dataplane::cores::claim_cores(&cfg.dataplane.cores) {
        Ok(l) => l,
        Err(e) => return fail(e),
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
    let mut port = match DpdkPort::open(&DpdkPortConfig {
        name: cfg.dataplane.port.clone(),
        queues: cfg.dataplane.cores.len(),
        rx_desc: cfg.dataplane.rx_descriptors,
        tx_desc: cfg.dataplane.tx_descriptors,
        mbufs_per_queue: cfg.dataplane.mbufs_per_queue,
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
    let running = match runtime::start(cfg, port.info().clone(), queues) {
        Ok(r) => r,
        Err(e) => return fail(format!("starting poll-mode cores: {e}")),
    };
    let stop = running.stop_flag();
    let s2 = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)) {
        running.stop();
        let _ = running.join();
        return fail(format!("cannot install the SIGINT/SIGTERM handler: {e}"));
    }
    let state = std::sync::Arc::new(appliance::control::State {
        config_path: config_path.to_path_buf(),
        counters: running.counters.clone(),
        vservers: running.vservers.clone(),
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
        Some(m) => match appliance::metrics::MetricsServer::start(m.listen, state) {
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
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let interval = cfg.control.stats_interval;
        if !interval.is_zero() && last_log.elapsed() >= interval {
            let now = running.snapshot();
            log_stats(&last, &now);
            last = now;
            last_log = std::time::Instant::now();
        }
    }
    log::info!("stopping: signal received");
    running.stop();
    let result = running.join();
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

fn log_stats(a: &runtime::Snapshot, b: &runtime::Snapshot) {
    for (x, y) in a.cores.iter().zip(&b.cores) {
        let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
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
