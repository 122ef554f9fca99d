//! The negative corpus (`tests::negative`) against the TLS engine in memory: every case
//! gets what its RFC requires. A failure names the case and quotes the requirement.

use tests::negative::{cases, certificate, engine_config, run_engine};

#[test]
fn every_case_of_the_negative_corpus_gets_what_the_rfc_requires() {
    let (chain, key) = certificate();
    let cfg = engine_config(&chain, &key);
    let all = cases();
    let mut names = std::collections::HashSet::new();
    let mut wrong = Vec::new();
    for case in &all {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let got = run_engine(&cfg, &(case.input)());
        if got != case.expect {
            wrong.push(format!(
                "{}: expected {:?}, got {:?}\n    {}",
                case.name, case.expect, got, case.rfc
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        all.len(),
        wrong.join("\n")
    );
}
