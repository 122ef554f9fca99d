//! The Debian package: `tools/package.sh --debug` builds it, `dpkg -i` installs it, the
//! shipped configuration passes `appliance --check`, `systemd-analyze verify` accepts
//! the unit, `appliancectl` runs, and `dpkg --purge` removes every file again. Needs
//! root; changes the machine's package database for the duration of the test.

use std::path::Path;
use std::process::Command;

use tests::veth::{repo, require_root};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_package_installs_checks_and_purges_cleanly() {
    require_root();
    let installed = run(&["dpkg-query", "-W", "-f=${Status}", "appliance"]);
    if String::from_utf8_lossy(&installed.stdout).contains("install ok installed") {
        panic!("an appliance package is installed on this machine already; not touching it");
    }
    let script = repo().join("tools/package.sh");
    let deb = ok(&["bash", script.to_str().unwrap(), "--debug"]);
    let deb = deb.lines().last().unwrap().trim().to_string();
    let deb = repo().join(deb);
    assert!(deb.exists(), "{}", deb.display());
    let fields = ok(&[
        "dpkg-deb",
        "-f",
        deb.to_str().unwrap(),
        "Package",
        "Depends",
    ]);
    assert!(fields.contains("Package: appliance"), "{fields}");
    assert!(
        fields.contains("libssl3") && fields.contains("librte-eal"),
        "{fields}"
    );

    // Its Depends are what the tests run with already (DPDK, OpenSSL): dpkg alone.
    ok(&["dpkg", "-i", deb.to_str().unwrap()]);
    let cleanup = scopeguard(|| {
        let _ = run(&["dpkg", "--purge", "appliance"]);
    });
    for f in [
        "/usr/bin/appliance",
        "/usr/bin/appliancectl",
        "/etc/appliance/appliance.toml",
        "/lib/systemd/system/appliance.service",
        "/etc/logrotate.d/appliance",
        "/usr/share/doc/appliance/README.md",
        "/usr/share/man/man8/appliance.8.gz",
        "/usr/share/man/man1/appliancectl.1.gz",
        "/usr/share/man/man1/appliancectl-backend.1.gz",
        "/usr/share/bash-completion/completions/appliancectl",
    ] {
        assert!(Path::new(f).exists(), "{f} installed");
    }
    let check = ok(&[
        "/usr/bin/appliance",
        "--config",
        "/etc/appliance/appliance.toml",
        "--check",
    ]);
    assert!(check.contains("configuration is valid"), "{check}");
    ok(&[
        "systemd-analyze",
        "verify",
        "/lib/systemd/system/appliance.service",
    ]);
    let unit = std::fs::read_to_string("/lib/systemd/system/appliance.service").unwrap();
    for line in [
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "LimitMEMLOCK=infinity",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "{line}");
    }
    // The man page renders (man-db's formatter, when installed).
    if Path::new("/usr/bin/man").exists() {
        let page = ok(&["man", "-P", "cat", "8", "appliance"]);
        assert!(page.contains("--check"), "{page}");
    }
    let help = ok(&["/usr/bin/appliancectl", "help"]);
    assert!(help.contains("Usage: appliancectl"), "{help}");

    drop(cleanup);
    for f in [
        "/usr/bin/appliance",
        "/etc/appliance/appliance.toml",
        "/lib/systemd/system/appliance.service",
    ] {
        assert!(!Path::new(f).exists(), "{f} removed by purge");
    }
}

/// Runs `f` when dropped (the package is purged even when an assertion fails).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
