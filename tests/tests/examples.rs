//! The configurations in `examples/` load: each is copied next to freshly made
//! certificates and checked by the configuration loader and by `appliance --check`.

use std::process::Command;

use tests::veth::{binary, make_certs, repo};

#[test]
fn every_example_configuration_loads() {
    let dir = std::env::temp_dir().join(format!("tlsa-examples-{}", std::process::id()));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    // Every file first: configurations name their neighbours (a users file).
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let copy = dir.join(path.file_name().unwrap());
        let cfg = appliance::config::Config::load(&copy)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!cfg.vservers.is_empty());
        let o = Command::new(binary("appliance"))
            .arg("--config")
            .arg(&copy)
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("is valid"),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        seen += 1;
    }
    assert!(seen >= 3, "examples/ has {seen} configurations");
    std::fs::remove_dir_all(&dir).unwrap();
}
