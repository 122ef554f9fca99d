//! The primitives, over OpenSSL's libcrypto. Everything OpenSSL-typed stays in here;
//! what leaves is opaque ([`SigningKey`], [`EphemeralKey`], [`AeadKey`],
//! [`TranscriptHash`]) or plain bytes wiped on drop ([`Secret`]).
//!
//! Algorithm objects are chosen by enum, never looked up by name on a hot path.

use std::cell::OnceCell;
use std::fmt;

use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::hash::{Hasher, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::x509::X509;
use zeroize::{Zeroize, Zeroizing};

/// What went wrong inside a primitive. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The peer's public value is not a valid point / key for the group.
    BadPeerKey,
    /// An AEAD tag did not verify.
    BadTag,
    /// OpenSSL reported an internal failure (message from its error stack).
    Library(String),
    /// A key or certificate could not be loaded.
    Load(String),
    /// The peer's proof of a shared secret (a TLS 1.3 PSK binder) did not verify.
    BadBinder,
    /// The peer's certificate chain did not verify (OpenSSL's reason); `unknown_ca`
    /// when no trusted issuer was found.
    BadCertificate { reason: String, unknown_ca: bool },
    /// The peer's signature (CertificateVerify) did not verify.
    BadSignature,
    /// The peer's Finished does not match the transcript (the client role checking a
    /// server's).
    BadFinished,
    /// The job could not be run: its worker failed (the pool replaces it).
    Unavailable(String),
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::BadPeerKey => f.write_str("peer public key is invalid for the group"),
            CryptoError::BadTag => f.write_str("record authentication failed"),
            CryptoError::Library(m) => write!(f, "libcrypto: {m}"),
            CryptoError::Load(m) => f.write_str(m),
            CryptoError::BadBinder => f.write_str("PSK binder does not verify"),
            CryptoError::BadCertificate { reason, .. } => {
                write!(f, "peer certificate: {reason}")
            }
            CryptoError::BadSignature => f.write_str("peer signature does not verify"),
            CryptoError::BadFinished => f.write_str("peer Finished does not match the transcript"),
            CryptoError::Unavailable(m) => write!(f, "crypto unavailable: {m}"),
        }
    }
}

impl std::error::Error for CryptoError {}

impl From<openssl::error::ErrorStack> for CryptoError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        CryptoError::Library(e.to_string())
    }
}

extern "C" {
    /// libcrypto's wipe: a `memset` through a volatile function pointer, which no
    /// compiler may remove.
    fn OPENSSL_cleanse(ptr: *mut std::ffi::c_void, len: usize);
}

/// Wipes `len` bytes at `p` with `OPENSSL_cleanse`. The `zeroize` crate stores one
/// volatile byte at a time (about a cycle a byte); a handshake drops dozens of hash
/// states and HMAC pads, about 2 µs of a TLS 1.3 handshake that way.
///
/// # Safety
/// `p` must be valid for writes of `len` bytes, and nothing may rely on the bytes
/// afterwards being anything but zeros.
unsafe fn cleanse_raw(p: *mut u8, len: usize) {
    if len > 0 {
        OPENSSL_cleanse(p.cast(), len);
    }
}

/// Wipes `b` (see [`cleanse_raw`]).
pub fn cleanse(b: &mut [u8]) {
    // SAFETY: a live, exclusively borrowed slice.
    unsafe { cleanse_raw(b.as_mut_ptr(), b.len()) }
}

/// A stack buffer of secret bytes, wiped with [`cleanse`] when dropped.
pub struct Wiped<const N: usize>([u8; N]);

impl<const N: usize> Default for Wiped<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Wiped<N> {
    pub fn new() -> Self {
        Wiped([0; N])
    }
}

impl<const N: usize> std::ops::Deref for Wiped<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> std::ops::DerefMut for Wiped<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }
}

impl<const N: usize> Drop for Wiped<N> {
    fn drop(&mut self) {
        cleanse(&mut self.0);
    }
}

/// Secret bytes (premaster, master, traffic secrets, verify data): wiped on drop, spare
/// capacity included, and their `Debug` never prints them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        // SAFETY: the vector's whole allocation (length and spare capacity) is ours
        // to write; it is freed right after.
        unsafe { cleanse_raw(self.0.as_mut_ptr(), self.0.capacity()) }
    }
}

impl Secret {
    pub fn new(v: Vec<u8>) -> Self {
        Secret(v)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    /// Append bytes. Growing past the capacity would leave an unwiped copy behind, so
    /// callers size the secret with [`Secret::new`]`(Vec::with_capacity(..))` first.
    pub fn extend(&mut self, b: &[u8]) {
        debug_assert!(self.0.capacity() - self.0.len() >= b.len());
        self.0.extend_from_slice(b);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Fill `buf` from OpenSSL's CSPRNG.
///
/// Small requests (a hello's random, a session ID, a ticket's nonce, a key's seed) are
/// served from a per-thread buffer of DRBG output refilled [`RANDOM_REFILL`] bytes at a
/// time: OpenSSL 3.0's `RAND_bytes` costs about 0.6 µs per call whatever its size
/// (the DRBG's lock, its parameters and its derivation function), two of them per
/// resumed TLS 1.2 handshake. The bytes are the DRBG's own, in order; each is wiped
/// from the buffer as it is handed out and the rest when the thread ends, so the buffer
/// never holds an output already used; a forked child refills before its first use
/// (parent and child must not share outputs).
pub fn random(buf: &mut [u8]) -> Result<(), CryptoError> {
    if buf.len() > RANDOM_REFILL / 8 {
        openssl::rand::rand_bytes(buf)?;
        return Ok(());
    }
    // A thread-local destructor asking after the buffer is gone gets the DRBG itself.
    match RANDOM_POOL.try_with(|p| p.borrow_mut().take(buf)) {
        Ok(r) => r,
        Err(_) => {
            openssl::rand::rand_bytes(buf)?;
            Ok(())
        }
    }
}

/// How many bytes of DRBG output one refill of a thread's random buffer takes.
pub const RANDOM_REFILL: usize = 2048;

thread_local! {
    static RANDOM_POOL: std::cell::RefCell<RandomPool> = std::cell::RefCell::new(RandomPool {
        bytes: Wiped::new(),
        next: RANDOM_REFILL,
        forks: 0,
    });
}

/// Forks seen in this process (a child's handler adds one), so a child's threads
/// never hand out bytes its parent buffered.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// One thread's buffered DRBG output: `bytes[next..]` is unused, the rest is zeros.
struct RandomPool {
    bytes: Wiped<RANDOM_REFILL>,
    next: usize,
    /// [`FORKS`] when the buffer was filled.
    forks: u64,
}

impl RandomPool {
    fn take(&mut self, out: &mut [u8]) -> Result<(), CryptoError> {
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        AT_FORK.call_once(|| {
            // SAFETY: registers a handler that only bumps an atomic (async-signal-safe).
            unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
        });
        let forks = FORKS.load(std::sync::atomic::Ordering::Relaxed);
        if forks != self.forks || RANDOM_REFILL - self.next < out.len() {
            // Used bytes are zeros already; unused ones are overwritten (or, if the
            // DRBG fails, left unreachable until the next refill or the thread's end).
            self.next = RANDOM_REFILL;
            openssl::rand::rand_bytes(&mut self.bytes[..])?;
            self.next = 0;
            self.forks = forks;
        }
        let got = &mut self.bytes[self.next..self.next + out.len()];
        out.copy_from_slice(got);
        cleanse(got);
        self.next += out.len();
        Ok(())
    }
}

/// Constant-time equality (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

// ---------------------------------------------------------------------------------
// Hashes, HMAC, HKDF, the TLS 1.2 PRF

/// The handshake hash of a cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
}

impl HashAlg {
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
        }
    }
    fn block(self) -> usize {
        match self {
            HashAlg::Sha256 => 64,
            HashAlg::Sha384 => 128,
        }
    }
    pub(crate) fn md(self) -> MessageDigest {
        match self {
            HashAlg::Sha256 => MessageDigest::sha256(),
            HashAlg::Sha384 => MessageDigest::sha384(),
        }
    }
    /// The hash of no bytes (the key schedule's `Derive-Secret(., "derived", "")` and
    /// binder-key context), a constant: no digest to run per handshake.
    pub fn empty_hash(self) -> &'static [u8] {
        const SHA256: [u8; 32] = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        const SHA384: [u8; 48] = [
            0x38, 0xb0, 0x60, 0xa7, 0x51, 0xac, 0x96, 0x38, 0x4c, 0xd9, 0x32, 0x7e, 0xb1, 0xb1,
            0xe3, 0x6a, 0x21, 0xfd, 0xb7, 0x11, 0x14, 0xbe, 0x07, 0x43, 0x4c, 0x0c, 0xc7, 0xbf,
            0x63, 0xf6, 0xe1, 0xda, 0x27, 0x4e, 0xde, 0xbf, 0xe7, 0x6f, 0x65, 0xfb, 0xd5, 0x1a,
            0xd2, 0xf1, 0x48, 0x98, 0xb9, 0x5b,
        ];
        match self {
            HashAlg::Sha256 => &SHA256,
            HashAlg::Sha384 => &SHA384,
        }
    }
    /// Whether this thread's digest of this hash runs on OpenSSL's built-in code
    /// (see [`Sha2`]); asked once per thread.
    fn builtin(self) -> bool {
        thread_local! {
            static BUILTIN: [OnceCell<bool>; 2] = const { [OnceCell::new(), OnceCell::new()] };
        }
        let (i, name, nid) = match self {
            HashAlg::Sha256 => (0, "SHA256", Nid::SHA256),
            HashAlg::Sha384 => (1, "SHA384", Nid::SHA384),
        };
        BUILTIN.with(|b| *b[i].get_or_init(|| crate::device::digest_is_builtin(name, nid)))
    }
}

