//! The whole server engine fed from one input, jobs run inline, with OpenSSL's
//! randomness made deterministic (`appliance_fuzz::det_rand`): the server answers a
//! recorded client flight with the same bytes in every run, so the seeds that
//! `tls_server_seeds` records (whole TLS 1.3 handshakes, resumptions, application data,
//! KeyUpdate, close_notify) take the fuzzer past the first flight into the encrypted
//! states. The connection sits on an SNI router over two configurations, so the choice
//! is fuzzed too.
#![no_main]
use appliance_fuzz::{det_rand, server};
use libfuzzer_sys::fuzz_target;
use tls::ServerConn;

fuzz_target!(|data: &[u8]| {
    let router = server::router();
    det_rand::reset(server::CONNECTION_SEED);
    let mut c = ServerConn::with_router(router, 0);
    for piece in data.chunks(300) {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = c.read_tls(rest);
            rest = &rest[n..];
            let _ = c.process();
            while let Some(j) = c.take_job() {
                let _ = c.complete(crypto_offload::run(j));
            }
            let out = c.pending_tls().len();
            c.consume_tls(out);
            let p = c.plaintext().len();
            c.consume_plaintext(p);
            if n == 0 {
                break;
            }
        }
    }
});
