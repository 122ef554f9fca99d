//! Tests of every section's checks: the values they accept, their defaults, and the
//! field each mistake names.

use std::path::PathBuf;
use std::time::Duration;

use dataplane::cores::IdlePolicy;

use super::{parse_duration, Balance, CheckKind, Config, DeviceConfig, DEFAULT_CONTROL_SOCKET};
use crate::transmit::{Quantum, TransmitConfig};

const GOOD: &str = r#"
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "--vdev=net_af_packet0,iface=veth-appl"]
cores = [1]
address = "10.77.0.1/24"

[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
"#;

fn err_of(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn good_config_and_defaults() {
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.dataplane.cores, vec![1]);
    assert_eq!(c.dataplane.prefix_len, 24);
    assert_eq!(c.dataplane.idle, IdlePolicy::Adaptive);
    assert_eq!(c.tcp.rx_buffer, 65536);
    assert_eq!(c.vservers[0].backends.len(), 2);
    assert_eq!(c.control.socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!((c.crypto.workers, c.crypto.queue_depth), (0, 256));
    assert!(c.crypto.devices.is_empty() && !c.crypto.record_offload);
    assert_eq!(c.dataplane.mtu, None, "the port's own MTU unless set");
    assert_eq!(c.crypto.primitives, crypto_offload::Primitives::OpenSsl);
    let aws = GOOD.replacen(
        "[[vserver]]",
        "[crypto]\nprimitives = \"aws-lc\"\n[[vserver]]",
        1,
    );
    assert_eq!(
        Config::parse(&aws, "t.toml").unwrap().crypto.primitives,
        crypto_offload::Primitives::AwsLc
    );
    let jumbo = GOOD.replacen("cores = [1]", "cores = [1]\nmtu = 9000", 1);
    assert_eq!(
        Config::parse(&jumbo, "t.toml").unwrap().dataplane.mtu,
        Some(9000)
    );
}

#[test]
fn a_crypto_device_alone_makes_a_pool() {
    let text = GOOD.replacen(
        "[[vserver]]",
        "[[crypto.device]]\nname = \"qat0\"\nproviders = [\"qatprovider\"]\ncpus = [0]\n[[vserver]]",
        1,
    );
    let c = Config::parse(&text, "t.toml").unwrap();
    assert_eq!(
        c.crypto.devices,
        vec![DeviceConfig {
            name: "qat0".into(),
            providers: vec!["qatprovider".into()],
            workers: 1,
            cpus: vec![0],
        }]
    );
    assert_eq!((c.crypto.workers, c.crypto.all_workers()), (0, 1));
    assert!(c.crypto.record_offload, "records go to the pool by default");
}

#[test]
fn backends_balancing_health_and_metrics() {
    let text = GOOD.replace(
        "backends = [\"10.77.0.2:8080\", \"10.77.0.3:8080\"]",
        "backends = [\"10.77.0.2:8080\", { address = \"10.77.0.3:8080\", weight = 3 }]\nbalance = \"least_connections\"\n[vserver.health]\ncheck = \"http\"\npath = \"/healthz\"\nexpect = [200, 204]\ninterval = \"5s\"",
    ) + "\n[metrics]\nlisten = \"127.0.0.1:9464\"\n";
    let c = Config::parse(&text, "t.toml").unwrap();
    let v = &c.vservers[0];
    assert_eq!(v.backends[0].weight, 1);
    assert_eq!(v.backends[1].weight, 3);
    assert_eq!(v.balance, Balance::LeastConnections);
    let h = v.health.as_ref().unwrap();
    assert_eq!(
        h.kind,
        CheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expect: vec![200, 204]
        }
    );
    assert_eq!(
        (h.interval, h.timeout, h.rise, h.fall),
        (Duration::from_secs(5), Duration::from_secs(1), 2, 3)
    );
    assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
    // Defaults: round robin, no checks, no metrics endpoint.
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert_eq!(c.vservers[0].balance, Balance::RoundRobin);
    assert!(c.vservers[0].health.is_none() && c.metrics.is_none());

    let with = |backends: &str, more: &str| {
        err_of(&GOOD.replace(
            "backends = [\"10.77.0.2:8080\", \"10.77.0.3:8080\"]",
            &format!("backends = {backends}\n{more}"),
        ))
    };
    let ok_b = "[\"10.77.0.2:8080\"]";
    for (backends, more, field, why) in [
        (
            "[{ address = \"10.77.0.2:8080\", weight = 0 }]",
            "",
            "vserver[0].backends[0].weight",
            "1..=1000",
        ),
        (
            "[{ address = \"10.77.0.2:8080\", wieght = 2 }]",
            "",
            "vserver[0].backends[0].wieght",
            "unknown field",
        ),
        (
            "[{ weight = 2 }]",
            "",
            "vserver[0].backends[0]",
            "needs address",
        ),
        (
            "[{ address = 5 }]",
            "",
            "vserver[0].backends[0].address",
            "must be a string",
        ),
        ("[7]", "", "vserver[0].backends[0]", "must be \"ip:port\""),
        (
            "[\"10.77.0.2:8080\", \"10.77.0.2:8080\"]",
            "",
            "vserver[0].backends[1]",
            "listed twice",
        ),
        (
            ok_b,
            "balance = \"random\"",
            "vserver[0].balance",
            "least_connections",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"ping\"",
            "vserver[0].health.check",
            "\"tcp\" or \"http\"",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"tcp\"\npath = \"/\"",
            "vserver[0].health.path",
            "only check = \"http\"",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"http\"\npath = \"x y\"",
            "vserver[0].health.path",
            "must start with '/'",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"http\"\nexpect = [700]",
            "vserver[0].health.expect[0]",
            "not an HTTP status",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"http\"\nexpect = []",
            "vserver[0].health.expect",
            "at least one",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"tcp\"\ninterval = \"10ms\"",
            "vserver[0].health.interval",
            "100ms..=1h",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"",
            "vserver[0].health.timeout",
            "at most the interval",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"tcp\"\nfall = 0",
            "vserver[0].health.fall",
            "out of range",
        ),
        (
            ok_b,
            "[vserver.health]\ncheck = \"tcp\"\nrise = 1000",
            "vserver[0].health.rise",
            "out of range",
        ),
    ] {
        let e = with(backends, more);
        assert!(
            e.starts_with(&format!("t.toml: {field}: ")) && e.contains(why),
            "{backends} {more}: {e}"
        );
    }
    let e = err_of(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
    assert!(e.starts_with("t.toml: metrics.listen: "), "{e}");
    let e = err_of(&format!("{GOOD}\n[metrics]\nlisten = \"10.77.0.1:9464\"\n"));
    assert!(e.contains("management network"), "{e}");
    let e = err_of(&format!("{GOOD}\n[metrics]\nport = 9464\n"));
    assert!(e.contains("unknown field `port`"), "{e}");
}

#[test]
fn each_mistake_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("driver = \"dpdk\"", "driver = \"pcap\"", "dataplane.driver"),
        ("cores = [1]", "cores = []", "dataplane.cores"),
        ("cores = [1]", "cores = [1, 1]", "dataplane.cores[1]"),
        ("cores = [1]", "cores = [1]\nmtu = 9300", "dataplane.mtu"),
        (
            "[[vserver]]",
            "[crypto]\nprimitives = \"boringssl\"\n[[vserver]]",
            "crypto.primitives",
        ),
        (
            "[[vserver]]",
            "[crypto]\nprimitives = \"aws-lc\"\nproviders = [\"default\"]\n[[vserver]]",
            "crypto.primitives",
        ),
        ("cores = [1]", "cores = [1]\nmtu = 100", "dataplane.mtu"),
        ("10.77.0.1/24\"", "10.77.0.1\"", "dataplane.address"),
        ("10.77.0.1/24\"", "10.77.0.1/40\"", "dataplane.address"),
        (
            "listen = \"10.77.0.1:80\"",
            "listen = \"10.77.0.1:99999\"",
            "vserver[0].listen",
        ),
        (
            "listen = \"10.77.0.1:80\"",
            "listen = \"10.77.0.9:80\"",
            "vserver[0].listen",
        ),
        (
            "listen = \"10.77.0.1:80\"",
            "listen = \"10.77.0.1:50000\"",
            "vserver[0].listen",
        ),
        ("mode = \"tcp\"", "mode = \"tls\"", "vserver[0].tls"),
        ("mode = \"tcp\"", "mode = \"socks5\"", "vserver[0].tls"),
        ("mode = \"tcp\"", "mode = \"udp\"", "vserver[0].mode"),
        (
            "\"10.77.0.3:8080\"",
            "\"10.99.0.3:8080\"",
            "vserver[0].backends[1]",
        ),
        (
            "\"10.77.0.3:8080\"",
            "\"nonsense\"",
            "vserver[0].backends[1]",
        ),
        ("name = \"web\"", "name = \"we b\"", "vserver[0].name"),
        (
            "[[vserver]]",
            "[crypto]\nworkers = -1\n[[vserver]]",
            "crypto.workers",
        ),
        (
            "[[vserver]]",
            "[crypto]\nworkers = 1\ncpus = [1]\n[[vserver]]",
            "crypto.cpus[0]",
        ),
        (
            "[[vserver]]",
            "[crypto]\ncpus = [0]\n[[vserver]]",
            "crypto.cpus",
        ),
        (
            "[[vserver]]",
            "[crypto]\nworkers = 1\nqueue_depth = 0\n[[vserver]]",
            "crypto.queue_depth",
        ),
        (
            "[[vserver]]",
            "[crypto]\nrecords = \"pool\"\n[[vserver]]",
            "crypto.records",
        ),
        (
            "[[vserver]]",
            "[crypto]\nworkers = 1\nrecords = \"gpu\"\n[[vserver]]",
            "crypto.records",
        ),
        (
            "[[vserver]]",
            "[crypto]\nworkers = 1\nrecord_batch = 0\n[[vserver]]",
            "crypto.record_batch",
        ),
        (
            "[[vserver]]",
            "[crypto]\nproviders = [\"default\", \"qat provider\"]\n[[vserver]]",
            "crypto.providers[1]",
        ),
        (
            "[[vserver]]",
            "[crypto]\nengines = [\"afalg\", \"afalg\"]\n[[vserver]]",
            "crypto.engines[1]",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nproviders = [\"qat\"]\n[[vserver]]",
            "crypto.device[0].name",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nname = \"cpu\"\nproviders = [\"qat\"]\n[[vserver]]",
            "crypto.device[0].name",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\n[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\n[[vserver]]",
            "crypto.device[1].name",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nname = \"q\"\n[[vserver]]",
            "crypto.device[0].providers",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\nworkers = 0\n[[vserver]]",
            "crypto.device[0].workers",
        ),
        (
            "[[vserver]]",
            "[[crypto.device]]\nname = \"q\"\nproviders = [\"qat\"]\ncpus = [1]\n[[vserver]]",
            "crypto.device[0].cpus[0]",
        ),
    ];
    for (from, to, field) in cases {
        assert!(GOOD.contains(from), "{from}");
        let e = err_of(&GOOD.replacen(from, to, 1));
        assert!(e.starts_with(&format!("t.toml: {field}: ")), "{field}: {e}");
    }
}

#[test]
fn unknown_fields_and_syntax_errors_point_at_the_line() {
    let e = err_of(&GOOD.replace("cores = [1]", "cores = [1]\ncoers = [2]"));
    assert!(
        e.contains("unknown field `coers`") && e.contains("line"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("cores = [1]", "cores = [1"));
    assert!(e.starts_with("t.toml: ") && e.contains("line"), "{e}");
    let e = err_of(&GOOD.replace(
        "[[vserver]]",
        "[tcp]\nidle_timeout = \"10 parsecs\"\n[[vserver]]",
    ));
    assert!(e.contains("tcp.idle_timeout"), "{e}");
}

#[test]
fn vserver_conflicts_are_refused() {
    let two = format!("{GOOD}\n[[vserver]]\nname = \"web\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:1\"]\n");
    assert!(err_of(&two).contains("vserver[1].name"));
    let two = format!("{GOOD}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:1\"]\n");
    assert!(err_of(&two).contains("already used by vserver \"web\""));
    let none = GOOD.split("[[vserver]]").next().unwrap();
    assert!(err_of(none).contains("no [[vserver]]"));
}

/// A `tls` vserver over a certificate made with the openssl CLI in a temp dir.
fn tls_config(dir: &std::path::Path, tls_extra: &str) -> String {
    if !dir.join("ec.pem").exists() {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=t", "-keyout", "ec.key", "-out", "ec.pem"])
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(o.status.success());
    }
    let d = dir.display();
    GOOD.replace("mode = \"tcp\"", "mode = \"tls\"")
        + &format!(
            "[vserver.tls]\ncertificates = [{{ chain = \"{d}/ec.pem\", key = \"{d}/ec.key\" }}]\n{tls_extra}\n"
        )
}

#[test]
fn tls_settings_and_their_mistakes() {
    let dir = std::env::temp_dir().join(format!("appliance-cfg-{}", std::process::id()));
    let c = Config::parse(
        &tls_config(
            &dir,
            "session_cache = 0\nticket_rotation = \"10m\"\npsk_modes = [\"psk_ke\"]\nclient_auth = \"optional\"\nclient_ca = \"ec.pem\"",
        ),
        &dir.join("t.toml").to_string_lossy(),
    )
    .unwrap();
    let tls = c.vservers[0].tls.as_ref().unwrap();
    assert!(tls.resumption.store.is_none() && tls.resumption.tickets.is_some());
    assert_eq!(tls.resumption.psk_modes, [tls::PskMode::PskKe]);
    assert!(tls.client_auth.as_ref().is_some_and(|a| !a.required));
    // Suites (IANA names, either version, in preference order) and groups.
    let c = Config::parse(
        &tls_config(
            &dir,
            "suites = [\"TLS_CHACHA20_POLY1305_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\", \"TLS_AES_128_GCM_SHA256\"]\ngroups = [\"P-256\", \"x25519mlkem768\", \"x25519\"]",
        ),
        "t.toml",
    )
    .unwrap();
    let tls = c.vservers[0].tls.as_ref().unwrap();
    use tls::msgs::{group, suite};
    assert_eq!(
        tls.suites13,
        [
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS13_AES_128_GCM_SHA256
        ]
    );
    assert_eq!(tls.suites12, [suite::ECDHE_ECDSA_AES256_GCM_SHA384]);
    assert_eq!(
        tls.groups,
        [group::SECP256R1, group::X25519MLKEM768, group::X25519]
    );
    let cases = [
        ("suites = [\"RC4-MD5\"]", "vserver[0].tls.suites[0]"),
        (
            "suites = [\"TLS_AES_128_GCM_SHA256\", \"TLS_AES_128_GCM_SHA256\"]",
            "vserver[0].tls.suites[1]",
        ),
        // TLS 1.2 is on by default, and no TLS 1.2 suite is listed.
        (
            "suites = [\"TLS_AES_128_GCM_SHA256\"]",
            "vserver[0].tls.suites",
        ),
        ("groups = [\"ffdhe2048\"]", "vserver[0].tls.groups[0]"),
        ("groups = []", "vserver[0].tls.groups"),
        ("psk_modes = [\"psk\"]", "vserver[0].tls.psk_modes[0]"),
        (
            "session_lifetime = \"200h\"",
            "vserver[0].tls.session_lifetime",
        ),
        ("session_cache = -1", "vserver[0].tls.session_cache"),
        ("ticket_rotation = \"0s\"", "vserver[0].tls.ticket_rotation"),
        ("client_auth = \"maybe\"", "vserver[0].tls.client_auth"),
        ("client_auth = \"required\"", "vserver[0].tls.client_ca"),
        ("client_ca = \"ec.pem\"", "vserver[0].tls.client_auth"),
        (
            "client_auth = \"required\"\nclient_ca = \"missing.pem\"",
            "vserver[0].tls.client_ca",
        ),
        // An endless file is refused after 1 MiB, not read for ever.
        (
            "client_auth = \"required\"\nclient_ca = \"/dev/zero\"",
            "vserver[0].tls.client_ca",
        ),
    ];
    for (extra, field) in cases {
        let e = Config::parse(&tls_config(&dir, extra), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("t.toml: {field}: ")), "{extra}: {e}");
        if extra.contains("/dev/zero") {
            assert!(e.contains("larger than 1048576 bytes"), "{e}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transmit_settings_and_their_mistakes() {
    let dir = std::env::temp_dir().join(format!("appliance-tx-{}", std::process::id()));
    let t = |extra: &str| tls_config(&dir, "") + "[vserver.transmit]\n" + extra;
    let c = Config::parse(&tls_config(&dir, ""), "t.toml").unwrap();
    assert_eq!(c.vservers[0].transmit, TransmitConfig::default());
    let c = Config::parse(
        &t("quantum_segments = 4\ntimer = \"500us\"\nfin = false\npsh = false\nhttp = true"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.vservers[0].transmit,
        TransmitConfig {
            quantum: Quantum::Segments(4),
            timer: Duration::from_micros(500),
            fin: false,
            psh: false,
            http: true,
        }
    );
    let cases = [
        ("quantum = 100", "vserver[0].transmit.quantum"),
        ("quantum = 16385", "vserver[0].transmit.quantum"),
        (
            "quantum_segments = 0",
            "vserver[0].transmit.quantum_segments",
        ),
        (
            "quantum = 4096\nquantum_segments = 2",
            "vserver[0].transmit",
        ),
        ("timer = \"2m\"", "vserver[0].transmit.timer"),
        ("timer = \"5\"", "vserver[0].transmit.timer"),
    ];
    for (extra, field) in cases {
        let e = Config::parse(&t(extra), "t.toml").unwrap_err().to_string();
        assert!(e.starts_with(&format!("t.toml: {field}: ")), "{extra}: {e}");
    }
    let e = Config::parse(&t("nagle = true"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nagle"), "{e}");
    let tcp = GOOD.to_string() + "[vserver.transmit]\ntimer = \"1ms\"\n";
    let e = Config::parse(&tcp, "t.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("t.toml: vserver[0].transmit: only a vserver with mode = \"tls\""),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_vservers_share_a_listener_by_name() {
    let dir = std::env::temp_dir().join(format!("appliance-sni-{}", std::process::id()));
    let one = tls_config(&dir, "server_names = [\"a.example\"]");
    let d = dir.display();
    let with = |first: &str, names: &str, mode: &str| {
        format!(
            "{first}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"{mode}\"\nbackends = [\"10.77.0.9:1\"]\n[vserver.tls]\ncertificates = [{{ chain = \"{d}/ec.pem\", key = \"{d}/ec.key\" }}]\n{names}\n"
        )
    };
    let second = |names: &str, mode: &str| with(&one, names, mode);
    let c = Config::parse(&second("server_names = [\"*.B.example\"]", "tls"), "t.toml").unwrap();
    assert_eq!(c.vservers.len(), 2);
    assert_eq!(
        c.vservers[1].tls.as_ref().unwrap().sites[0].names,
        ["*.b.example"]
    );
    // Both keep the certificate's own name "t": SNI could not tell them apart.
    let e = Config::parse(&with(&tls_config(&dir, ""), "", "tls"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "t.toml: vserver[1].tls.server_names: \"t\" is also served by vserver \"web\""
        ),
        "{e}"
    );
    let e = Config::parse(&second("server_names = [\"A.example\"]", "tls"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vserver[1].tls.server_names: \"a.example\" is also served"),
        "{e}"
    );
    // A plain TCP vserver cannot share: nothing would choose between them.
    let tcp = format!("{one}\n[[vserver]]\nname = \"b\"\nlisten = \"10.77.0.1:80\"\nmode = \"tcp\"\nbackends = [\"10.77.0.9:1\"]\n");
    let e = Config::parse(&tcp, "t.toml").unwrap_err().to_string();
    assert!(e.starts_with("t.toml: vserver[1].listen: port 80 is already used by vserver \"web\"; only vservers with mode = \"tls\""), "{e}");
    for (names, field) in [
        ("server_names = []", "vserver[1].tls.server_names"),
        ("server_names = [\"a b\"]", "vserver[1].tls.server_names[0]"),
        (
            "server_names = [\"x.*.example\"]",
            "vserver[1].tls.server_names[0]",
        ),
        (
            "server_names = [\"-x.example\"]",
            "vserver[1].tls.server_names[0]",
        ),
    ] {
        let e = Config::parse(&second(names, "tls"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("t.toml: {field}: ")), "{names}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("s").is_err());
    // Hours or minutes beyond 64 bits of seconds are an error, not an overflow (found
    // by the config fuzz target: fuzz/corpus/config/regress-duration-overflow).
    assert!(parse_duration("5124095576030432h").is_err());
    assert!(parse_duration("307445734561825861m").is_err());
    assert_eq!(
        parse_duration("5124095576030431h").unwrap(),
        Duration::from_secs(5_124_095_576_030_431 * 3600)
    );
    let crash = include_str!("../../../fuzz/corpus/config/regress-duration-overflow");
    let e = Config::parse(crash, "t.toml").unwrap_err().to_string();
    assert!(
        e.contains("tcp.handshake_timeout") && e.contains("longer than any duration"),
        "{e}"
    );
}

#[test]
fn cluster_and_session_store_and_their_mistakes() {
    let dir = std::env::temp_dir().join(format!("tlsa-cfgcluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    std::fs::write(&key, [7u8; 40]).unwrap();
    let mode = |m: u32| {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    mode(0o600);
    let with = |cluster: &str, store: &str| {
        format!(
            "{GOOD}\n[cluster]\nkey_file = \"{}\"\n{cluster}\n[session_store]\n{store}\n",
            key.display()
        )
    };
    let ok = with(
        "node = \"a\"\nlisten = \"10.80.0.1:7946\"\npeers = [\"10.80.0.2:7946\"]",
        "redis = [\"10.80.0.100:6379\"]\nlookup_timeout = \"7ms\"",
    );
    let c = Config::parse(&ok, "t.toml").unwrap();
    let cl = c.cluster.as_ref().unwrap();
    assert_eq!((cl.node.as_str(), cl.peers.len()), ("a", 1));
    assert_eq!(c.session_store.lookup_timeout, Duration::from_millis(7));
    assert_eq!(c.session_store.redis.len(), 1);
    // Without either table: local sessions only, a 5 ms deadline.
    let c = Config::parse(GOOD, "t.toml").unwrap();
    assert!(c.cluster.is_none() && c.session_store.redis.is_empty());
    assert_eq!(c.session_store.lookup_timeout, Duration::from_millis(5));

    let base = "node = \"a\"\nlisten = \"10.80.0.1:7946\"";
    for (cluster, store, field, why) in [
        (
            "node = \"a b\"\nlisten = \"10.80.0.1:7946\"\npeers = [\"10.80.0.2:7946\"]",
            "",
            "cluster.node",
            "letters",
        ),
        (
            "node = \"a\"\nlisten = \"10.77.0.1:7946\"\npeers = [\"10.80.0.2:7946\"]",
            "",
            "cluster.listen",
            "data plane",
        ),
        (
            "node = \"a\"\nlisten = \"10.80.0.1:7946\"\npeers = [\"10.80.0.1:7946\"]",
            "",
            "cluster.peers[0]",
            "own listen",
        ),
        (
            "node = \"a\"\nlisten = \"10.80.0.1:7946\"\nmulticast = \"10.80.0.9:7946\"",
            "",
            "cluster.multicast",
            "not a multicast",
        ),
        (
            "node = \"a\"\nlisten = \"10.80.0.1:7946\"\npeers = [\"nope\"]",
            "",
            "cluster.peers[0]",
            "not an IPv4",
        ),
        (
            "node = \"a\"\nlisten = \"10.80.0.1:7946\"\nmulticast = \"239.255.77.1:7946\"",
            "lookup_timeout = \"5s\"",
            "session_store.lookup_timeout",
            "between 1ms and 1s",
        ),
        (
            "node = \"a\"\nlisten = \"10.80.0.1:7946\"\nmulticast = \"239.255.77.1:7946\"",
            "redis = [\"redis.example\"]",
            "session_store.redis[0]",
            "address:port",
        ),
    ] {
        let e = err_of(&with(cluster, store));
        assert!(
            e.contains(field) && e.contains(why),
            "{cluster} / {store}: {e}"
        );
    }
    // No peers and no group: the repository alone is shared.
    let c = Config::parse(&with(base, "redis = [\"10.80.0.100:6379\"]"), "t.toml").unwrap();
    let cl = c.cluster.unwrap();
    assert!(cl.peers.is_empty() && cl.multicast.is_none());
    // Redis without a cluster key is refused: sessions leave the node sealed.
    let e = err_of(&format!(
        "{GOOD}\n[session_store]\nredis = [\"10.80.0.100:6379\"]\n"
    ));
    assert!(
        e.contains("session_store.redis") && e.contains("key_file"),
        "{e}"
    );
    // A key file others may read is refused, naming it and its mode.
    mode(0o644);
    let e = err_of(&ok);
    assert!(
        e.contains("cluster.key_file") && e.contains("0644") && e.contains("cluster.key"),
        "{e}"
    );
    mode(0o600);
    std::fs::write(&key, [7u8; 16]).unwrap();
    let e = err_of(&ok);
    assert!(e.contains("cluster.key_file") && e.contains("32"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vservers_whose_names_share_a_session_table_are_refused() {
    // Find two names with the same 16-bit table id (the id is SHA-256 based; a search
    // over a few hundred names finds a pair).
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..100_000)
        .map(|i| format!("v{i}"))
        .find_map(|n| {
            let t = crate::sessions::table_of(&n);
            seen.insert(t, n.clone()).map(|o| (o, n))
        })
        .unwrap();
    let text = format!(
        "{GOOD}\n[[vserver]]\nname = \"{a}\"\nlisten = \"10.77.0.1:81\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:80\"]\n[[vserver]]\nname = \"{b}\"\nlisten = \"10.77.0.1:82\"\nmode = \"tcp\"\nbackends = [\"10.77.0.2:80\"]\n"
    );
    let e = err_of(&text);
    assert!(
        e.contains("vserver[2].name") && e.contains("same session table"),
        "{e}"
    );
}

#[test]
fn socks5_settings_and_their_mistakes() {
    let dir = std::env::temp_dir().join(format!("appliance-socks-{}", std::process::id()));
    let base = tls_config(&dir, "")
        .replace("mode = \"tls\"", "mode = \"socks5\"")
        .replace("backends = [\"10.77.0.2:8080\", \"10.77.0.3:8080\"]\n", "");
    let hash = crypto_offload::password::hash(b"pw").unwrap();
    std::fs::write(dir.join("users"), format!("alice:{hash}\n")).unwrap();
    let with = |socks: &str| format!("{base}[vserver.socks]\n{socks}\n");
    let good = with("auth = [\"password\"]\nusers_file = \"users\"\nallow = [\"10.77.0.0/24\", \"192.0.2.10/32:53\"]\ndeny = [\"10.77.0.9/32\"]");
    let c = Config::parse(&good, &dir.join("t.toml").display().to_string()).unwrap();
    let s = c.vservers[0].socks.as_ref().unwrap();
    assert!(s.auth_password && !s.auth_none && !s.auth_certificate);
    assert_eq!(
        (s.users.len(), s.replay_window, s.plain_udp),
        (1, 64, false)
    );
    assert!(s.allowed("10.77.0.2:80".parse().unwrap()));
    assert!(!s.allowed("10.77.0.9:80".parse().unwrap()), "deny wins");
    assert!(s.allowed("192.0.2.10:53".parse().unwrap()));
    assert!(!s.allowed("192.0.2.10:54".parse().unwrap()));
    assert!(s.routable("10.77.0.2".parse().unwrap()));
    assert!(!s.routable("192.0.2.10".parse().unwrap()), "no gateway");
    assert!(
        !s.routable("10.77.0.1".parse().unwrap()),
        "the appliance itself"
    );
    let file = dir.join("t.toml").display().to_string();
    let err = |text: &str| Config::parse(text, &file).unwrap_err().to_string();
    for (text, field, says) in [
        (base.clone(), "vserver[0].socks", "needs a [vserver.socks]"),
        (
            with("auth = [\"none\"]"),
            "vserver[0].socks.allow",
            "open proxy",
        ),
        (
            with("auth = []\nallow = [\"0.0.0.0/0\"]"),
            "vserver[0].socks.auth",
            "at least one",
        ),
        (
            with("auth = [\"kerberos\"]\nallow = [\"0.0.0.0/0\"]"),
            "vserver[0].socks.auth[0]",
            "not a method",
        ),
        (
            with(
                "auth = [\"none\", \"password\"]\nusers_file = \"users\"\nallow = [\"0.0.0.0/0\"]",
            ),
            "vserver[0].socks.auth",
            "cannot be combined",
        ),
        (
            with("auth = [\"password\"]\nallow = [\"0.0.0.0/0\"]"),
            "vserver[0].socks.users_file",
            "needs a users_file",
        ),
        (
            with("auth = [\"certificate\"]\nallow = [\"0.0.0.0/0\"]"),
            "vserver[0].socks.auth",
            "client_auth",
        ),
        (
            with("auth = [\"password\"]\nusers_file = \"nope\"\nallow = [\"0.0.0.0/0\"]"),
            "vserver[0].socks.users_file",
            "cannot read",
        ),
        (
            with("auth = [\"none\"]\nallow = [\"10.77.0.1/24\"]"),
            "vserver[0].socks.allow[0]",
            "host bits",
        ),
        (
            with("auth = [\"none\"]\nallow = [\"0.0.0.0/0\"]\ndeny = [\"x\"]"),
            "vserver[0].socks.deny[0]",
            "IPv4",
        ),
        (
            with("auth = [\"none\"]\nallow = [\"0.0.0.0/0\"]\nreplay_window = 10"),
            "vserver[0].socks.replay_window",
            "64..8192",
        ),
        (
            with("auth = [\"none\"]\nallow = [\"0.0.0.0/0\"]").replace(
                "mode = \"socks5\"",
                "mode = \"socks5\"\nbackends = [\"10.77.0.2:80\"]",
            ),
            "vserver[0].backends",
            "no backends",
        ),
    ] {
        let e = err(&text);
        assert!(e.contains(field) && e.contains(says), "{field}: {e}");
    }
    std::fs::write(dir.join("bad-users"), "alice:plaintext\n").unwrap();
    let e = err(&with(
        "auth = [\"password\"]\nusers_file = \"bad-users\"\nallow = [\"0.0.0.0/0\"]",
    ));
    assert!(e.contains("line 1") && e.contains("not an Argon2"), "{e}");
}

#[test]
fn passive_health_settings_and_their_mistakes() {
    let with =
        |extra: &str| GOOD.to_string() + &format!("[vserver.health]\ncheck = \"tcp\"\n{extra}\n");
    let c = Config::parse(&with("observe = \"layer4\""), "t.toml").unwrap();
    assert_eq!(c.vservers[0].health.as_ref().unwrap().error_limit, Some(10));
    let c = Config::parse(&with("observe = \"layer4\"\nerror_limit = 3"), "t.toml").unwrap();
    assert_eq!(c.vservers[0].health.as_ref().unwrap().error_limit, Some(3));
    let c = Config::parse(&with(""), "t.toml").unwrap();
    assert_eq!(c.vservers[0].health.as_ref().unwrap().error_limit, None);
    for (extra, field) in [
        ("error_limit = 3", "vserver[0].health.error_limit"),
        ("observe = \"layer7\"", "vserver[0].health.observe"),
        (
            "observe = \"layer4\"\nerror_limit = 0",
            "vserver[0].health.error_limit",
        ),
    ] {
        let e = err_of(&with(extra));
        assert!(e.contains(field), "{extra}: {e}");
    }
}

#[test]
fn ocsp_files_are_checked_and_name_their_field() {
    let dir = std::env::temp_dir().join(format!("appliance-ocsp-{}", std::process::id()));
    let base = tls_config(&dir, "");
    let d = dir.display();
    let field = "vserver[0].tls.certificates[0].ocsp";
    std::fs::write(dir.join("junk.ocsp"), b"not an OCSP response").unwrap();
    for (file, says) in [
        ("missing.ocsp", "cannot read"),
        ("junk.ocsp", "not DER OCSP"),
    ] {
        let text = base.replace(
            &format!("key = \"{d}/ec.key\" }}"),
            &format!("key = \"{d}/ec.key\", ocsp = \"{d}/{file}\" }}"),
        );
        assert_ne!(text, base);
        let e = err_of(&text);
        assert!(e.contains(field) && e.contains(says), "{file}: {e}");
    }
}

#[test]
fn backend_tls_settings_and_their_mistakes() {
    let dir = std::env::temp_dir().join(format!("appliance-cfg-btls-{}", std::process::id()));
    let file = dir.join("t.toml").to_string_lossy().into_owned();
    let with = |extra: &str| tls_config(&dir, &format!("\n[vserver.backend_tls]\n{extra}"));
    // A CA and a name: one client configuration per backend, each checking the name.
    let c = Config::parse(
        &with("ca = \"ec.pem\"\nserver_name = \"API.internal\"\nalpn = [\"http/1.1\"]\nversions = [\"1.3\"]\nsuites = [\"TLS_CHACHA20_POLY1305_SHA256\"]"),
        &file,
    )
    .unwrap();
    let b = c.vservers[0].backend_tls.as_ref().unwrap();
    assert_eq!(b.per_backend.len(), 2);
    assert_eq!(b.server_name.as_deref(), Some("api.internal"));
    assert!(b.verify && b.session_reuse);
    let cc = &b.per_backend[1];
    assert_eq!(cc.verifier.as_ref().unwrap().name(), "api.internal");
    assert_eq!(
        cc.suites,
        [tls::msgs::suite::TLS13_CHACHA20_POLY1305_SHA256]
    );
    assert_eq!(cc.alpn, [b"http/1.1".to_vec()]);
    // The default: both versions, every suite.
    let c = Config::parse(&with("ca = \"ec.pem\""), &file).unwrap();
    let cc = &c.vservers[0].backend_tls.as_ref().unwrap().per_backend[0];
    assert_eq!(cc.suites, tls::msgs::suite::ALL);
    let c = Config::parse(&with("ca = \"ec.pem\"\nversions = [\"1.2\"]"), &file).unwrap();
    let cc = &c.vservers[0].backend_tls.as_ref().unwrap().per_backend[0];
    assert!(cc.suites.len() == 6 && cc.suites.iter().all(|s| s >> 8 != 0x13));
    // Without a name, each backend's IP address is what its certificate must carry.
    let c = Config::parse(&with("ca = \"ec.pem\"\nsession_reuse = false"), &file).unwrap();
    let b = c.vservers[0].backend_tls.as_ref().unwrap();
    assert_eq!(
        b.per_backend[0].verifier.as_ref().unwrap().name(),
        "10.77.0.2"
    );
    assert_eq!(
        b.per_backend[1].verifier.as_ref().unwrap().name(),
        "10.77.0.3"
    );
    assert!(b.per_backend[0].server_name.is_none() && !b.session_reuse);
    // A client certificate for backends that ask for one.
    let c = Config::parse(
        &with("ca = \"ec.pem\"\ncertificate = { chain = \"ec.pem\", key = \"ec.key\" }"),
        &file,
    )
    .unwrap();
    let b = c.vservers[0].backend_tls.as_ref().unwrap();
    assert!(b.per_backend.iter().all(|c| c.certificate.is_some()));
    // verify = false: no verifier (and a warning at start).
    let c = Config::parse(&with("verify = false"), &file).unwrap();
    let b = c.vservers[0].backend_tls.as_ref().unwrap();
    assert!(!b.verify && b.per_backend.iter().all(|c| c.verifier.is_none()));
    // Each mistake names its field.
    for (extra, field, why) in [
        ("server_name = \"a\"", "backend_tls.ca", "CA bundle"),
        ("ca = \"missing.pem\"", "backend_tls.ca", "cannot read"),
        (
            "ca = \"ec.pem\"\nverify = false",
            "backend_tls.ca",
            "not used with verify = false",
        ),
        (
            "ca = \"ec.pem\"\nversions = []",
            "backend_tls.versions",
            "at least one version",
        ),
        (
            "ca = \"ec.pem\"\nversions = [\"1.4\"]",
            "backend_tls.versions[0]",
            "not a version",
        ),
        (
            "ca = \"ec.pem\"\nversions = [\"1.3\"]\nsuites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]",
            "backend_tls.suites[0]",
            "TLS 1.2 is not in versions",
        ),
        (
            "ca = \"ec.pem\"\nsuites = [\"TLS_AES_128_GCM_SHA256\"]",
            "backend_tls.suites",
            "no TLS 1.2 suite",
        ),
        (
            "ca = \"ec.pem\"\nsuites = [\"RC4\"]",
            "backend_tls.suites[0]",
            "not a suite",
        ),
        (
            "ca = \"ec.pem\"\nserver_name = \"bad name\"",
            "backend_tls.server_name",
            "not a DNS name",
        ),
        (
            "ca = \"ec.pem\"\nalpn = [\"\"]",
            "backend_tls.alpn[0]",
            "1 to 255 bytes",
        ),
        (
            "ca = \"ec.pem\"\ncertificate = { chain = \"ec.pem\", key = \"nokey.key\" }",
            "backend_tls.certificate.key",
            "cannot read",
        ),
        (
            "ca = \"ec.pem\"\ncertificate = { chain = \"ec.pem\", key = \"ec.pem\" }",
            "backend_tls.certificate",
            "private key",
        ),
        (
            "ca = \"ec.pem\"\ncertificate = { chain = \"ec.pem\" }",
            "",
            "missing field `key`",
        ),
        ("ca = \"ec.pem\"\nsni = \"x\"", "", "unknown field"),
    ] {
        let e = Config::parse(&with(extra), &file).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(why), "{extra}: {e}");
    }
    // A tcp vserver originates TLS towards its backends.
    let tcp = GOOD.to_string() + "[vserver.backend_tls]\nverify = false\n";
    let c = Config::parse(&tcp, "t.toml").unwrap();
    assert!(c.vservers[0]
        .backend_tls
        .as_ref()
        .is_some_and(|b| !b.verify));
    let _ = std::fs::remove_dir_all(&dir);
}