/// SHA-2 for the key schedule and the transcript, on this thread's route:
/// OpenSSL's low-level functions (`SHA256_Init` ...) when the digest runs on the
/// built-in `default` provider (the same code, without a fetch, a lock and an
/// allocation per use: a snapshot is a copy of the state), EVP otherwise (fips, an
/// accelerator, an ENGINE: see [`crate::device::digest_is_builtin`]). The state is
/// wiped when dropped: in HMAC it is derived from the key.
#[derive(Clone)]
enum Sha2 {
    S256(openssl_sys::SHA256_CTX),
    S384(openssl_sys::SHA512_CTX),
    Evp(Hasher),
}

impl Sha2 {
    fn new(alg: HashAlg) -> Result<Self, CryptoError> {
        if !alg.builtin() {
            return Ok(Sha2::Evp(Hasher::new(alg.md())?));
        }
        // SAFETY: the Init functions fill the whole context.
        unsafe {
            Ok(match alg {
                HashAlg::Sha256 => {
                    let mut c = std::mem::MaybeUninit::uninit();
                    openssl_sys::SHA256_Init(c.as_mut_ptr());
                    Sha2::S256(c.assume_init())
                }
                HashAlg::Sha384 => {
                    let mut c = std::mem::MaybeUninit::uninit();
                    openssl_sys::SHA384_Init(c.as_mut_ptr());
                    Sha2::S384(c.assume_init())
                }
            })
        }
    }

    fn update(&mut self, d: &[u8]) -> Result<(), CryptoError> {
        // SAFETY: an initialised context and a valid buffer.
        unsafe {
            match self {
                Sha2::S256(c) => {
                    openssl_sys::SHA256_Update(c, d.as_ptr().cast(), d.len());
                }
                Sha2::S384(c) => {
                    openssl_sys::SHA384_Update(c, d.as_ptr().cast(), d.len());
                }
                Sha2::Evp(h) => h.update(d)?,
            }
        }
        Ok(())
    }

    /// The digest into `out`; its length. The state is spent.
    fn finish(&mut self, out: &mut [u8; 48]) -> Result<usize, CryptoError> {
        // SAFETY: an initialised context; `out` holds either digest.
        unsafe {
            match self {
                Sha2::S256(c) => {
                    openssl_sys::SHA256_Final(out.as_mut_ptr(), c);
                    Ok(32)
                }
                Sha2::S384(c) => {
                    openssl_sys::SHA384_Final(out.as_mut_ptr(), c);
                    Ok(48)
                }
                Sha2::Evp(h) => {
                    let d = h.finish()?;
                    out[..d.len()].copy_from_slice(&d);
                    Ok(d.len())
                }
            }
        }
    }
}

impl Drop for Sha2 {
    fn drop(&mut self) {
        /// The bytes of a plain C struct, to wipe.
        fn wipe<T: Clone>(c: &mut T) {
            // SAFETY: T is a C struct of integers (no padding invariants, no pointers
            // that must stay valid); it is not read again.
            unsafe { cleanse_raw((c as *mut T).cast::<u8>(), std::mem::size_of::<T>()) }
        }
        match self {
            Sha2::S256(c) => wipe(c),
            Sha2::S384(c) => wipe(c),
            // EVP_MD_CTX_free cleanses the provider's state.
            Sha2::Evp(_) => {}
        }
    }
}

/// A running hash over transcript bytes. Snapshots ([`TranscriptHash::current`]) copy
/// the state, so every byte is hashed exactly once however many prefixes are needed.
#[derive(Clone)]
pub struct TranscriptHash {
    alg: HashAlg,
    h: Sha2,
    /// Bytes fed so far.
    pub bytes: u64,
}

impl fmt::Debug for TranscriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TranscriptHash({:?}, {} bytes)", self.alg, self.bytes)
    }
}

impl TranscriptHash {
    pub fn new(alg: HashAlg) -> Result<Self, CryptoError> {
        Ok(TranscriptHash {
            alg,
            h: Sha2::new(alg)?,
            bytes: 0,
        })
    }
    pub fn update(&mut self, data: &[u8]) -> Result<(), CryptoError> {
        self.bytes += data.len() as u64;
        self.h.update(data)?;
        Ok(())
    }
    /// The hash of everything fed so far; the running state carries on.
    pub fn current(&self) -> Result<Vec<u8>, CryptoError> {
        let mut c = self.h.clone();
        let mut out = [0u8; 48];
        let n = c.finish(&mut out)?;
        Ok(out[..n].to_vec())
    }
    pub fn alg(&self) -> HashAlg {
        self.alg
    }
}

/// One-shot hash.
pub fn hash(alg: HashAlg, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut h = Sha2::new(alg)?;
    h.update(data)?;
    let mut out = [0u8; 48];
    let n = h.finish(&mut out)?;
    Ok(out[..n].to_vec())
}

/// HMAC (RFC 2104) over the chosen hash; `parts` are concatenated.
pub fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Result<Secret, CryptoError> {
    HmacKey::new(alg, key)?.mac(parts)
}

/// An HMAC key made ready once: the hash states after the key's inner and outer pads.
/// Each MAC under it then starts from copies of those states, so a key that signs
/// several messages (the TLS 1.2 PRF's blocks, HKDF-Expand's) pays its two pad
/// compressions once. On the built-in route a MAC is two state copies and two final
/// compressions on the stack; the states are wiped when dropped (they derive from the
/// key).
pub struct HmacKey {
    inner: Sha2,
    outer: Sha2,
}

impl HmacKey {
    pub fn new(alg: HashAlg, key: &[u8]) -> Result<Self, CryptoError> {
        let block = alg.block();
        let mut k = Wiped::<128>::new();
        if key.len() > block {
            let mut h = Sha2::new(alg)?;
            h.update(key)?;
            let mut d = Wiped::<48>::new();
            let n = h.finish(&mut d)?;
            k[..n].copy_from_slice(&d[..n]);
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = Wiped::<128>::new();
        for (p, b) in pad[..block].iter_mut().zip(k.iter()) {
            *p = b ^ 0x36;
        }
        let mut inner = Sha2::new(alg)?;
        inner.update(&pad[..block])?;
        for (p, b) in pad[..block].iter_mut().zip(k.iter()) {
            *p = b ^ 0x5c;
        }
        let mut outer = Sha2::new(alg)?;
        outer.update(&pad[..block])?;
        Ok(HmacKey { inner, outer })
    }

    /// The MAC of `parts`, concatenated.
    pub fn mac(&self, parts: &[&[u8]]) -> Result<Secret, CryptoError> {
        let mut out = Wiped::<48>::new();
        let n = self.mac_into(parts, &mut out)?;
        Ok(Secret::new(out[..n].to_vec()))
    }

    /// The MAC of `parts` into `out` (no allocation); returns its length.
    pub fn mac_into(&self, parts: &[&[u8]], out: &mut [u8; 48]) -> Result<usize, CryptoError> {
        let mut inner = self.inner.clone();
        for p in parts {
            inner.update(p)?;
        }
        let mut ih = Wiped::<48>::new();
        let n = inner.finish(&mut ih)?;
        let mut outer = self.outer.clone();
        outer.update(&ih[..n])?;
        outer.finish(out)
    }
}

/// HKDF-Extract (RFC 5869).
pub fn hkdf_extract(alg: HashAlg, salt: &[u8], ikm: &[u8]) -> Result<Secret, CryptoError> {
    let zeros = [0u8; 48];
    let salt = if salt.is_empty() {
        &zeros[..alg.output_len()]
    } else {
        salt
    };
    hmac(alg, salt, &[ikm])
}

/// HKDF-Expand (RFC 5869).
pub fn hkdf_expand(
    alg: HashAlg,
    prk: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Secret, CryptoError> {
    let mut out = Vec::with_capacity(len);
    let mut t = Secret::default();
    let mut i = 1u8;
    let key = HmacKey::new(alg, prk)?;
    while out.len() < len {
        t = key.mac(&[t.bytes(), info, &[i]])?;
        let take = (len - out.len()).min(t.bytes().len());
        out.extend_from_slice(&t.bytes()[..take]);
        i = i
            .checked_add(1)
            .ok_or_else(|| CryptoError::Library("HKDF length".into()))?;
    }
    Ok(Secret::new(out))
}

// ---------------------------------------------------------------------------------
// AEAD

/// A record protection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadAlg {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// AEAD tag length of every supported algorithm.
pub const TAG_LEN: usize = 16;

impl AeadAlg {
    pub fn key_len(self) -> usize {
        match self {
            AeadAlg::Aes128Gcm => 16,
            AeadAlg::Aes256Gcm | AeadAlg::Chacha20Poly1305 => 32,
        }
    }
}

/// One direction's AEAD key, set up once; each record only sets a nonce. OpenSSL's
/// context by default; AWS-LC's `EVP_AEAD` with [`Primitives::AwsLc`] (a record there
/// costs no parameter lookups: OpenSSL 3.0 looks up the IV length by name for every
/// nonce it sets, and the tag through a control call, about 0.3 µs of a small record).
/// Key bytes are wiped on drop (both libraries wipe their contexts on free).
pub struct AeadKey {
    alg: AeadAlg,
    enc: bool,
    imp: AeadImpl,
}

enum AeadImpl {
    OpenSsl(openssl::cipher_ctx::CipherCtx),
    /// Boxed: record jobs carry keys by value, and OpenSSL's context is one pointer.
    AwsLc(Box<AwsLcAead>),
}

/// The key bytes are kept (wiped on drop) for [`AeadKey::try_clone`]: AWS-LC's contexts
/// cannot be copied.
struct AwsLcAead {
    key: aws_lc_rs::aead::LessSafeKey,
    bytes: Secret,
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeadKey({:?})", self.alg)
    }
}

impl AeadKey {
    /// A key for sealing (`enc`) or opening records, on the backend
    /// [`use_primitives`] chose.
    pub fn new(alg: AeadAlg, key: &[u8], enc: bool) -> Result<Self, CryptoError> {
        Self::new_with(alg, key, enc, primitives())
    }

