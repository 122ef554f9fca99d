//! Starting and stopping the data plane: one per-core driver (`driver::Driver`
//! running a [`CoreApp`]) per configured core, each on
//! its own pinned thread with its own port queue, and a [`Snapshot`] of everything
//! they count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use control_proto::reply::{Core, Counters, Crypto, Loops, Port};
use dataplane::cores::{run_poll_loop, spawn_core, CoreHandle, CoreSnapshot, CoreStats};
use dataplane::steer::{mesh, SteerStats, Steering};
use dataplane::{PortInfo, PortQueue};
use netstack::{Stack, StackConfig, StackStats};
use serde::Serialize;

use crate::access::AccessSender;
use crate::config::Config;
use crate::core::CoreApp;
use crate::live::Live;
use crate::stats::{ProxyStats, QueueStats};
use crypto_offload::device::{Device, Devices, Route};
use crypto_offload::{DeviceWorkers, Pool, PoolConfig, WorkerStats};
use driver::{Driver, Net, Offload, OffloadStats};

/// Everything one core counts, shared with the control socket.
pub struct CoreCounters {
    pub index: usize,
    pub cpu: Option<usize>,
    pub core: Arc<CoreStats>,
    pub stack: Arc<StackStats>,
    pub proxy: Arc<ProxyStats>,
    /// The core's crypto link (served with `proxy`).
    pub offload: Arc<OffloadStats>,
    pub queue: Arc<QueueStats>,
    pub steer: Arc<SteerStats>,
    /// Busy cycles by step of the loop (`None`: `loop_phases` off).
    pub phases: Option<Arc<driver::phases::PhaseStats>>,
}

/// The running data plane.
pub struct Running {
    stop: Arc<AtomicBool>,
    handles: Vec<CoreHandle>,
    pub counters: Arc<Vec<CoreCounters>>,
    /// The configuration's current generation: vservers and backends with their
    /// live state (the control socket flips it and reloads it).
    pub live: Arc<Live>,
    pub port: PortInfo,
    pub started: std::time::Instant,
    /// The crypto workers' counters (empty in inline mode).
    pub crypto_workers: Arc<Vec<Arc<WorkerStats>>>,
    /// The crypto operations and the device that runs each.
    pub crypto_routes: Arc<Vec<Route>>,
    /// Dropped after the cores have stopped (field order: `handles` are joined first).
    _pool: Option<Pool>,
    /// Providers and engines stay loaded until the workers are gone.
    _devices: Devices,
}

/// A point-in-time copy of every counter, as the control socket serves it.
pub type Snapshot = control_proto::reply::Stats;

/// The counters of `t` (a struct of atomics, maps of them) as a named group.
fn counters<T: Serialize>(t: &T) -> Counters {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => Counters::new(),
    }
}

impl Running {
    /// Sets the stop flag; the cores finish their current iteration and exit.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The flag [`Running::stop`] sets (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits for every core to exit; errors carry a core's panic.
    pub fn join(self) -> Result<(), String> {
        let mut first = Ok(());
        for h in self.handles {
            let i = h.index;
            if let Err(e) = h.join() {
                log::error!("poll-mode core {i} panicked: {e}");
                if first.is_ok() {
                    first = Err(format!("core {i} panicked: {e}"));
                }
            }
        }
        first
    }

    /// All counters now.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(
            &self.counters,
            &self.crypto_workers,
            &self.crypto_routes,
            &self.port,
            self.started,
        )
    }
}

/// All counters now (usable without the `Running`).
pub fn snapshot(
    counters_of: &[CoreCounters],
    workers: &[Arc<WorkerStats>],
    routes: &[Route],
    port: &PortInfo,
    started: std::time::Instant,
) -> Snapshot {
    let loops = |c: CoreSnapshot| Loops {
        busy_cycles: c.busy_cycles,
        idle_cycles: c.idle_cycles,
        busy_loops: c.busy_loops,
        idle_loops: c.idle_loops,
        sleeps: c.sleeps,
    };
    Snapshot {
        uptime_secs: started.elapsed().as_secs_f64(),
        cycles_per_second: dataplane::cores::cycles_per_second(),
        port: Port {
            name: port.name.clone(),
            driver: port.driver.clone(),
            mac: dataplane::fmt_mac(&port.mac),
            mtu: port.mtu,
            queues: port.queues,
        },
        cores: counters_of
            .iter()
            .map(|c| {
                let mut proxy = counters(&*c.proxy);
                proxy.extend(counters(&*c.offload));
                Core {
                    index: c.index,
                    cpu: c.cpu,
                    loops: loops(c.core.snapshot()),
                    queue: counters(&*c.queue),
                    stack: counters(&*c.stack),
                    proxy,
                    steering: counters(&*c.steer),
                    loop_phases: c
                        .phases
                        .iter()
                        .flat_map(|p| p.snapshot())
                        .map(|(k, v)| (k.to_string(), v.into()))
                        .collect(),
                }
            })
            .collect(),
        crypto: Crypto {
            mode: if workers.is_empty() { "inline" } else { "pool" }.into(),
            workers: workers.iter().map(|w| counters(&w.snapshot())).collect(),
            devices: routes.iter().map(counters).collect(),
        },
    }
}

