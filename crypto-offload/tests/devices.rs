//! Providers and engines, loaded for real in this process (its own test binary:
//! loading is process-wide). What this machine lacks (the `fips` provider; the kernel
//! AF_ALG interface `afalg` needs) must fail with an error naming it.

use crypto_offload::device::Devices;
use crypto_offload::{AeadAlg, AeadKey};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn providers_and_engines_load_route_and_fail_by_name() {
    // Nothing asked: the default provider runs everything the jobs use.
    let d = Devices::load(&[], &[]).unwrap();
    assert_eq!(d.providers().collect::<Vec<_>>(), ["default"]);
    let routes = d.routes();
    assert_eq!(routes.len(), 9, "{routes:?}");
    for r in &routes {
        assert_eq!(r.device, "provider default", "{r:?}");
    }

    // A provider this machine does not have: its name and OpenSSL's reason.
    let e = Devices::load(&names(&["fips"]), &[]).unwrap_err();
    assert_eq!((e.what, e.index, e.name.as_str()), ("provider", 0, "fips"));
    assert!(!e.reason.is_empty());
    assert!(
        e.to_string()
            .starts_with("OpenSSL provider \"fips\" failed to start: "),
        "{e}"
    );

    // Another provider is preferred, and what it lacks falls back to default: legacy
    // has none of the TLS algorithms, so every route stays on default, and crypto works.
    let d = Devices::load(&names(&["legacy"]), &[]).unwrap();
    assert_eq!(d.providers().collect::<Vec<_>>(), ["legacy", "default"]);
    for r in d.routes() {
        assert_eq!(r.device, "provider default", "{r:?}");
    }
    let mut k = AeadKey::new(AeadAlg::Aes128Gcm, &[7; 16], true).unwrap();
    let mut buf = *b"still works";
    let mut tag = [0; 16];
    k.seal(&[1; 12], b"", &mut buf, &mut tag).unwrap();
    assert_ne!(&buf, b"still works");

    // Engines by id: an unknown one fails by name; afalg starts only where the kernel
    // offers AF_ALG, and either way says so.
    let e = Devices::load(&[], &names(&["no-such-engine"])).unwrap_err();
    assert_eq!((e.what, e.name.as_str()), ("engine", "no-such-engine"));
    match Devices::load(&[], &names(&["afalg"])) {
        Ok(d) => {
            assert_eq!(d.engines().collect::<Vec<_>>(), ["afalg"]);
            eprintln!("afalg loaded; routes: {:?}", d.routes());
        }
        Err(e) => {
            assert_eq!((e.what, e.index, e.name.as_str()), ("engine", 0, "afalg"));
            assert!(!e.reason.is_empty());
            eprintln!("afalg is not available here: {e}");
        }
    }
}
