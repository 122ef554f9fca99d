//! `httpload`: a plain-HTTP/1.1 load generator for the L4 proxy (no TLS; the TLS load
//! generator `loadgen` is a later issue). Every loop is bounded by a count and a time.
//!
//!   httpload --target 10.77.0.1:80 --path /index.html --concurrency 16 \
//!            --duration 5s [--requests N] [--keepalive] [--json]
//!
//! Without `--keepalive` each request uses a new TCP connection (connect, GET with
//! `Connection: close`, read to EOF, close): it measures new connections per second.
//! With it, each worker reuses one connection (responses need Content-Length).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The command line (clap).
#[derive(clap::Parser, Debug)]
#[command(
    name = "httpload",
    version,
    // A flag given twice: the last one counts, as before clap.
    args_override_self = true,
    about = "Plain HTTP/1.1 load against the L4 proxy: GETs from N workers for a bounded time"
)]
struct Args {
    /// The server, IP:PORT.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:80")]
    target: SocketAddr,
    /// The path to GET.
    #[arg(long, default_value = "/")]
    path: String,
    /// Workers, each with one request in flight (1..=4096).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// How long to run (e.g. 5s, 500ms).
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = duration)]
    duration: Duration,
    /// Stop after this many requests in all (default: only the duration bounds it).
    #[arg(long, value_name = "N", default_value_t = u64::MAX, hide_default_value = true)]
    requests: u64,
    /// Reuse one connection per worker (responses need Content-Length); without it
    /// every request is a new TCP connection.
    #[arg(long)]
    keepalive: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Print shell completions for SHELL and exit.
    #[arg(long, value_name = "SHELL", value_enum)]
    completions: Option<clap_complete::Shell>,
    /// Write the man page (httpload.1) into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<std::path::PathBuf>,
}

fn duration(s: &str) -> Result<Duration, String> {
    tools::loadgen::args::parse_duration("--duration", s)
}

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// Reads one response (framed by `http1`: Content-Length, chunked, or until the
/// server closes) and, with `to_close`, on to the server's close; returns its bytes.
/// It must be a 200.
fn read_response(s: &mut TcpStream, chunk: &mut [u8], to_close: bool) -> std::io::Result<u64> {
    let mut framer = backend_wire::http1::ResponseFramer::new();
    let mut got = 0u64;
    loop {
        let n = s.read(chunk)?;
        if n == 0 {
            let ended = framer.until_close() || (to_close && framer.responses() > 0);
            if !ended {
                return Err(std::io::Error::other(
                    "the server closed before the response ended",
                ));
            }
            break;
        }
        got += n as u64;
        let fed = framer
            .feed(&chunk[..n])
            .map_err(|e| std::io::Error::other(format!("not an HTTP/1.1 response: {e}")))?;
        if fed.ended > 0 && framer.status() >= 200 && !to_close {
            break;
        }
    }
    if framer.status() != 200 {
        return Err(std::io::Error::other(format!(
            "status {}, not 200",
            framer.status()
        )));
    }
    Ok(got)
}

fn main() {
    use clap::CommandFactory;
    let a = <Args as clap::Parser>::parse();
    if let Some(sh) = a.completions {
        clap_complete::generate(sh, &mut Args::command(), "httpload", &mut std::io::stdout());
        return;
    }
    if let Some(dir) = &a.man {
        let mut page = Vec::new();
        let r = clap_mangen::Man::new(Args::command())
            .render(&mut page)
            .and_then(|()| std::fs::create_dir_all(dir))
            .and_then(|()| std::fs::write(dir.join("httpload.1"), page));
        if let Err(e) = r {
            eprintln!("httpload: --man {}: {e}", dir.display());
            std::process::exit(1);
        }
        return;
    }
    let a = Arc::new(a);
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut lat_all = Vec::new();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (a, totals, stop, issued) =
                (a.clone(), totals.clone(), stop.clone(), issued.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                let conn_hdr = if a.keepalive { "keep-alive" } else { "close" };
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: {conn_hdr}\r\n\r\n",
                    a.path, a.target
                );
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed)
                    && issued.fetch_add(1, Ordering::Relaxed) < a.requests
                {
                    let t0 = Instant::now();
                    let r = (|| -> std::io::Result<u64> {
                        if conn.is_none() {
                            let s = TcpStream::connect_timeout(&a.target, Duration::from_secs(5))?;
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            s.set_nodelay(true)?;
                            conn = Some(s);
                        }
                        let s = conn.as_mut().expect("just set");
                        s.write_all(req.as_bytes())?;
                        read_response(s, &mut buf, !a.keepalive)
                    })();
                    if !a.keepalive {
                        conn = None;
                    }
                    match r {
                        Ok(n) => {
                            totals.ok.fetch_add(1, Ordering::Relaxed);
                            totals.bytes.fetch_add(n, Ordering::Relaxed);
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                        Err(_) => {
                            totals.errors.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
                lat
            })
        })
        .collect();
    while start.elapsed() < a.duration && workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        lat_all.extend(w.join().unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    lat_all.sort_unstable();
    let pct = |p: f64| {
        lat_all
            .get(((lat_all.len() as f64 * p) as usize).min(lat_all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let ok = totals.ok.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let bytes = totals.bytes.load(Ordering::Relaxed);
    if a.json {
        println!(
            "{{\"requests\":{ok},\"errors\":{errors},\"seconds\":{secs:.3},\"requests_per_sec\":{:.1},\"bytes_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
            ok as f64 / secs,
            bytes as f64 / secs,
            pct(0.5),
            pct(0.99)
        );
    } else {
        println!(
            "{ok} requests ({errors} errors) in {secs:.2}s: {:.0} req/s, {:.1} MB/s, latency p50 {} us, p99 {} us",
            ok as f64 / secs,
            bytes as f64 / secs / 1e6,
            pct(0.5),
            pct(0.99)
        );
    }
    if ok == 0 {
        std::process::exit(1);
    }
}