    /// A key on the given backend.
    ///
    /// On OpenSSL the cipher is fetched once per thread (as the digests' route is
    /// decided once): a legacy `EVP_aes_128_gcm()` here would make OpenSSL 3 fetch it
    /// again on every init, four times per TLS 1.3 handshake. Per thread, because a
    /// device's worker resolves fetches in its device's library context.
    pub fn new_with(
        alg: AeadAlg,
        key: &[u8],
        enc: bool,
        p: Primitives,
    ) -> Result<Self, CryptoError> {
        if p == Primitives::AwsLc {
            use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_128_GCM, AES_256_GCM};
            let a = match alg {
                AeadAlg::Aes128Gcm => &AES_128_GCM,
                AeadAlg::Aes256Gcm => &AES_256_GCM,
                AeadAlg::Chacha20Poly1305 => &aws_lc_rs::aead::CHACHA20_POLY1305,
            };
            let k = LessSafeKey::new(UnboundKey::new(a, key).map_err(aws_lc)?);
            return Ok(AeadKey {
                alg,
                enc,
                imp: AeadImpl::AwsLc(Box::new(AwsLcAead {
                    key: k,
                    bytes: Secret::new(key.to_vec()),
                })),
            });
        }
        use openssl::cipher::Cipher;
        thread_local! {
            static FETCHED: [OnceCell<Cipher>; 3] =
                const { [OnceCell::new(), OnceCell::new(), OnceCell::new()] };
        }
        let (i, name) = match alg {
            AeadAlg::Aes128Gcm => (0, "AES-128-GCM"),
            AeadAlg::Aes256Gcm => (1, "AES-256-GCM"),
            AeadAlg::Chacha20Poly1305 => (2, "ChaCha20-Poly1305"),
        };
        FETCHED.with(|cells| {
            let c = match cells[i].get() {
                Some(c) => c,
                None => {
                    let c = Cipher::fetch(None, name, None)?;
                    cells[i].get_or_init(|| c)
                }
            };
            let mut ctx = openssl::cipher_ctx::CipherCtx::new()?;
            if enc {
                ctx.encrypt_init(Some(c), Some(key), None)?;
            } else {
                ctx.decrypt_init(Some(c), Some(key), None)?;
            }
            Ok(AeadKey {
                alg,
                enc,
                imp: AeadImpl::OpenSsl(ctx),
            })
        })
    }

    pub fn alg(&self) -> AeadAlg {
        self.alg
    }

    /// Made for sealing (`true`) or opening.
    pub fn is_sealing(&self) -> bool {
        self.enc
    }

    /// A second, independent context holding the same key (EVP_CIPHER_CTX_copy, or a
    /// new AWS-LC key): kept by the engine while the key itself is lent to a record
    /// job, so it can still seal an alert if the job is lost.
    pub fn try_clone(&self) -> Result<Self, CryptoError> {
        match &self.imp {
            AeadImpl::OpenSsl(c) => {
                let mut ctx = openssl::cipher_ctx::CipherCtx::new()?;
                ctx.copy(c)?;
                Ok(AeadKey {
                    alg: self.alg,
                    enc: self.enc,
                    imp: AeadImpl::OpenSsl(ctx),
                })
            }
            AeadImpl::AwsLc(a) => {
                Self::new_with(self.alg, a.bytes.bytes(), self.enc, Primitives::AwsLc)
            }
        }
    }

    /// Encrypt `buf` in place and write the tag.
    pub fn seal(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        debug_assert!(self.enc);
        match &mut self.imp {
            AeadImpl::OpenSsl(ctx) => {
                ctx.encrypt_init(None, None, Some(nonce))?;
                ctx.cipher_update(aad, None)?;
                ctx.cipher_update_inplace(buf, buf.len())?;
                ctx.cipher_final(&mut [])?;
                ctx.tag(tag)?;
            }
            AeadImpl::AwsLc(a) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                let t = a
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        buf,
                    )
                    .map_err(aws_lc)?;
                tag.copy_from_slice(t.as_ref());
            }
        }
        Ok(())
    }

    /// Decrypt `buf` in place after checking `tag`; on a bad tag `buf` holds garbage.
    pub fn open(
        &mut self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        debug_assert!(!self.enc);
        match &mut self.imp {
            AeadImpl::OpenSsl(ctx) => {
                ctx.decrypt_init(None, None, Some(nonce))?;
                ctx.set_tag(tag)?;
                ctx.cipher_update(aad, None)?;
                ctx.cipher_update_inplace(buf, buf.len())?;
                ctx.cipher_final(&mut []).map_err(|_| CryptoError::BadTag)?;
            }
            AeadImpl::AwsLc(a) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                a.key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        tag,
                        buf,
                    )
                    .map_err(|_| CryptoError::BadTag)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Key exchange

/// A key exchange group: (EC)DHE, or the post-quantum hybrid X25519MLKEM768
/// (draft-ietf-tls-ecdhe-mlkem: ML-KEM-768 from FIPS 203 beside X25519, the ML-KEM part
/// first in shares and in the shared secret). ML-KEM comes from `libcrux-ml-kem`
/// (formally verified, the implementation NSS ships); OpenSSL 3.0 has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    X25519,
    P256,
    P384,
    P521,
    X448,
    X25519MlKem768,
}

/// ML-KEM-768 sizes (FIPS 203).
const MLKEM768_EK: usize = 1184;
const MLKEM768_CT: usize = 1088;

impl Group {
    /// Length of the client's share on the wire (uncompressed points for the NIST
    /// curves; the ML-KEM encapsulation key and the X25519 value for the hybrid).
    pub fn public_len(self) -> usize {
        match self {
            Group::X25519 => 32,
            Group::P256 => 65,
            Group::P384 => 97,
            Group::P521 => 133,
            Group::X448 => 56,
            Group::X25519MlKem768 => MLKEM768_EK + 32,
        }
    }

    /// Length of the server's share: as the client's for (EC)DHE; the ML-KEM
    /// ciphertext and the X25519 value for the hybrid.
    pub fn server_share_len(self) -> usize {
        match self {
            Group::X25519MlKem768 => MLKEM768_CT + 32,
            g => g.public_len(),
        }
    }

    fn nid(self) -> Nid {
        match self {
            Group::P384 => Nid::SECP384R1,
            Group::P521 => Nid::SECP521R1,
            // Unused for the Montgomery curves and the hybrid.
            _ => Nid::X9_62_PRIME256V1,
        }
    }
}

/// The server's side of a key exchange in one step: its share for the client's
/// `client_share`, and the shared secret. (EC)DHE makes a key and agrees; the hybrid
/// encapsulates to the client's ML-KEM key and agrees on X25519. A share that is not a
/// valid key is [`CryptoError::BadPeerKey`].
pub fn respond(group: Group, client_share: &[u8]) -> Result<(Vec<u8>, Secret), CryptoError> {
    if group != Group::X25519MlKem768 {
        let (key, public) = EphemeralKey::generate(group)?;
        return Ok((public, key.agree(client_share)?));
    }
    if client_share.len() != group.public_len() {
        return Err(CryptoError::BadPeerKey);
    }
    let (ek, x) = client_share.split_at(MLKEM768_EK);
    let ek: [u8; MLKEM768_EK] = ek.try_into().map_err(|_| CryptoError::BadPeerKey)?;
    let ek = libcrux_ml_kem::mlkem768::MlKem768PublicKey::from(ek);
    // FIPS 203 §7.2: the encapsulation key's modulus check.
    if !libcrux_ml_kem::mlkem768::validate_public_key(&ek) {
        return Err(CryptoError::BadPeerKey);
    }
    let mut seed = [0u8; 32];
    random(&mut seed)?;
    let (ct, mut kem_secret) = libcrux_ml_kem::mlkem768::encapsulate(&ek, seed);
    seed.zeroize();
    let (xkey, xpub) = EphemeralKey::generate(Group::X25519)?;
    let xsecret = xkey.agree(x)?;
    let mut share = ct.as_slice().to_vec();
    share.extend_from_slice(&xpub);
    let mut secret = Secret::new(Vec::with_capacity(64));
    secret.extend(&kem_secret);
    kem_secret.zeroize();
    secret.extend(xsecret.bytes());
    Ok((share, secret))
}

/// Whose code runs a primitive that both libraries have. OpenSSL is the default and the
/// only route to providers and engines (hardware such as QAT); AWS-LC (through
/// `aws-lc-rs`) is a second software backend, chosen with `[crypto] primitives`, whose
/// X25519 costs a little over a third of OpenSSL 3.0's on this CPU. Today it runs the
/// X25519 key exchange (the group alone and inside the hybrid), the server's
/// signatures (RSA, ECDSA P-256 with SHA-256 and P-384 with SHA-384) and the AEADs
/// ([`AeadKey`]: records, tickets, secure datagrams); everything else (hashes, HMAC,
/// the DRBG, P-256 key exchange, verification) is OpenSSL's either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitives {
    OpenSsl,
    AwsLc,
}

