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
//!
//! A [`Device`] is an accelerator beside the CPU: its providers load into an OpenSSL
//! library context of its own, with the same preference and fallback rules, and the
//! pool's workers for that device make it their thread's default context
//! ([`Device::enter`]), so every fetch a job makes on them resolves there. Its workers
//! have queues of their own and are scheduled with the CPU workers by expected wait
//! (see [`crate::pool`]). Legacy ENGINEs are process-wide; a device has none.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::ptr;

use foreign_types::ForeignType;
use openssl::lib_ctx::LibCtx;
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
    /// Where the fetch was resolved: `process` (the default library context, which
    /// the poll-mode cores and CPU workers use) or a [`Device`]'s name.
    pub context: String,
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
    fn OSSL_LIB_CTX_set0_default(ctx: *mut OSSL_LIB_CTX) -> *mut OSSL_LIB_CTX;
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
            providers: load_providers(None, providers, true)?,
            engines: Vec::new(),
        };
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
        routes_in(ptr::null_mut(), "process")
    }
}

/// Loads `providers` into `ctx` (None: the process's default context), adding `default`
/// as the fallback unless `fips` or `default` is listed (and `fallback` is on), and
/// prefers the first one that is neither. The first failure is an error naming it.
fn load_providers(
    ctx: Option<&LibCtx>,
    providers: &[String],
    fallback: bool,
) -> Result<Vec<(String, Provider)>, DeviceError> {
    let mut names: Vec<&str> = providers.iter().map(String::as_str).collect();
    if fallback && !names.contains(&"fips") && !names.contains(&"default") {
        names.push("default");
    }
    let mut loaded = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let p = Provider::load(ctx.map(|c| &**c), name).map_err(|e| DeviceError {
            what: "provider",
            index,
            name: name.to_string(),
            reason: reasons(&e),
        })?;
        loaded.push((name.to_string(), p));
    }
    if let Some(accel) = names.iter().find(|n| !matches!(**n, "default" | "fips")) {
        let props = CString::new(format!("?provider={accel}")).map_err(|_| DeviceError {
            what: "provider",
            index: 0,
            name: accel.to_string(),
            reason: "NUL in the name".into(),
        })?;
        let raw = ctx.map_or(ptr::null_mut(), |c| c.as_ptr());
        // SAFETY: a NUL-terminated string; raw is NULL (the default library context)
        // or a context that `ctx` keeps alive.
        if unsafe { EVP_set_default_properties(raw, props.as_ptr()) } != 1 {
            return Err(DeviceError {
                what: "provider",
                index: 0,
                name: accel.to_string(),
                reason: format!("could not prefer it: {}", openssl_errors()),
            });
        }
    }
    Ok(loaded)
}

/// A crypto device beside the CPU workers (an accelerator's provider, such as QAT's):
/// its providers in a library context of its own. Its workers run their jobs there.
pub struct Device {
    name: String,
    // Declared before the context: providers are unloaded before it is freed.
    providers: Vec<(String, Provider)>,
    ctx: LibCtx,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("providers", &self.providers().collect::<Vec<_>>())
            .finish()
    }
}

impl Device {
    /// A device named `name` running `providers` (by name, the first other than
    /// `default`/`fips` preferred; `default` added as the fallback unless `fips` is
    /// listed). A provider that fails to load is an error naming it.
    pub fn load(name: &str, providers: &[String]) -> Result<Device, DeviceError> {
        Device::load_with(name, providers, true)
    }

