//! Crypto devices: OpenSSL 3 providers loaded by name and legacy ENGINEs by id, and a
//! report of which one runs each operation the jobs use.
//!
//! Routing is OpenSSL's own: an ENGINE made the default for what it implements
//! (`ENGINE_set_default`) takes those algorithms; a provider other than `default` (an
//! accelerator's, such as QAT's) is preferred through the default property query
//! `?provider=NAME`, so an algorithm it lacks falls back to the default provider.
//! `default` is always loaded as that fallback, except when `fips` is asked for: then
//! only the listed providers run anything. Loading is process-wide and happens once, at
//! start-up, before any worker or poll-mode core runs a job.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::ptr;

use openssl::provider::Provider;
use openssl_sys::{ENGINE, EVP_CIPHER, EVP_MD, EVP_SIGNATURE, OSSL_LIB_CTX, OSSL_PROVIDER};

/// What OpenSSL says on failure, with the name of what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    /// `provider` or `engine`, and its position in the list it came from.
    pub what: &'static str,
    pub index: usize,
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OpenSSL {} {:?} failed to start: {}",
            self.what, self.name, self.reason
        )
    }
}

impl std::error::Error for DeviceError {}

/// One operation the jobs use and the device that runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub operation: &'static str,
    /// `provider NAME`, `engine ID`, or `unavailable`.
    pub device: String,
}

enum Keyexch {}

extern "C" {
    fn OSSL_PROVIDER_get0_name(p: *const OSSL_PROVIDER) -> *const c_char;
    fn EVP_CIPHER_get0_provider(c: *const EVP_CIPHER) -> *const OSSL_PROVIDER;
    fn EVP_MD_get0_provider(m: *const EVP_MD) -> *const OSSL_PROVIDER;
    fn EVP_SIGNATURE_get0_provider(s: *const EVP_SIGNATURE) -> *const OSSL_PROVIDER;
    fn EVP_SIGNATURE_free(s: *mut EVP_SIGNATURE);
    fn EVP_KEYEXCH_fetch(
        ctx: *mut OSSL_LIB_CTX,
        alg: *const c_char,
        props: *const c_char,
    ) -> *mut Keyexch;
    fn EVP_KEYEXCH_get0_provider(k: *const Keyexch) -> *const OSSL_PROVIDER;
    fn EVP_KEYEXCH_free(k: *mut Keyexch);
    fn EVP_set_default_properties(ctx: *mut OSSL_LIB_CTX, props: *const c_char) -> c_int;
    fn ENGINE_by_id(id: *const c_char) -> *mut ENGINE;
    fn ENGINE_init(e: *mut ENGINE) -> c_int;
    fn ENGINE_finish(e: *mut ENGINE) -> c_int;
    fn ENGINE_free(e: *mut ENGINE) -> c_int;
    fn ENGINE_set_default(e: *mut ENGINE, flags: c_uint) -> c_int;
    fn ENGINE_get_id(e: *const ENGINE) -> *const c_char;
    fn ENGINE_get_cipher_engine(nid: c_int) -> *mut ENGINE;
    fn ENGINE_get_digest_engine(nid: c_int) -> *mut ENGINE;
}

const ENGINE_METHOD_ALL: c_uint = 0xffff;

/// An initialised engine (a functional reference, released on drop).
struct Engine(*mut ENGINE);

// SAFETY: an initialised ENGINE is used by OpenSSL from any thread; we only finish it.
unsafe impl Send for Engine {}
unsafe impl Sync for Engine {}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: self.0 came from ENGINE_by_id and ENGINE_init succeeded on it.
        unsafe {
            ENGINE_finish(self.0);
            ENGINE_free(self.0);
        }
    }
}

/// The providers and engines loaded; they stay loaded while this lives.
pub struct Devices {
    providers: Vec<(String, Provider)>,
    engines: Vec<(String, Engine)>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("providers", &self.providers().collect::<Vec<_>>())
            .field("engines", &self.engines().collect::<Vec<_>>())
            .finish()
    }
}

/// OpenSSL's reasons for the errors queued on this thread (and clears them).
fn openssl_errors() -> String {
    reasons(&openssl::error::ErrorStack::get())
}

fn reasons(e: &openssl::error::ErrorStack) -> String {
    let s = e
        .errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown reason").to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if s.is_empty() {
        "no reason given".into()
    } else {
        s
    }
}