static PRIMITIVES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Chooses the backend for every key made from now on in this process (the daemon sets
/// it once at start, from its configuration).
pub fn use_primitives(p: Primitives) {
    let v = match p {
        Primitives::OpenSsl => 0,
        Primitives::AwsLc => 1,
    };
    PRIMITIVES.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The backend [`use_primitives`] chose (OpenSSL unless told otherwise).
pub fn primitives() -> Primitives {
    match PRIMITIVES.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Primitives::AwsLc,
        _ => Primitives::OpenSsl,
    }
}

/// An ephemeral private key. OpenSSL and AWS-LC clear their keys when freed; the ML-KEM
/// part (the hybrid's) is wiped on drop too.
pub struct EphemeralKey {
    group: Group,
    key: KxKey,
    kem: Option<Box<MlKemKey>>,
}

/// The (EC)DH key: OpenSSL's, or for X25519 with [`Primitives::AwsLc`], AWS-LC's.
enum KxKey {
    Ossl(PKey<Private>),
    AwsLc(aws_lc_rs::agreement::PrivateKey),
}

impl KxKey {
    fn ossl(&self) -> Result<&PKey<Private>, CryptoError> {
        match self {
            KxKey::Ossl(k) => Ok(k),
            KxKey::AwsLc(_) => Err(CryptoError::Library(
                "an AWS-LC key where an OpenSSL one is needed".into(),
            )),
        }
    }

    /// An X25519 key of `p`'s library, fresh or from its 32 `private` bytes, and its
    /// public value.
    fn x25519(p: Primitives, private: Option<&[u8]>) -> Result<(KxKey, Vec<u8>), CryptoError> {
        match p {
            Primitives::OpenSsl => {
                let key = match private {
                    Some(b) => PKey::private_key_from_raw_bytes(b, Id::X25519)?,
                    None => PKey::generate_x25519()?,
                };
                let public = key.raw_public_key()?;
                Ok((KxKey::Ossl(key), public))
            }
            Primitives::AwsLc => {
                use aws_lc_rs::agreement::{PrivateKey, X25519};
                let key = match private {
                    Some(b) => PrivateKey::from_private_key(&X25519, b).map_err(aws_lc)?,
                    None => PrivateKey::generate(&X25519).map_err(aws_lc)?,
                };
                let public = key.compute_public_key().map_err(aws_lc)?.as_ref().to_vec();
                Ok((KxKey::AwsLc(key), public))
            }
        }
    }

    /// X25519 with the peer's 32-byte value; an all-zero result is refused (RFC 8446
    /// §7.4.2).
    fn x25519_agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        if peer.len() != 32 {
            return Err(CryptoError::BadPeerKey);
        }
        match self {
            KxKey::Ossl(k) => montgomery_agree(k, peer, Id::X25519),
            KxKey::AwsLc(k) => {
                use aws_lc_rs::agreement::{agree, UnparsedPublicKey, X25519};
                let s = agree(
                    k,
                    UnparsedPublicKey::new(&X25519, peer),
                    CryptoError::BadPeerKey,
                    |s| Ok(Secret::new(s.to_vec())),
                )?;
                if s.bytes().iter().all(|&b| b == 0) {
                    return Err(CryptoError::BadPeerKey);
                }
                Ok(s)
            }
        }
    }
}

/// AWS-LC's error (it says nothing more than that it failed).
fn aws_lc(e: impl fmt::Debug) -> CryptoError {
    CryptoError::Library(format!("AWS-LC: {e:?}"))
}

/// The client's ML-KEM-768 decapsulation key, wiped when dropped.
struct MlKemKey(libcrux_ml_kem::mlkem768::MlKem768KeyPair);

impl Drop for MlKemKey {
    fn drop(&mut self) {
        // The private key is a plain byte array inside the pair (no destructor, no
        // zeroize of its own): overwrite the pair with zeros, volatile so the store is
        // not optimised away before the memory is freed.
        let zeros = libcrux_ml_kem::mlkem768::MlKem768KeyPair::new([0; 2400], [0; MLKEM768_EK]);
        // SAFETY: `self.0` is a valid, aligned place of this type; the old value holds
        // only arrays, so not running its (trivial) drop leaks nothing.
        unsafe { std::ptr::write_volatile(&mut self.0, zeros) };
    }
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EphemeralKey({:?})", self.group)
    }
}

impl EphemeralKey {
    /// A fresh key and its public value as sent on the wire (the client's share), made
    /// by the process's backend ([`primitives`]).
    pub fn generate(group: Group) -> Result<(EphemeralKey, Vec<u8>), CryptoError> {
        Self::generate_with(group, primitives())
    }

    /// [`EphemeralKey::generate`] with the backend `p` (for X25519; other groups are
    /// OpenSSL's).
    pub fn generate_with(
        group: Group,
        p: Primitives,
    ) -> Result<(EphemeralKey, Vec<u8>), CryptoError> {
        match group {
            Group::X25519 => {
                let (key, public) = KxKey::x25519(p, None)?;
                Ok((
                    EphemeralKey {
                        group,
                        key,
                        kem: None,
                    },
                    public,
                ))
            }
            Group::X448 => {
                let key = PKey::generate_x448()?;
                let public = key.raw_public_key()?;
                Ok((
                    EphemeralKey {
                        group,
                        key: KxKey::Ossl(key),
                        kem: None,
                    },
                    public,
                ))
            }
            Group::P256 | Group::P384 | Group::P521 => {
                let g = EcGroup::from_curve_name(group.nid())?;
                let ec = EcKey::generate(&g)?;
                let mut ctx = BigNumContext::new()?;
                let public =
                    ec.public_key()
                        .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
                Ok((
                    EphemeralKey {
                        group,
                        key: KxKey::Ossl(PKey::from_ec_key(ec)?),
                        kem: None,
                    },
                    public,
                ))
            }
            Group::X25519MlKem768 => {
                let mut seed = [0u8; 64];
                random(&mut seed)?;
                let pair = libcrux_ml_kem::mlkem768::generate_key_pair(seed);
                seed.zeroize();
                let (key, xpub) = KxKey::x25519(p, None)?;
                let mut public = pair.public_key().as_slice().to_vec();
                public.extend_from_slice(&xpub);
                Ok((
                    EphemeralKey {
                        group,
                        key,
                        kem: Some(Box::new(MlKemKey(pair))),
                    },
                    public,
                ))
            }
        }
    }

    /// An X25519 key from its 32 private bytes, and its public value: a key share made
    /// ahead of time (the `tls` crate's `Tls13Flight::server_share`).
    pub fn x25519_from_private(private: &[u8]) -> Result<(EphemeralKey, Vec<u8>), CryptoError> {
        Self::x25519_from_private_with(private, primitives())
    }

    /// [`EphemeralKey::x25519_from_private`] with the backend `p`.
    pub fn x25519_from_private_with(
        private: &[u8],
        p: Primitives,
    ) -> Result<(EphemeralKey, Vec<u8>), CryptoError> {
        let (key, public) = KxKey::x25519(p, Some(private))?;
        Ok((
            EphemeralKey {
                group: Group::X25519,
                key,
                kem: None,
            },
            public,
        ))
    }

    pub fn group(&self) -> Group {
        self.group
    }

    /// The shared secret with the peer's public value (for the hybrid: the server's
    /// share, ML-KEM ciphertext then X25519). Invalid points, the wrong length or a
    /// compressed encoding are [`CryptoError::BadPeerKey`].
    pub fn agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        if let Some(kem) = &self.kem {
            if peer.len() != self.group.server_share_len() {
                return Err(CryptoError::BadPeerKey);
            }
            let (ct, x) = peer.split_at(MLKEM768_CT);
            let ct: [u8; MLKEM768_CT] = ct.try_into().map_err(|_| CryptoError::BadPeerKey)?;
            let ct = libcrux_ml_kem::mlkem768::MlKem768Ciphertext::from(ct);
            let mut kem_secret = libcrux_ml_kem::mlkem768::decapsulate(kem.0.private_key(), &ct);
            let xsecret = self.key.x25519_agree(x)?;
            let mut secret = Secret::new(Vec::with_capacity(64));
            secret.extend(&kem_secret);
            kem_secret.zeroize();
            secret.extend(xsecret.bytes());
            return Ok(secret);
        }
        if peer.len() != self.group.public_len() {
            return Err(CryptoError::BadPeerKey);
        }
        match self.group {
            Group::X25519 => return self.key.x25519_agree(peer),
            Group::X448 => return montgomery_agree(self.key.ossl()?, peer, Id::X448),
            _ => {}
        }
        if peer[0] != 4 {
            return Err(CryptoError::BadPeerKey);
        }
        let g = EcGroup::from_curve_name(self.group.nid())?;
        let mut ctx = BigNumContext::new()?;
        // Decoding checks the point is on the curve (OpenSSL refuses one that is not),
        // and an uncompressed encoding of the right length cannot be the point at
        // infinity. The NIST curves have prime order (cofactor 1), so that is the whole
        // of the public-key validation SP 800-56A §5.6.2.3.4 asks for: `check_key`'s
        // extra multiplication by the order would only repeat it at the cost of a
        // second scalar multiplication per handshake.
        let pt = EcPoint::from_bytes(&g, peer, &mut ctx).map_err(|_| CryptoError::BadPeerKey)?;
        if pt.is_infinity(&g) || !pt.is_on_curve(&g, &mut ctx).unwrap_or(false) {
            return Err(CryptoError::BadPeerKey);
        }
        let ec = EcKey::from_public_key(&g, &pt).map_err(|_| CryptoError::BadPeerKey)?;
        derive(self.key.ossl()?, &PKey::from_ec_key(ec)?)
    }
}

/// X25519 or X448 with a peer value of the right length; an all-zero result (a
/// low-order point) is refused (RFC 8446 §7.4.2, RFC 7748 §6).
fn montgomery_agree(key: &PKey<Private>, peer: &[u8], id: Id) -> Result<Secret, CryptoError> {
    let peer = PKey::public_key_from_raw_bytes(peer, id).map_err(|_| CryptoError::BadPeerKey)?;
    let s = derive(key, &peer)?;
    if s.bytes().iter().all(|&b| b == 0) {
        return Err(CryptoError::BadPeerKey);
    }
    Ok(s)
}