    /// [`Device::load`], with the `default` fallback only if `fallback` (tests show
    /// with it off that a device's jobs really resolve in its own context).
    pub fn load_with(
        name: &str,
        providers: &[String],
        fallback: bool,
    ) -> Result<Device, DeviceError> {
        let ctx = LibCtx::new().map_err(|e| DeviceError {
            what: "device",
            index: 0,
            name: name.to_string(),
            reason: reasons(&e),
        })?;
        let providers = load_providers(Some(&ctx), providers, fallback)?;
        Ok(Device {
            name: name.to_string(),
            providers,
            ctx,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|(n, _)| n.as_str())
    }

    /// Makes this device's context the calling thread's default: every fetch the
    /// thread makes without naming a context (all of [`crate::prim`]'s) resolves in
    /// it from now on. For a worker thread of this device; the device must outlive it.
    pub fn enter(&self) {
        // SAFETY: a live context, kept alive by self (the pool holds the device for as
        // long as its workers run); the previous default it returns needs no release.
        unsafe { OSSL_LIB_CTX_set0_default(self.ctx.as_ptr()) };
    }

    /// Which provider runs each operation the jobs use on this device.
    pub fn routes(&self) -> Vec<Route> {
        routes_in(self.ctx.as_ptr(), &self.name)
    }
}

/// Which device runs each operation the jobs use, resolved in `ctx` (NULL: the
/// process's default context, where ENGINEs registered as defaults come first).
fn routes_in(ctx: *mut OSSL_LIB_CTX, context: &str) -> Vec<Route> {
    use openssl::nid::Nid;
    let mut out = Vec::new();
    let mut push = |operation: &'static str, engine: *mut ENGINE, provider: String| {
        // ENGINEs are process-wide and take part only in the default context
        // (engine_name releases the reference either way).
        let device = match engine_name(engine) {
            Some(e) if ctx.is_null() => e,
            _ => provider,
        };
        out.push(Route {
            context: context.to_string(),
            operation,
            device,
        });
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
                ctx,
                name,
                openssl_sys::EVP_CIPHER_fetch,
                EVP_CIPHER_get0_provider,
                openssl_sys::EVP_CIPHER_free,
            );
            push(name, ENGINE_get_cipher_engine(nid.as_raw()), p);
        }
        for (name, nid) in [("SHA256", Nid::SHA256), ("SHA384", Nid::SHA384)] {
            let p = provider_of(
                ctx,
                name,
                openssl_sys::EVP_MD_fetch,
                EVP_MD_get0_provider,
                openssl_sys::EVP_MD_free,
            );
            push(name, ENGINE_get_digest_engine(nid.as_raw()), p);
        }
        for name in ["X25519", "ECDH"] {
            let p = provider_of(
                ctx,
                name,
                EVP_KEYEXCH_fetch,
                EVP_KEYEXCH_get0_provider,
                EVP_KEYEXCH_free,
            );
            push(name, ptr::null_mut(), p);
        }
        for name in ["ECDSA", "RSA"] {
            let p = provider_of(
                ctx,
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

/// `engine ID` for a functional reference (released here), or `None` for NULL.
/// Whether the calling thread's digest `name` (e.g. "SHA256") runs on OpenSSL's
/// built-in implementation: fetched from the `default` provider in the thread's
/// library context, and no ENGINE registered as the default for it. Then
/// [`crate::prim`] may call the low-level SHA-2 functions, the same code without a
/// provider dispatch per use; otherwise (fips, an accelerator's provider, an ENGINE)
/// every digest goes through EVP to where it is routed.
pub(crate) fn digest_is_builtin(name: &str, nid: openssl::nid::Nid) -> bool {
    // SAFETY: OpenSSL's fetch, get0_provider and free for EVP_MD, as provider_of
    // requires; NULL is the thread's default library context.
    let provider = unsafe {
        provider_of(
            ptr::null_mut(),
            name,
            openssl_sys::EVP_MD_fetch,
            EVP_MD_get0_provider,
            openssl_sys::EVP_MD_free,
        )
    };
    // SAFETY: a NID; the functional reference it may return is released by engine_name.
    let engine = engine_name(unsafe { ENGINE_get_digest_engine(nid.as_raw()) });
    provider == "provider default" && engine.is_none()
}

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

/// `provider NAME` for the provider that a fetch of `name` in `ctx` with its default
/// properties picks, or `unavailable`.
///
/// # Safety
/// `fetch`, `get0` and `free` are OpenSSL's functions for one object type; `ctx` is
/// NULL or a live library context.
unsafe fn provider_of<T>(
    ctx: *mut OSSL_LIB_CTX,
    name: &str,
    fetch: unsafe extern "C" fn(*mut OSSL_LIB_CTX, *const c_char, *const c_char) -> *mut T,
    get0: unsafe extern "C" fn(*const T) -> *const OSSL_PROVIDER,
    free: unsafe extern "C" fn(*mut T),
) -> String {
    let n = CString::new(name).expect("no NUL in an algorithm name");
    let f = fetch(ctx, n.as_ptr(), ptr::null());
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