impl Devices {
    /// Loads `providers` (by name) and `engines` (by id, each made the default for
    /// what it implements). The first failure is an error naming it.
    pub fn load(providers: &[String], engines: &[String]) -> Result<Devices, DeviceError> {
        let mut d = Devices {
            providers: Vec::new(),
            engines: Vec::new(),
        };
        let mut names: Vec<&str> = providers.iter().map(String::as_str).collect();
        if !names.contains(&"fips") && !names.contains(&"default") {
            names.push("default");
        }
        for (index, name) in names.iter().enumerate() {
            let p = Provider::load(None, name).map_err(|e| DeviceError {
                what: "provider",
                index,
                name: name.to_string(),
                reason: reasons(&e),
            })?;
            d.providers.push((name.to_string(), p));
        }
        if let Some(accel) = names.iter().find(|n| !matches!(**n, "default" | "fips")) {
            let props = CString::new(format!("?provider={accel}")).expect("no NUL in a name");
            // SAFETY: a NUL-terminated string; NULL is the default library context.
            if unsafe { EVP_set_default_properties(ptr::null_mut(), props.as_ptr()) } != 1 {
                return Err(DeviceError {
                    what: "provider",
                    index: 0,
                    name: accel.to_string(),
                    reason: format!("could not prefer it: {}", openssl_errors()),
                });
            }
        }
        for (index, id) in engines.iter().enumerate() {
            let fail = |reason: String| DeviceError {
                what: "engine",
                index,
                name: id.clone(),
                reason,
            };
            let cid = CString::new(id.as_str()).map_err(|_| fail("NUL in the id".into()))?;
            // SAFETY: a NUL-terminated id; the result is checked for NULL.
            let e = unsafe { ENGINE_by_id(cid.as_ptr()) };
            if e.is_null() {
                return Err(fail(openssl_errors()));
            }
            // SAFETY: e is a structural reference from ENGINE_by_id.
            if unsafe { ENGINE_init(e) } != 1 {
                let why = openssl_errors();
                // SAFETY: release the structural reference we hold.
                unsafe { ENGINE_free(e) };
                return Err(fail(why));
            }
            let engine = Engine(e);
            // SAFETY: an initialised engine.
            if unsafe { ENGINE_set_default(engine.0, ENGINE_METHOD_ALL) } != 1 {
                return Err(fail(format!(
                    "could not make it the default: {}",
                    openssl_errors()
                )));
            }
            d.engines.push((id.clone(), engine));
        }
        Ok(d)
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|(n, _)| n.as_str())
    }

    pub fn engines(&self) -> impl Iterator<Item = &str> {
        self.engines.iter().map(|(n, _)| n.as_str())
    }

    /// Which device runs each operation the jobs use, as OpenSSL resolves it now: the
    /// engine registered as the default for it, else the provider a fetch with the
    /// default properties picks.
    pub fn routes(&self) -> Vec<Route> {
        use openssl::nid::Nid;
        let mut out = Vec::new();
        let mut push = |operation: &'static str, engine: *mut ENGINE, provider: String| {
            let device = engine_name(engine).unwrap_or(provider);
            out.push(Route { operation, device });
        };
        // SAFETY (every call below): OpenSSL's own fetch, get0_provider and free
        // functions for one object type, used together as `provider_of` requires; the
        // ENGINE_get_* results are functional references that `engine_name` releases.
        unsafe {
            for (name, nid) in [
                ("AES-128-GCM", Nid::AES_128_GCM),
                ("AES-256-GCM", Nid::AES_256_GCM),
                ("ChaCha20-Poly1305", Nid::CHACHA20_POLY1305),
            ] {
                let p = provider_of(
                    name,
                    openssl_sys::EVP_CIPHER_fetch,
                    EVP_CIPHER_get0_provider,
                    openssl_sys::EVP_CIPHER_free,
                );
                push(name, ENGINE_get_cipher_engine(nid.as_raw()), p);
            }
            for (name, nid) in [("SHA256", Nid::SHA256), ("SHA384", Nid::SHA384)] {
                let p = provider_of(
                    name,
                    openssl_sys::EVP_MD_fetch,
                    EVP_MD_get0_provider,
                    openssl_sys::EVP_MD_free,
                );
                push(name, ENGINE_get_digest_engine(nid.as_raw()), p);
            }
            for name in ["X25519", "ECDH"] {
                let p = provider_of(
                    name,
                    EVP_KEYEXCH_fetch,
                    EVP_KEYEXCH_get0_provider,
                    EVP_KEYEXCH_free,
                );
                push(name, ptr::null_mut(), p);
            }
            for name in ["ECDSA", "RSA"] {
                let p = provider_of(
                    name,
                    openssl_sys::EVP_SIGNATURE_fetch,
                    EVP_SIGNATURE_get0_provider,
                    EVP_SIGNATURE_free,
                );
                push(name, ptr::null_mut(), p);
            }
        }
        // Fetch failures leave errors on the thread's queue; they are answers here.
        let _ = openssl::error::ErrorStack::get();
        out
    }
}

/// `engine ID` for a functional reference (released here), or `None` for NULL.
fn engine_name(e: *mut ENGINE) -> Option<String> {
    if e.is_null() {
        return None;
    }
    // SAFETY: a functional reference from ENGINE_get_*_engine; its id is a static string.
    let id = unsafe { CStr::from_ptr(ENGINE_get_id(e)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: release the functional reference.
    unsafe { ENGINE_finish(e) };
    Some(format!("engine {id}"))
}

/// `provider NAME` for the provider that a fetch of `name` with the default properties
/// picks, or `unavailable`.
///
/// # Safety
/// `fetch`, `get0` and `free` are OpenSSL's functions for one object type.
unsafe fn provider_of<T>(
    name: &str,
    fetch: unsafe extern "C" fn(*mut OSSL_LIB_CTX, *const c_char, *const c_char) -> *mut T,
    get0: unsafe extern "C" fn(*const T) -> *const OSSL_PROVIDER,
    free: unsafe extern "C" fn(*mut T),
) -> String {
    let n = CString::new(name).expect("no NUL in an algorithm name");
    let f = fetch(ptr::null_mut(), n.as_ptr(), ptr::null());
    if f.is_null() {
        return "unavailable".into();
    }
    let p = get0(f);
    let out = if p.is_null() {
        "unavailable".into()
    } else {
        format!(
            "provider {}",
            CStr::from_ptr(OSSL_PROVIDER_get0_name(p)).to_string_lossy()
        )
    };
    free(f);
    out
}