/// The (EC)DH secret with a peer key already validated by the caller (on the curve and
/// not the identity for P-256/P-384; X25519 needs no check before, only the all-zero
/// one after). `set_peer` would run OpenSSL's full public-key check once more, for the
/// NIST curves a scalar multiplication by the order: a third of the agreement's cost.
fn derive(key: &PKey<Private>, peer: &PKey<Public>) -> Result<Secret, CryptoError> {
    let mut d = Deriver::new(key)?;
    d.set_peer_ex(peer, false)
        .map_err(|_| CryptoError::BadPeerKey)?;
    Ok(Secret::new(
        d.derive_to_vec().map_err(|_| CryptoError::BadPeerKey)?,
    ))
}

// ---------------------------------------------------------------------------------
// Signatures and keys

/// What kind of private key a certificate has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
}

/// A signature algorithm (the TLS SignatureScheme without its wire code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
}

impl SigAlg {
    pub(crate) fn md(self) -> MessageDigest {
        use SigAlg::*;
        match self {
            EcdsaSha256 | RsaPssSha256 | RsaPkcs1Sha256 => MessageDigest::sha256(),
            EcdsaSha384 | RsaPssSha384 | RsaPkcs1Sha384 => MessageDigest::sha384(),
            EcdsaSha512 | RsaPssSha512 | RsaPkcs1Sha512 => MessageDigest::sha512(),
        }
    }
}

/// A server's private key, loaded once. OpenSSL clears the key material when the last
/// reference is freed; this type never prints it.
pub struct SigningKey {
    key: PKey<Private>,
    kind: KeyKind,
    /// Names the key in the threads' signing-context caches (see [`SigningKey::sign`]).
    id: u64,
    /// The same key in AWS-LC, made at its first signature under
    /// [`Primitives::AwsLc`]; `None` inside when AWS-LC would not take it (OpenSSL
    /// signs then).
    aws: std::sync::OnceLock<Option<AwsSigner>>,
}

/// A signing key in AWS-LC (it clears the key material when freed).
enum AwsSigner {
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
}

impl AwsSigner {
    /// `key` in AWS-LC, from its PKCS#8 encoding (wiped afterwards).
    fn of(key: &PKey<Private>, kind: KeyKind) -> Option<AwsSigner> {
        use aws_lc_rs::signature::{
            EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
            ECDSA_P384_SHA384_ASN1_SIGNING,
        };
        let der = Zeroizing::new(key.private_key_to_pkcs8().ok()?);
        let made = match kind {
            KeyKind::EcdsaP256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
                .map(AwsSigner::Ecdsa),
            KeyKind::EcdsaP384 => EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &der)
                .map(AwsSigner::Ecdsa),
            KeyKind::Rsa { .. } => RsaKeyPair::from_pkcs8(&der).map(AwsSigner::Rsa),
        };
        // A key OpenSSL took and AWS-LC would not (an RSA modulus past 8192 bits, say)
        // is signed by OpenSSL, as before.
        made.ok()
    }

    /// `parts` (concatenated) signed with `alg`, or `None` for a pairing this key pair
    /// was not made for (an ECDSA key asked for another hash: OpenSSL signs those).
    fn sign(
        &self,
        kind: KeyKind,
        alg: SigAlg,
        parts: &[&[u8]],
    ) -> Option<Result<Vec<u8>, CryptoError>> {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature as sig;
        let msg = parts.concat();
        let rng = SystemRandom::new();
        match self {
            AwsSigner::Ecdsa(k) => {
                let fits = matches!(
                    (kind, alg),
                    (KeyKind::EcdsaP256, SigAlg::EcdsaSha256)
                        | (KeyKind::EcdsaP384, SigAlg::EcdsaSha384)
                );
                fits.then(|| {
                    k.sign(&rng, &msg)
                        .map(|s| s.as_ref().to_vec())
                        .map_err(aws_lc)
                })
            }
            AwsSigner::Rsa(k) => {
                let enc: &'static dyn sig::RsaEncoding = match alg {
                    SigAlg::RsaPssSha256 => &sig::RSA_PSS_SHA256,
                    SigAlg::RsaPssSha384 => &sig::RSA_PSS_SHA384,
                    SigAlg::RsaPssSha512 => &sig::RSA_PSS_SHA512,
                    SigAlg::RsaPkcs1Sha256 => &sig::RSA_PKCS1_SHA256,
                    SigAlg::RsaPkcs1Sha384 => &sig::RSA_PKCS1_SHA384,
                    SigAlg::RsaPkcs1Sha512 => &sig::RSA_PKCS1_SHA512,
                    _ => return None,
                };
                let mut out = vec![0u8; k.public_modulus_len()];
                Some(
                    k.sign(enc, &rng, &msg, &mut out)
                        .map(|()| out)
                        .map_err(aws_lc),
                )
            }
        }
    }
}

/// Ids of signing keys, never reused.
static NEXT_SIGNING_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Bumped when a signing key is dropped: each thread's cache of signing contexts is
/// emptied at its next signature, so a key a reload removed is freed soon after.
static SIGNING_KEYS_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Signing contexts a thread keeps (one per key and hash it signs with).
const SIGNERS_PER_THREAD: usize = 8;

impl Drop for SigningKey {
    fn drop(&mut self) {
        SIGNING_KEYS_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?})", self.kind)
    }
}

impl SigningKey {
    /// Load a PEM private key (PKCS#8 or traditional). Only RSA ≥ 2048 bits and
    /// ECDSA P-256 / P-384 are accepted.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CryptoError> {
        let key = PKey::private_key_from_pem(pem)
            .map_err(|e| CryptoError::Load(format!("not a PEM private key ({e})")))?;
        let kind = match key.id() {
            Id::RSA => {
                let bits = key.bits();
                if bits < 2048 {
                    return Err(CryptoError::Load(format!(
                        "RSA key of {bits} bits (at least 2048 required)"
                    )));
                }
                KeyKind::Rsa { bits }
            }
            Id::EC => {
                let ec = key.ec_key()?;
                match ec.group().curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => KeyKind::EcdsaP256,
                    Some(Nid::SECP384R1) => KeyKind::EcdsaP384,
                    other => {
                        return Err(CryptoError::Load(format!(
                            "unsupported EC curve {other:?} (P-256 or P-384)"
                        )))
                    }
                }
            }
            other => {
                return Err(CryptoError::Load(format!(
                    "unsupported key type {other:?} (RSA or ECDSA)"
                )))
            }
        };
        Ok(SigningKey {
            key,
            kind,
            id: NEXT_SIGNING_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            aws: std::sync::OnceLock::new(),
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Sign `parts` (concatenated) with `alg`. RSA-PSS uses a salt as long as the hash
    /// and MGF1 with the same hash (RFC 8446 §4.2.3).
    ///
    /// ECDSA with SHA-256/384: the message is hashed with [`Sha2`] (its route) and the
    /// digest signed with `EVP_PKEY_sign` on a context this thread made for this key
    /// once (`sign_init` done): no context, algorithm fetch or digest context per
    /// signature. Contexts are per thread, so each resolves in its thread's library
    /// context (a device's worker signs on its device).
    ///
    /// With [`Primitives::AwsLc`], AWS-LC signs instead (RSA, and ECDSA with its curve's
    /// own hash; OpenSSL signs the other pairings and any key AWS-LC refused).
    pub fn sign(&self, alg: SigAlg, parts: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
        self.sign_with(primitives(), alg, parts)
    }

    /// [`SigningKey::sign`] on `p`'s primitives.
    pub(crate) fn sign_with(
        &self,
        p: Primitives,
        alg: SigAlg,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, CryptoError> {
        if p == Primitives::AwsLc {
            let aws = self.aws.get_or_init(|| AwsSigner::of(&self.key, self.kind));
            if let Some(r) = aws.as_ref().and_then(|a| a.sign(self.kind, alg, parts)) {
                return r;
            }
        }
        let hash = match alg {
            SigAlg::EcdsaSha256 => Some(HashAlg::Sha256),
            SigAlg::EcdsaSha384 => Some(HashAlg::Sha384),
            _ => None,
        };
        if let Some(h) = hash {
            return self.sign_digest(h, parts);
        }
        let mut s = Signer::new(alg.md(), &self.key)?;
        if alg.pss() {
            s.set_rsa_padding(Padding::PKCS1_PSS)?;
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            s.set_rsa_mgf1_md(alg.md())?;
        }
        for p in parts {
            s.update(p)?;
        }
        Ok(s.sign_to_vec()?)
    }

    fn sign_digest(&self, h: HashAlg, parts: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
        use openssl::pkey_ctx::PkeyCtx;
        use std::cell::RefCell;
        use std::sync::atomic::Ordering;
        /// The drop count the contexts were made under, and (key id, context) pairs.
        type Signers = (u64, Vec<(u64, PkeyCtx<Private>)>);
        thread_local! {
            static SIGNERS: RefCell<Signers> = const { RefCell::new((0, Vec::new())) };
        }
        let mut sha = Sha2::new(h)?;
        for p in parts {
            sha.update(p)?;
        }
        let mut digest = [0u8; 48];
        let n = sha.finish(&mut digest)?;
        SIGNERS.with(|cell| {
            let mut cache = cell.borrow_mut();
            let dropped = SIGNING_KEYS_DROPPED.load(Ordering::Relaxed);
            if cache.0 != dropped {
                cache.0 = dropped;
                cache.1.clear();
            }
            let list = &mut cache.1;
            let mut ctx = match list.iter().position(|(id, _)| *id == self.id) {
                Some(i) => list.swap_remove(i).1,
                None => {
                    let mut c = PkeyCtx::new(&self.key)?;
                    c.sign_init()?;
                    c
                }
            };
            // A DER ECDSA signature of P-384 is at most 104 bytes.
            let mut sig = vec![0u8; 112];
            let len = ctx.sign(&digest[..n], Some(&mut sig))?;
            sig.truncate(len);
            if list.len() == SIGNERS_PER_THREAD {
                list.remove(0);
            }
            list.push((self.id, ctx));
            Ok(sig)
        })
    }

    /// Whether `cert_der`'s public key is this key's.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> Result<bool, CryptoError> {
        let cert = X509::from_der(cert_der)
            .map_err(|e| CryptoError::Load(format!("bad certificate ({e})")))?;
        Ok(cert.public_key()?.public_eq(&self.key))
    }
}

impl SigAlg {
    fn pss(self) -> bool {
        matches!(
            self,
            SigAlg::RsaPssSha256 | SigAlg::RsaPssSha384 | SigAlg::RsaPssSha512
        )
    }
    fn rsa(self) -> bool {
        self.pss()
            || matches!(
                self,
                SigAlg::RsaPkcs1Sha256 | SigAlg::RsaPkcs1Sha384 | SigAlg::RsaPkcs1Sha512
            )
    }
}

/// The trusted issuers of client certificates: an OpenSSL X509 store built once from a
/// CA bundle, and the bundle's subject names (DER) for CertificateRequest.
pub struct CaStore {
    store: openssl::x509::store::X509Store,
    names: Vec<Vec<u8>>,
}

impl fmt::Debug for CaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaStore({} CAs)", self.names.len())
    }
}

