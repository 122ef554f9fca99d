//! The byte formats of the appliance's backend side, each with a parser that returns
//! errors and never panics: HTTP/1.1 response framing ([`http1`]: where a response in
//! a stream ends; also what loadgen, httpload and the health checks read responses
//! with, so the project has one HTTP parser) and the PROXY protocol v2 header
//! ([`proxy_v2`]).
//!
//! What it must not do: buffer bodies, rewrite bytes, or grow without bound.

pub mod http1;
pub mod proxy_v2;
