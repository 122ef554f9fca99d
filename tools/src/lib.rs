//! Load and benchmark helpers: `loadgen` (TLS handshakes, requests and bulk transfer
//! against any TLS server; [`loadgen`]) and `httpload` (plain HTTP/1.1 load for the L4
//! proxy), and the client side of `socks5` vservers ([`socks_client`]) that `tlsocks`
//! and `dgramload` share. Both bound every loop by a count and a time. This crate measures servers; it
//! must not hold appliance logic.

pub mod loadgen;
pub mod socks_client;