impl CaStore {
    /// From a PEM bundle of CA certificates; chains are checked for client use.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CryptoError> {
        use openssl::x509::store::X509StoreBuilder;
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| CryptoError::Load(format!("not PEM certificates ({e})")))?;
        if certs.is_empty() {
            return Err(CryptoError::Load("no certificate in the CA bundle".into()));
        }
        let mut b = X509StoreBuilder::new()?;
        let mut names = Vec::with_capacity(certs.len());
        for c in certs {
            names.push(c.subject_name().to_der()?);
            b.add_cert(c)?;
        }
        b.set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)?;
        Ok(CaStore {
            store: b.build(),
            names,
        })
    }

    /// The CAs' subject names, DER, in bundle order.
    pub fn names(&self) -> &[Vec<u8>] {
        &self.names
    }

    /// Verify a client's chain (DER, leaf first) against the store at the current
    /// time; returns the leaf's subject (see [`certificate_subject`]).
    pub fn verify_chain(&self, chain: &[Vec<u8>]) -> Result<String, CryptoError> {
        verify_with(&self.store, chain)
    }
}

/// What the client role trusts: an X509 store of CAs checked for server use, bound to
/// the name the server must have (a DNS name, or an IP address), so a chain verifies
/// only if it was issued for that name.
pub struct ServerVerifier {
    store: openssl::x509::store::X509Store,
    name: String,
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerVerifier({})", self.name)
    }
}

impl ServerVerifier {
    /// CAs from a PEM bundle, or the system's trusted CAs (`None`); `name` is the
    /// server's DNS name or IP address.
    pub fn new(ca_pem: Option<&[u8]>, name: &str) -> Result<Self, CryptoError> {
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::verify::X509VerifyParam;
        let mut b = X509StoreBuilder::new()?;
        match ca_pem {
            Some(pem) => {
                let certs = X509::stack_from_pem(pem)
                    .map_err(|e| CryptoError::Load(format!("not PEM certificates ({e})")))?;
                if certs.is_empty() {
                    return Err(CryptoError::Load("no certificate in the CA bundle".into()));
                }
                for c in certs {
                    b.add_cert(c)?;
                }
            }
            None => b
                .set_default_paths()
                .map_err(|e| CryptoError::Load(format!("cannot load the system CAs ({e})")))?,
        }
        b.set_purpose(openssl::x509::X509PurposeId::SSL_SERVER)?;
        let mut param = X509VerifyParam::new()?;
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param
                .set_host(name)
                .map_err(|e| CryptoError::Load(format!("bad server name {name:?} ({e})")))?,
        }
        b.set_param(&param)?;
        Ok(ServerVerifier {
            store: b.build(),
            name: name.to_string(),
        })
    }

    /// The name a server's certificate must carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verify a server's chain (DER, leaf first) at the current time, for the name;
    /// returns the leaf's subject.
    pub fn verify(&self, chain: &[Vec<u8>]) -> Result<String, CryptoError> {
        verify_with(&self.store, chain)
    }
}

/// Verify `chain` (DER, leaf first) against `store` and its parameters at the current
/// time; returns the leaf's subject (see [`certificate_subject`]).
fn verify_with(
    store: &openssl::x509::store::X509StoreRef,
    chain: &[Vec<u8>],
) -> Result<String, CryptoError> {
    use openssl::stack::Stack;
    use openssl::x509::X509StoreContext;
    let bad = |reason: String| CryptoError::BadCertificate {
        reason,
        unknown_ca: false,
    };
    let leaf_der = chain.first().ok_or_else(|| bad("empty chain".into()))?;
    let leaf = X509::from_der(leaf_der).map_err(|e| bad(format!("not DER ({e})")))?;
    let mut rest = Stack::new()?;
    for c in &chain[1..] {
        rest.push(X509::from_der(c).map_err(|e| bad(format!("not DER ({e})")))?)?;
    }
    let mut ctx = X509StoreContext::new()?;
    let verdict = ctx.init(store, &leaf, &rest, |c| {
        Ok(if c.verify_cert()? {
            Ok(())
        } else {
            Err(c.error())
        })
    })?;
    match verdict {
        Ok(()) => certificate_subject(leaf_der),
        Err(e) => {
            // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), DEPTH_ZERO_SELF_SIGNED,
            // SELF_SIGNED_CERT_IN_CHAIN: nobody we trust issued it.
            let unknown_ca = matches!(e.as_raw(), 2 | 18 | 19 | 20);
            Err(CryptoError::BadCertificate {
                reason: e.error_string().to_string(),
                unknown_ca,
            })
        }
    }
}

/// A certificate's subject as `SN=value` pairs joined by `, ` (e.g. `CN=alice, O=Example`).
pub fn certificate_subject(cert_der: &[u8]) -> Result<String, CryptoError> {
    let cert = X509::from_der(cert_der)
        .map_err(|e| CryptoError::Load(format!("bad certificate ({e})")))?;
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_dn_value(&val))
        })
        .collect();
    Ok(parts.join(", "))
}

/// RFC 4514 §2.4: a value with `,`, `+`, `"`, `\`, `<`, `>`, `;` escaped by a
/// backslash (and control characters as `\XX`), so a value can never pose as another
/// attribute of the name ("O=Acme\, CN=admin" is one attribute).
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut b = [0u8; 4];
                for x in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("\\{x:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    if out.ends_with(' ') {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

/// The first `attr` (e.g. "CN") of a subject string made by [`certificate_subject`],
/// unescaped.
pub fn subject_attribute(subject: &str, attr: &str) -> Option<String> {
    let mut components = Vec::new();
    let mut cur = String::new();
    let mut chars = subject.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push('\\');
                    cur.push(n);
                }
            }
            ',' if chars.peek() == Some(&' ') => {
                chars.next();
                components.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    components.push(cur);
    components.into_iter().find_map(|comp| {
        let (k, v) = comp.split_once('=')?;
        (k == attr).then(|| unescape_dn_value(v))
    })
}

