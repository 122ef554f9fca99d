//! Deterministic randomness for OpenSSL, so that the whole TLS engine can be fuzzed past
//! its first flight (what s2n-tls and rustls do with their own test RNGs).
//!
//! OpenSSL 3.0 still honours a legacy `RAND_METHOD`: `RAND_bytes_ex` and
//! `RAND_priv_bytes_ex` ask it first, and every draw libcrypto and its default provider
//! make (key generation, ECDSA nonces, PSS salts) goes through those; so does the
//! engine's own `random()` and, through it, ML-KEM's seeds. With this method installed,
//! the server's answer to a recorded client flight is the same bytes in every run, so
//! a recorded handshake stays a valid input and the fuzzer mutates from deep inside it.
//!
//! Two streams, the server's (the default) and the client's ([`as_client`]), so the
//! server draws the same bytes whether or not a client runs beside it: the recorder
//! runs one, the fuzz target does not.

use std::cell::Cell;
use std::os::raw::{c_double, c_int, c_void};
use std::sync::Once;

#[repr(C)]
struct RandMethod {
    seed: Option<unsafe extern "C" fn(*const c_void, c_int) -> c_int>,
    bytes: Option<unsafe extern "C" fn(*mut u8, c_int) -> c_int>,
    cleanup: Option<unsafe extern "C" fn()>,
    add: Option<unsafe extern "C" fn(*const c_void, c_int, c_double) -> c_int>,
    pseudorand: Option<unsafe extern "C" fn(*mut u8, c_int) -> c_int>,
    status: Option<unsafe extern "C" fn() -> c_int>,
}

extern "C" {
    // libcrypto's (deprecated in 3.0, still present in Debian's build).
    fn RAND_set_rand_method(meth: *const RandMethod) -> c_int;
}

thread_local! {
    /// splitmix64 states: [server, client].
    static STATE: Cell<[u64; 2]> = const { Cell::new([0, 0]) };
    static CLIENT: Cell<bool> = const { Cell::new(false) };
}

fn next() -> u64 {
    let which = usize::from(CLIENT.with(Cell::get));
    STATE.with(|s| {
        let mut st = s.get();
        st[which] = st[which].wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(st);
        let mut z = st[which];
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

unsafe extern "C" fn bytes(buf: *mut u8, num: c_int) -> c_int {
    if buf.is_null() || num < 0 {
        return 0;
    }
    // SAFETY: OpenSSL hands a buffer of `num` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, num as usize) };
    for chunk in out.chunks_mut(8) {
        let v = next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    1
}

unsafe extern "C" fn seed(_: *const c_void, _: c_int) -> c_int {
    1
}

unsafe extern "C" fn add(_: *const c_void, _: c_int, _: c_double) -> c_int {
    1
}

unsafe extern "C" fn status() -> c_int {
    1
}

static METHOD: RandMethod = RandMethod {
    seed: Some(seed),
    bytes: Some(bytes),
    cleanup: None,
    add: Some(add),
    pseudorand: Some(bytes),
    status: Some(status),
};

/// Installs the method (once per process).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        openssl::init();
        // SAFETY: METHOD lives for the whole process.
        let ok = unsafe { RAND_set_rand_method(&METHOD) };
        assert_eq!(ok, 1, "RAND_set_rand_method");
    });
}

/// Starts both streams again from `seed`; the server's is current.
pub fn reset(seed: u64) {
    install();
    STATE.with(|s| s.set([seed, seed ^ 0x636c_6965_6e74])); // "client"
    CLIENT.with(|c| c.set(false));
}

/// Runs `f` drawing from the client's stream.
pub fn as_client<R>(f: impl FnOnce() -> R) -> R {
    CLIENT.with(|c| c.set(true));
    let r = f();
    CLIENT.with(|c| c.set(false));
    r
}
