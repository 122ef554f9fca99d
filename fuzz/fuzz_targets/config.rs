//! The configuration parser (TOML, then every section's checks): never panics on any
//! text, and an accepted configuration names at least one vserver. Files it names are
//! read within bounds (certificates at most 1 MiB), so a path to a device cannot hang
//! it; run from a scratch directory, relative paths find nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = appliance::config::Config::parse(text, "/nonexistent/fuzz.toml") {
        assert!(!c.vservers.is_empty());
    }
});
