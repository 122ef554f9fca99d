//! `loadgen`: a TLS load generator for any TLS server (ours, nginx, haproxy,
//! `openssl s_server`). It measures full and resumed handshakes per second, requests
//! per connection and keep-alive bulk transfer, in a closed loop (fixed concurrency) or
//! an open loop (fixed arrival rate, latency counted from when each operation was due),
//! with many non-blocking connections on few threads, on the kernel's TCP or (`--dpdk`)
//! on the appliance's own DPDK + smoltcp data path ([`net`]).
//!
//! The TLS client is libssl (OpenSSL 3), the reference other tools use, or
//! (`--engine own`) the TLS 1.3 client role of the appliance's own engine, cheaper per
//! handshake so that one client core can load several server cores; its cheapenings
//! are explicit flags ([`own`]).
//!
//! What this module must not do: loop without a bound (every run ends at `--duration`
//! or `--count`, every operation at `--timeout`), or report a number it did not count.

pub mod args;
pub mod engine;
pub mod net;
pub mod own;
pub mod plot;
pub mod report;
pub mod run;
