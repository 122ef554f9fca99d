//! Finds the system's DPDK with pkg-config and compiles the C shim against it.
//!
//! On a machine without DPDK's development files this fails with one message naming
//! the Debian packages to install, not with a wall of compiler errors.
use std::process::Command;

const HINT: &str = "install them with: apt-get install libdpdk-dev pkg-config \
                    (or run tools/setup.sh, which the README's commands call)";

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("\nerror: dpdk-sys needs DPDK 22.11 or newer, found through pkg-config ({e});\n{HINT}\n");
            panic!("DPDK development files (Debian package libdpdk-dev) not found; {HINT}");
        }
    };
    // pkg-config's cflags carry more than include paths (`-include rte_config.h`,
    // `-march=...`): the shim must be built with exactly what DPDK was built with.
    let cflags = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config ran a moment ago");
    let cflags = String::from_utf8_lossy(&cflags.stdout).to_string();
    let mut build = cc::Build::new();
    build
        .file("shim/shim.c")
        .define("ALLOW_EXPERIMENTAL_API", None);
    for path in &lib.include_paths {
        build.include(path);
    }
    let mut words = cflags.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(h) = words.next() {
                build.flag("-include").flag(h);
            }
        } else if !w.starts_with("-I") {
            build.flag(w);
        }
    }
    build.warnings(true).compile("tlsa_dpdk_shim");
}