/// Starts one poll-mode core per queue. `queues.len()` must equal the configured
/// core count. With `dataplane.pin`, each thread is pinned to its CPU. `path` is the
/// file `cfg` came from: reloads read it again. Each core logs its finished client
/// connections to `access`, if given.
pub fn start(
    cfg: &Config,
    path: &std::path::Path,
    port: PortInfo,
    queues: Vec<Box<dyn PortQueue>>,
    access: Option<AccessSender>,
) -> std::io::Result<Running> {
    let n = cfg.dataplane.cores.len();
    assert_eq!(queues.len(), n, "one queue per poll-mode core");
    // Before any key is made (the TLS configurations below make some).
    crypto_offload::use_primitives(cfg.crypto.primitives);
    if cfg.crypto.primitives == crypto_offload::Primitives::AwsLc {
        log::info!("crypto primitives: AWS-LC for X25519 and signatures, OpenSSL for the rest");
    }
    // The session store first: its threads (peers, Redis) run beside the cores.
    let store = crate::sessions::start(cfg).map_err(std::io::Error::other)?;
    let live = Arc::new(Live::new(cfg.clone(), path, n, store));
    // Providers and engines first: every job, on a core or a worker, runs on them.
    let devices = Devices::load(&cfg.crypto.providers, &cfg.crypto.engines).map_err(|e| {
        let list = if e.what == "engine" {
            "engines"
        } else {
            "providers"
        };
        std::io::Error::other(format!("crypto.{list}[{}]: {e}", e.index))
    })?;
    let mut routes = devices.routes();
    let mut accelerators = Vec::with_capacity(cfg.crypto.devices.len());
    for (i, d) in cfg.crypto.devices.iter().enumerate() {
        let device = Device::load(&d.name, &d.providers)
            .map_err(|e| std::io::Error::other(format!("crypto.device[{i}] {:?}: {e}", d.name)))?;
        routes.extend(device.routes());
        accelerators.push(DeviceWorkers {
            device: Arc::new(device),
            workers: d.workers,
            cpus: d.cpus.clone(),
        });
    }
    let pool = if cfg.crypto.all_workers() > 0 {
        let mut pc = PoolConfig::new(cfg.crypto.workers);
        pc.queue_depth = cfg.crypto.queue_depth;
        pc.max_batch = cfg.crypto.max_batch;
        pc.cpus = cfg.crypto.cpus.clone();
        pc.devices = accelerators;
        if let Some((kind, n)) = fault_injection()? {
            log::warn!(
                "{FAULT_ENV}: {} job number {n} will crash its crypto worker (a test hook)",
                kind.name()
            );
            let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
            pc.runner = Arc::new(move |job: crypto_offload::Job| {
                let records = matches!(job, crypto_offload::Job::Records(_));
                if records == (kind == FaultKind::RecordJob)
                    && seen.fetch_add(1, Ordering::Relaxed) + 1 == n
                {
                    panic!("{FAULT_ENV}: {} job {n} crashes its worker", kind.name());
                }
                crypto_offload::run(job)
            });
        }
        Some(Pool::start(pc).map_err(std::io::Error::other)?)
    } else {
        None
    };
    let listen_ports: Vec<u16> = cfg.vservers.iter().map(|v| v.listen.port()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seed = netstack::random_seed();
    // One client-hash key for every core of this process (see dataplane::steer).
    let steer_key = dataplane::steer::SteerKey::random();
    let mut handles = Vec::with_capacity(n);
    let mut counters = Vec::with_capacity(n);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(n);
    for (i, (queue, endpoint)) in queues.into_iter().zip(mesh(n)).enumerate() {
        let cpu = cfg.dataplane.cores[i];
        let scfg = StackConfig {
            mac: port.mac,
            addr: cfg.dataplane.address,
            prefix_len: cfg.dataplane.prefix_len,
            gateway: cfg.dataplane.gateway,
            mtu: port.mtu,
            core: i,
            cores: n,
            rx_buffer: cfg.tcp.rx_buffer,
            tx_buffer: cfg.tcp.tx_buffer,
            max_connections: cfg.dataplane.max_connections_per_core,
            spare_sockets: cfg.tcp.spare_sockets,
            handshake_timeout: netstack::NetDuration::from_millis(
                cfg.tcp.handshake_timeout.as_millis() as u64,
            ),
            idle_timeout: netstack::NetDuration::from_millis(
                cfg.tcp.idle_timeout.as_millis() as u64
            ),
            ack_delay: (!cfg.tcp.ack_delay.is_zero())
                .then(|| netstack::NetDuration::from_micros(cfg.tcp.ack_delay.as_micros() as u64)),
            seed,
            syn_cookies_after: cfg.tcp.syn_cookies_after,
        };
        let steering = Steering::new(
            i,
            n,
            cfg.dataplane.address.octets(),
            steer_key.clone(),
            &listen_ports,
        );
        let live2 = live.clone();
        let access = access.clone();
        let offload = match &pool {
            Some(p) => {
                let o = Offload::pool(p.link(cfg.crypto.max_in_flight), cfg.crypto.backlog);
                if cfg.crypto.record_offload {
                    o.with_records(cfg.crypto.record_batch)
                } else {
                    o
                }
            }
            None => Offload::inline(),
        };
        let stop2 = stop.clone();
        let idle = cfg.dataplane.idle;
        let ready = ready_tx.clone();
        let pin = cfg.dataplane.pin.then_some(cpu);
        let loop_phases = cfg.dataplane.loop_phases;
        let handle = spawn_core(i, pin, move |core_stats| {
            // The stack is built on its own core so its memory is first touched there.
            let now = crate::now_us();
            let stack = Stack::new(scfg, netstack::NetInstant::from_micros(now as i64));
            // One core has no one to steer to or from: no classifying per frame, no
            // channel to poll every iteration.
            let steer = (n > 1).then_some((steering, endpoint));
            let mut net = Net::new(queue, steer, stack);
            let app = CoreApp::new(&mut net, i, n, live2, access, now / 1000);
            let mut core = Driver::new(net, offload, app);
            core.account_phases(loop_phases);
            core.on_core_start();
            let _ = ready.send((
                core.net.stack.stats(),
                core.app.stats.clone(),
                core.offload_stats(),
                core.app.queue_stats.clone(),
                core.net.steer_stats().unwrap_or_default(),
                loop_phases.then(|| core.phase_stats()),
            ));
            run_poll_loop(core_stats, idle, &stop2, || core.poll_once(crate::now_us()));
            core.publish();
        })?;
        let (stack, proxy, offload, queue, steer, phases) = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other(format!("poll-mode core {i} failed to start")))?;
        counters.push(CoreCounters {
            index: i,
            cpu: pin,
            core: handle.stats.clone(),
            stack,
            proxy,
            offload,
            queue,
            steer,
            phases,
        });
        handles.push(handle);
    }
    Ok(Running {
        stop,
        handles,
        counters: Arc::new(counters),
        live,
        port,
        started: std::time::Instant::now(),
        crypto_workers: Arc::new(pool.as_ref().map(|p| p.workers()).unwrap_or_default()),
        crypto_routes: Arc::new(routes),
        _pool: pool,
        _devices: devices,
    })
}

