//! Load and benchmark helpers: `httpload` (plain HTTP/1.1 load for the L4 proxy). The TLS
//! load generator `loadgen` belongs here too and is not built yet (issue 6).
