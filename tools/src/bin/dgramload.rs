//! `dgramload`: datagram load through a `socks5` vserver's UDP relay, protected
//! (secure datagrams) or plain (RFC 1928, for a vserver with `plain_udp`), and the UDP
//! echo server it runs against. For `tools/bench/datagrams.sh`; every run is bounded
//! in time.
//!
//!     dgramload echo --listen 10.77.0.3:7 --seconds 120
//!     dgramload run --server 10.77.0.1:1080 --ca ca.pem --name appliance.test \
//!               --target 10.77.0.3:7 --size 64 --seconds 5 [--window 32 | --rate 20000] [--plain]
//!
//! `run` keeps `--window` datagrams in flight (closed loop: the relay's capacity) or
//! sends `--rate` per second (open loop: latency at a given load), and prints one JSON
//! line: datagrams sent and echoed, echoes per second, round-trip p50/p99/max in µs.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tools::socks_client::{ApplianceArgs, Association, Tunnel};

#[derive(Parser, Debug)]
#[command(
    name = "dgramload",
    version,
    about = "Datagram load through a socks5 vserver's UDP relay, and its echo server"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A UDP echo server.
    Echo {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Datagrams through an association to an echo server, timed.
    Run {
        #[command(flatten)]
        appliance: ApplianceArgs,
        /// The echo server, IPv4:PORT (as the appliance reaches it).
        #[arg(long)]
        target: SocketAddrV4,
        /// Payload bytes per datagram (at least 16: a sequence number and a time).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=1400))]
        size: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Datagrams in flight (closed loop).
        #[arg(long, default_value_t = 32, conflicts_with = "rate")]
        window: u32,
        /// Datagrams per second (open loop) instead of a window.
        #[arg(long)]
        rate: Option<u32>,
        /// Plain RFC 1928 datagrams (the vserver needs plain_udp).
        #[arg(long)]
        plain: bool,
    },
}

fn fail(msg: String) -> ! {
    eprintln!("dgramload: {msg}");
    std::process::exit(2);
}

fn main() {
    match Args::parse().cmd {
        Cmd::Echo { listen, seconds } => echo(listen, seconds),
        Cmd::Run {
            appliance,
            target,
            size,
            seconds,
            window,
            rate,
            plain,
        } => {
            let t = Tunnel::new(&appliance).unwrap_or_else(|e| fail(e));
            let a = Association::open(&t, plain).unwrap_or_else(|e| fail(e));
            run(a, target, size as usize, seconds, window, rate, plain);
        }
    }
}

fn echo(listen: std::net::SocketAddr, seconds: u64) {
    let s = UdpSocket::bind(listen).unwrap_or_else(|e| fail(format!("--listen {listen}: {e}")));
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| fail(e.to_string()));
    eprintln!("dgramload: echoing on {listen} for {seconds} s");
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < end {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

fn run(
    mut a: Association,
    target: SocketAddrV4,
    size: usize,
    seconds: u64,
    window: u32,
    rate: Option<u32>,
    plain: bool,
) {
    a.sock
        .set_nonblocking(true)
        .unwrap_or_else(|e| fail(e.to_string()));
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)
        .unwrap_or_else(|e| fail(e.to_string()));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut payload = vec![0x5au8; size];
    let mut out = Vec::with_capacity(2048);
    let mut buf = vec![0u8; 65_536];
    let (mut sent, mut echoed, mut wrong) = (0u64, 0u64, 0u64);
    let mut in_flight: u64 = 0;
    let mut last_echo = Instant::now();
    let mut send = |a: &mut Association, sent: &mut u64| {
        payload[..8].copy_from_slice(&sent.to_be_bytes());
        let ns = start.elapsed().as_nanos() as u64;
        payload[8..16].copy_from_slice(&ns.to_be_bytes());
        if a.wrap(target, &payload, &mut out).is_ok() && a.sock.send(&out).is_ok() {
            *sent += 1;
        }
    };
    while Instant::now() < end {
        match rate {
            Some(r) => {
                // Open loop: catch up to where the clock says we should be.
                let due = (start.elapsed().as_secs_f64() * f64::from(r)) as u64;
                while sent < due {
                    send(&mut a, &mut sent);
                }
            }
            None => {
                // Closed loop; a window that lost datagrams is refilled after 100 ms.
                if last_echo.elapsed() > Duration::from_millis(100) {
                    in_flight = 0;
                    last_echo = Instant::now();
                }
                while in_flight < u64::from(window) {
                    send(&mut a, &mut sent);
                    in_flight += 1;
                }
            }
        }
        // Wait for an echo, at most 1 ms (poll's timeout is precise, a socket timeout
        // is a tick); an open loop sends what fell due meanwhile in one burst.
        let mut fd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&a.sock),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fd, 1, 1) };
        // Everything that came back.
        while let Ok(n) = a.sock.recv(&mut buf) {
            match a.unwrap(&mut buf[..n]) {
                Ok((_, data)) if data.len() == size => {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&data[8..16]);
                    let rtt_ns =
                        (start.elapsed().as_nanos() as u64).saturating_sub(u64::from_be_bytes(t));
                    let _ = hist.record((rtt_ns / 1000).max(1));
                    echoed += 1;
                    in_flight = in_flight.saturating_sub(1);
                    last_echo = Instant::now();
                }
                _ => wrong += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "protected": !plain,
            "size": size,
            "sent": sent,
            "echoed": echoed,
            "dropped_or_wrong": wrong,
            "seconds": secs,
            "echoes_per_sec": echoed as f64 / secs,
            "p50_us": hist.value_at_quantile(0.5),
            "p99_us": hist.value_at_quantile(0.99),
            "max_us": hist.max(),
        })
    );
}