/// The environment variable of the fault-injection test hook: `record-job:N` makes
/// the worker that takes the N-th record job panic, `handshake-job:N` the one that takes
/// the N-th handshake job (every job that is not record work), as a crashing
/// accelerator driver or a bug would, so the tests can watch the appliance recover
/// under live traffic.
pub const FAULT_ENV: &str = "APPLIANCE_FAULT_INJECT";

/// Which jobs the fault hook counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    RecordJob,
    HandshakeJob,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::RecordJob => "record",
            FaultKind::HandshakeJob => "handshake",
        }
    }
}

fn fault_injection() -> std::io::Result<Option<(FaultKind, u64)>> {
    let Ok(v) = std::env::var(FAULT_ENV) else {
        return Ok(None);
    };
    let parsed = if let Some(n) = v.strip_prefix("record-job:") {
        Some((FaultKind::RecordJob, n))
    } else {
        v.strip_prefix("handshake-job:")
            .map(|n| (FaultKind::HandshakeJob, n))
    };
    parsed
        .and_then(|(k, n)| n.parse::<u64>().ok().filter(|&n| n > 0).map(|n| (k, n)))
        .map(Some)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "{FAULT_ENV}={v:?}: expected record-job:N or handshake-job:N with N at least 1"
            ))
        })
}