fn unescape_dn_value(v: &str) -> String {
    let mut out = Vec::new();
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let hex = b.get(i + 1..i + 3).and_then(|h| {
                std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            });
            match hex {
                Some(x) if b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                    out.push(x);
                    i += 3;
                }
                _ => {
                    out.push(b[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key kind of a certificate's public key (`None`: a kind we do not accept).
pub fn certificate_key_kind(cert_der: &[u8]) -> Result<Option<KeyKind>, CryptoError> {
    let key = X509::from_der(cert_der)
        .map_err(|e| CryptoError::Load(format!("bad certificate ({e})")))?
        .public_key()?;
    Ok(match key.id() {
        Id::RSA => Some(KeyKind::Rsa { bits: key.bits() }),
        Id::EC => match key.ec_key()?.group().curve_name() {
            Some(Nid::X9_62_PRIME256V1) => Some(KeyKind::EcdsaP256),
            Some(Nid::SECP384R1) => Some(KeyKind::EcdsaP384),
            _ => None,
        },
        _ => None,
    })
}

/// The public key of `cert_der`, if it is of the kind `alg` signs with.
fn peer_key(cert_der: &[u8], alg: SigAlg) -> Result<PKey<openssl::pkey::Public>, CryptoError> {
    let key = X509::from_der(cert_der)
        .map_err(|_| CryptoError::BadSignature)?
        .public_key()?;
    if alg.rsa() != (key.id() == Id::RSA) {
        return Err(CryptoError::BadSignature);
    }
    Ok(key)
}

/// Check a signature made with `cert_der`'s key over `parts` (concatenated).
pub fn verify_signature(
    cert_der: &[u8],
    alg: SigAlg,
    parts: &[&[u8]],
    sig: &[u8],
) -> Result<(), CryptoError> {
    let key = peer_key(cert_der, alg)?;
    let mut v = openssl::sign::Verifier::new(alg.md(), &key)?;
    if alg.pss() {
        v.set_rsa_padding(Padding::PKCS1_PSS)?;
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        v.set_rsa_mgf1_md(alg.md())?;
    }
    for p in parts {
        v.update(p)?;
    }
    match v.verify(sig) {
        Ok(true) => Ok(()),
        _ => Err(CryptoError::BadSignature),
    }
}

/// Check a signature over a digest already computed with `alg`'s hash (a transcript
/// hash snapshot), so the signed bytes are not hashed a second time.
pub fn verify_prehashed(
    cert_der: &[u8],
    alg: SigAlg,
    digest: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    let key = peer_key(cert_der, alg)?;
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&key)?;
    ctx.verify_init()?;
    let md = openssl::md::Md::fetch(None, alg.md().type_().short_name()?, None)?;
    ctx.set_signature_md(&md)?;
    if alg.pss() {
        ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
        ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        ctx.set_rsa_mgf1_md(&md)?;
    } else if alg.rsa() {
        ctx.set_rsa_padding(Padding::PKCS1)?;
    }
    match ctx.verify(digest, sig) {
        Ok(true) => Ok(()),
        _ => Err(CryptoError::BadSignature),
    }
}

/// A certificate chain from PEM (leaf first), as DER.
pub fn load_chain_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, CryptoError> {
    let certs = X509::stack_from_pem(pem)
        .map_err(|e| CryptoError::Load(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(CryptoError::Load("no certificate in the file".into()));
    }
    certs
        .iter()
        .map(|c| c.to_der().map_err(CryptoError::from))
        .collect()
}

/// The DNS names a certificate is for: subjectAltName dNSNames, else the subject CN.
pub fn certificate_names(cert_der: &[u8]) -> Result<Vec<String>, CryptoError> {
    let cert = X509::from_der(cert_der)
        .map_err(|e| CryptoError::Load(format!("bad certificate ({e})")))?;
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(|s| s.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        if let Some(cn) = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next() {
            if let Ok(s) = cn.data().to_string() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// What an operator wants to know about a certificate: who it is for, who issued
/// it, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    /// The subject and issuer as one-line distinguished names (`CN=..., O=...`).
    pub subject: String,
    pub issuer: String,
    /// subjectAltName entries: `DNS:name` or `IP:address`.
    pub sans: Vec<String>,
    /// Validity, as OpenSSL prints it (`Nov 21 10:00:00 2026 GMT`) and in Unix seconds.
    pub not_before: String,
    pub not_after: String,
    pub not_after_unix: i64,
    /// `"ECDSA P-256"`, `"RSA 2048"`, ...
    pub key: String,
    /// Lower-case hex SHA-256 of the DER.
    pub sha256: String,
}

fn one_line_name(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Summarises a DER certificate (see [`CertSummary`]).
pub fn certificate_summary(cert_der: &[u8]) -> Result<CertSummary, CryptoError> {
    let cert = X509::from_der(cert_der)
        .map_err(|e| CryptoError::Load(format!("bad certificate ({e})")))?;
    let sans = cert
        .subject_alt_names()
        .map(|list| {
            list.iter()
                .filter_map(|n| {
                    if let Some(d) = n.dnsname() {
                        Some(format!("DNS:{d}"))
                    } else {
                        n.ipaddress().and_then(|ip| match ip.len() {
                            4 => Some(format!(
                                "IP:{}",
                                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?)
                            )),
                            16 => Some(format!(
                                "IP:{}",
                                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?)
                            )),
                            _ => None,
                        })
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let epoch = openssl::asn1::Asn1Time::from_unix(0)?;
    let d = epoch.diff(cert.not_after())?;
    let key = match cert.public_key() {
        Ok(k) => match k.id() {
            Id::RSA => format!("RSA {}", k.bits()),
            Id::EC => match k.ec_key().ok().and_then(|e| e.group().curve_name()) {
                Some(Nid::X9_62_PRIME256V1) => "ECDSA P-256".into(),
                Some(Nid::SECP384R1) => "ECDSA P-384".into(),
                Some(Nid::SECP521R1) => "ECDSA P-521".into(),
                _ => format!("EC {}", k.bits()),
            },
            Id::ED25519 => "Ed25519".into(),
            other => format!("{other:?} {}", k.bits()),
        },
        Err(_) => "unreadable".into(),
    };
    let digest = openssl::sha::sha256(cert_der);
    Ok(CertSummary {
        subject: one_line_name(cert.subject_name()),
        issuer: one_line_name(cert.issuer_name()),
        sans,
        not_before: cert.not_before().to_string(),
        not_after: cert.not_after().to_string(),
        not_after_unix: i64::from(d.days) * 86_400 + i64::from(d.secs),
        key,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kat::hex;

    #[test]
    fn cleanse_and_wiped_buffers_leave_zeros() {
        let mut b = [0xa5u8; 77];
        cleanse(&mut b[3..]);
        assert_eq!(&b[..3], &[0xa5; 3]);
        assert!(b[3..].iter().all(|&x| x == 0));
        let mut w = Wiped::<16>::new();
        w.copy_from_slice(&[9; 16]);
        assert_eq!(w[15], 9);
        cleanse(&mut w[..]);
        assert_eq!(*w, [0; 16]);
    }

    #[test]
    fn buffered_random_hands_out_each_byte_once_wipes_it_and_refills_after_a_fork() {
        // Many small requests cross several refills: no two 32-byte outputs repeat,
        // and what was handed out is zeros in the buffer.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * RANDOM_REFILL / 32 {
            let mut r = [0u8; 32];
            random(&mut r).unwrap();
            assert!(seen.insert(r), "an output came twice");
            RANDOM_POOL.with(|p| {
                let p = p.borrow();
                assert!(p.bytes[..p.next].iter().all(|&b| b == 0));
                assert!(p.next > 0 && p.next <= RANDOM_REFILL);
            });
        }
        // A large request bypasses the buffer (it is left as it was).
        let before = RANDOM_POOL.with(|p| p.borrow().next);
        let mut big = vec![0u8; RANDOM_REFILL];
        random(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
        assert_eq!(RANDOM_POOL.with(|p| p.borrow().next), before);
        // After a fork (the child's handler, called here), the buffered bytes are not
        // used: the next request comes from a fresh refill.
        let mut r = [0u8; 16];
        random(&mut r).unwrap();
        let pending: Vec<u8> = RANDOM_POOL.with(|p| {
            let p = p.borrow();
            p.bytes[p.next..p.next + 16].to_vec()
        });
        count_fork();
        random(&mut r).unwrap();
        assert_ne!(r.to_vec(), pending);
        assert_eq!(RANDOM_POOL.with(|p| p.borrow().next), 16);
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let m = hmac(
            HashAlg::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        )
        .unwrap();
        assert_eq!(
            m.bytes(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn the_builtin_and_evp_routes_agree_on_every_prefix_and_long_keys() {
        for alg in [HashAlg::Sha256, HashAlg::Sha384] {
            assert!(alg.builtin(), "the test process runs the default provider");
            let mut fast = Sha2::new(alg).unwrap();
            let mut evp = Sha2::Evp(Hasher::new(alg.md()).unwrap());
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
            for chunk in data.chunks(97) {
                fast.update(chunk).unwrap();
                evp.update(chunk).unwrap();
                let (mut a, mut b) = ([0u8; 48], [0u8; 48]);
                let n = fast.clone().finish(&mut a).unwrap();
                assert_eq!(n, evp.clone().finish(&mut b).unwrap());
                assert_eq!(a, b, "{alg:?}");
            }
            // A key longer than the block is hashed first (RFC 2104).
            let key = [0xaa; 131];
            let got = hmac(
                alg,
                &key,
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
            )
            .unwrap();
            let want = match alg {
                HashAlg::Sha256 => "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                HashAlg::Sha384 => "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
            };
            assert_eq!(got.bytes(), hex(want), "RFC 4231 case 6, {alg:?}");
        }
    }

    #[test]
    fn cached_ecdsa_contexts_sign_verifiably_across_keys_and_drops() {
        use openssl::ec::{EcGroup, EcKey};
        let mut keys = Vec::new();
        for (nid, alg, md) in [
            (
                Nid::X9_62_PRIME256V1,
                SigAlg::EcdsaSha256,
                MessageDigest::sha256(),
            ),
            (Nid::SECP384R1, SigAlg::EcdsaSha384, MessageDigest::sha384()),
        ] {
            for _ in 0..3 {
                let ec = EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap();
                let public =
                    PKey::from_ec_key(EcKey::from_public_key(ec.group(), ec.public_key()).unwrap())
                        .unwrap();
                let key = SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap();
                keys.push((key, public, alg, md));
            }
        }
        // Twice over, dropping a key in between: the caches must never sign with the
        // wrong key or a freed one.
        for round in 0..2 {
            for (key, public, alg, md) in &keys {
                let sig = key.sign(*alg, &[b"content ", b"to sign"]).unwrap();
                let mut v = openssl::sign::Verifier::new(*md, public).unwrap();
                v.update(b"content to sign").unwrap();
                assert!(v.verify(&sig).unwrap(), "round {round} {alg:?}");
            }
            keys.remove(0);
        }
    }

    /// AWS-LC's signatures (`[crypto] primitives = "aws-lc"`) verify with OpenSSL for
    /// every key kind and algorithm a server signs with; ECDSA pairings AWS-LC's key
    /// pairs do not offer (P-256 with SHA-384) go to OpenSSL and verify too.
    #[test]
    fn aws_lc_signatures_verify_with_openssl() {
        use openssl::ec::{EcGroup, EcKey};
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let rsa_pem = rsa.private_key_to_pem().unwrap();
        let rsa_pub = PKey::from_rsa(
            openssl::rsa::Rsa::from_public_components(
                rsa.n().to_owned().unwrap(),
                rsa.e().to_owned().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let ec = |nid| {
            let k = EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap();
            let public =
                PKey::from_ec_key(EcKey::from_public_key(k.group(), k.public_key()).unwrap())
                    .unwrap();
            (k.private_key_to_pem().unwrap(), public)
        };
        let (p256, p256_pub) = ec(Nid::X9_62_PRIME256V1);
        let (p384, p384_pub) = ec(Nid::SECP384R1);
        use SigAlg::*;
        let cases: [(&[u8], &PKey<Public>, &[SigAlg]); 3] = [
            (
                &rsa_pem,
                &rsa_pub,
                &[
                    RsaPssSha256,
                    RsaPssSha384,
                    RsaPssSha512,
                    RsaPkcs1Sha256,
                    RsaPkcs1Sha384,
                    RsaPkcs1Sha512,
                ],
            ),
            (&p256, &p256_pub, &[EcdsaSha256, EcdsaSha384]),
            (&p384, &p384_pub, &[EcdsaSha384, EcdsaSha256]),
        ];
        for (pem, public, algs) in cases {
            let key = SigningKey::from_pem(pem).unwrap();
            for &alg in algs {
                let sig = key
                    .sign_with(Primitives::AwsLc, alg, &[b"content ", b"to sign"])
                    .unwrap();
                let verifies = |content: &[u8]| {
                    let mut v = openssl::sign::Verifier::new(alg.md(), public).unwrap();
                    if alg.pss() {
                        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
                        v.set_rsa_mgf1_md(alg.md()).unwrap();
                    }
                    v.update(content).unwrap();
                    v.verify(&sig).unwrap_or(false)
                };
                assert!(verifies(b"content to sign"), "{alg:?}");
                assert!(!verifies(b"other content"), "{alg:?} binds its content");
                if matches!(alg, RsaPkcs1Sha256 | RsaPkcs1Sha384 | RsaPkcs1Sha512) {
                    // Deterministic: both libraries give the same bytes.
                    let ossl = key
                        .sign_with(Primitives::OpenSsl, alg, &[b"content to sign"])
                        .unwrap();
                    assert_eq!(sig, ossl, "{alg:?}");
                }
            }
            assert!(
                key.aws.get().is_some_and(|a| a.is_some()),
                "AWS-LC took the key"
            );
        }
    }

    #[test]
    fn empty_hashes_are_the_digests_of_nothing() {
        for h in [HashAlg::Sha256, HashAlg::Sha384] {
            assert_eq!(h.empty_hash(), &hash(h, b"").unwrap()[..]);
        }
    }

    #[test]
    fn hkdf_rfc5869_case1() {
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let prk = hkdf_extract(HashAlg::Sha256, &salt, &ikm).unwrap();
        assert_eq!(
            prk.bytes(),
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let okm = hkdf_expand(HashAlg::Sha256, prk.bytes(), &info, 42).unwrap();
        assert_eq!(
            okm.bytes(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        // Each backend seals for the other (and itself) and opens the other's records,
        // and both seal the same bytes.
        use Primitives::{AwsLc, OpenSsl};
        for (sp, op) in [
            (OpenSsl, OpenSsl),
            (OpenSsl, AwsLc),
            (AwsLc, OpenSsl),
            (AwsLc, AwsLc),
        ] {
            aead_round_trip_and_tamper_with(sp, op);
        }
        let mut kat = Vec::new();
        for p in [OpenSsl, AwsLc] {
            let mut s = AeadKey::new_with(AeadAlg::Aes128Gcm, &[7; 16], true, p).unwrap();
            let mut buf = b"hello records".to_vec();
            let mut tag = [0u8; TAG_LEN];
            s.seal(&[1; 12], b"aad", &mut buf, &mut tag).unwrap();
            buf.extend_from_slice(&tag);
            kat.push(buf);
            // A clone seals the same.
            let mut c = s.try_clone().unwrap();
            let mut again = b"hello records".to_vec();
            c.seal(&[1; 12], b"aad", &mut again, &mut tag).unwrap();
            again.extend_from_slice(&tag);
            assert_eq!(again, kat[kat.len() - 1]);
        }
        assert_eq!(kat[0], kat[1]);
    }

    fn aead_round_trip_and_tamper_with(sp: Primitives, op: Primitives) {
        for alg in [
            AeadAlg::Aes128Gcm,
            AeadAlg::Aes256Gcm,
            AeadAlg::Chacha20Poly1305,
        ] {
            let key = vec![7u8; alg.key_len()];
            let mut s = AeadKey::new_with(alg, &key, true, sp).unwrap();
            let mut o = AeadKey::new_with(alg, &key, false, op).unwrap();
            let nonce = [1u8; 12];
            let mut buf = b"hello records".to_vec();
            let mut tag = [0u8; TAG_LEN];
            s.seal(&nonce, b"aad", &mut buf, &mut tag).unwrap();
            assert_ne!(&buf[..], b"hello records");
            let mut b2 = buf.clone();
            o.open(&nonce, b"aad", &mut b2, &tag).unwrap();
            assert_eq!(&b2[..], b"hello records");
            let mut b3 = buf.clone();
            b3[0] ^= 1;
            assert_eq!(
                o.open(&nonce, b"aad", &mut b3, &tag),
                Err(CryptoError::BadTag)
            );
            // The context is usable after a failure.
            let mut b4 = buf.clone();
            o.open(&nonce, b"aad", &mut b4, &tag).unwrap();
            assert_eq!(&b4[..], b"hello records");
        }
    }

    #[test]
    fn ecdhe_agrees_and_rejects_bad_points() {
        // The hybrid: the client's key and the server's response agree; a bad
        // encapsulation key, a share of the wrong length and a cut ciphertext are
        // refused.
        let (client, share) = EphemeralKey::generate(Group::X25519MlKem768).unwrap();
        assert_eq!(share.len(), 1216);
        let (reply, server_secret) = respond(Group::X25519MlKem768, &share).unwrap();
        assert_eq!(reply.len(), Group::X25519MlKem768.server_share_len());
        let client_secret = client.agree(&reply).unwrap();
        assert_eq!(client_secret.bytes().len(), 64);
        assert_eq!(client_secret, server_secret);
        let mut bad_ek = share.clone();
        bad_ek[..384].fill(0xff); // coefficients above the modulus
        assert_eq!(
            respond(Group::X25519MlKem768, &bad_ek).unwrap_err(),
            CryptoError::BadPeerKey
        );
        assert_eq!(
            respond(Group::X25519MlKem768, &share[1..]).unwrap_err(),
            CryptoError::BadPeerKey
        );
        assert_eq!(
            client.agree(&reply[1..]).unwrap_err(),
            CryptoError::BadPeerKey
        );
        for g in [
            Group::X25519,
            Group::P256,
            Group::P384,
            Group::P521,
            Group::X448,
        ] {
            let (a, pa) = EphemeralKey::generate(g).unwrap();
            let (b, pb) = EphemeralKey::generate(g).unwrap();
            assert_eq!(pa.len(), g.public_len());
            assert_eq!(a.agree(&pb).unwrap(), b.agree(&pa).unwrap());
            assert_eq!(a.agree(&pb[1..]).unwrap_err(), CryptoError::BadPeerKey);
            let zeros = vec![0u8; g.public_len()];
            assert_eq!(a.agree(&zeros).unwrap_err(), CryptoError::BadPeerKey);
            let mut other = pb.clone();
            if matches!(g, Group::X25519 | Group::X448) {
                // u = 1 has low order (4 on Curve25519, 4 on Curve448): the shared
                // secret is all zeros.
                other = vec![0u8; g.public_len()];
                other[0] = 1;
            } else {
                // y changed by one bit: (x, y) is no longer on the curve.
                *other.last_mut().unwrap() ^= 1;
            }
            assert_eq!(
                a.agree(&other).unwrap_err(),
                CryptoError::BadPeerKey,
                "{g:?}"
            );
        }
    }

    /// AWS-LC's X25519 (`[crypto] primitives = "aws-lc"`) agrees with OpenSSL's in both
    /// directions, alone and inside the hybrid, and refuses the same bad peer values:
    /// the wrong length, and the low-order points whose secret is all zeros (u = 0 and
    /// u = 1; RFC 8446 §7.4.2).
    #[test]
    fn aws_lc_x25519_agrees_with_openssl_and_refuses_the_same_values() {
        use Primitives::{AwsLc, OpenSsl};
        for g in [Group::X25519, Group::X25519MlKem768] {
            for (pa, pb) in [(AwsLc, OpenSsl), (OpenSsl, AwsLc), (AwsLc, AwsLc)] {
                let (client, share) = EphemeralKey::generate_with(g, pa).unwrap();
                let (reply, secret) = if g == Group::X25519 {
                    let (server, public) = EphemeralKey::generate_with(g, pb).unwrap();
                    (public, server.agree(&share).unwrap())
                } else {
                    respond(g, &share).unwrap()
                };
                assert_eq!(client.agree(&reply).unwrap(), secret, "{g:?} {pa:?}/{pb:?}");
            }
        }
        let (a, _) = EphemeralKey::generate_with(Group::X25519, AwsLc).unwrap();
        let (_, pb) = EphemeralKey::generate_with(Group::X25519, OpenSsl).unwrap();
        assert_eq!(a.agree(&pb[1..]).unwrap_err(), CryptoError::BadPeerKey);
        let mut one = vec![0u8; 32];
        assert_eq!(a.agree(&one).unwrap_err(), CryptoError::BadPeerKey, "u = 0");
        one[0] = 1;
        assert_eq!(a.agree(&one).unwrap_err(), CryptoError::BadPeerKey, "u = 1");
    }
}

#[cfg(test)]
mod subject_tests {
    use super::*;

    #[test]
    fn a_value_cannot_pose_as_another_attribute() {
        let forged = format!("O={}, CN=mallory", escape_dn_value("Acme, CN=admin"));
        assert_eq!(forged, "O=Acme\\, CN=admin, CN=mallory");
        assert_eq!(subject_attribute(&forged, "CN").as_deref(), Some("mallory"));
        assert_eq!(
            subject_attribute(&forged, "O").as_deref(),
            Some("Acme, CN=admin")
        );
        assert_eq!(
            subject_attribute("CN=alice", "CN").as_deref(),
            Some("alice")
        );
        assert_eq!(subject_attribute("O=x", "CN"), None);
        let weird = escape_dn_value(" a+b;\"\n");
        assert_eq!(
            subject_attribute(&format!("CN={weird}"), "CN").as_deref(),
            Some(" a+b;\"\n")
        );
    }
}
