//! `loadgen`: TLS load against any server. `loadgen --help` lists the flags; the
//! README's "loadgen" section says what each mode measures.

use tools::loadgen::{args, run};

fn main() {
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(args::Parsed::Run(a)) => a,
        Ok(args::Parsed::Help(text)) => {
            print!("{text}");
            return;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let report = match run::run(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if a.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if let Some(path) = &a.plot {
        match report.plot() {
            Some(svg) => {
                if let Err(e) = std::fs::write(path, svg) {
                    eprintln!("loadgen: --plot {}: cannot write it: {e}", path.display());
                    std::process::exit(1);
                }
            }
            None => eprintln!(
                "loadgen: --plot {}: no operation succeeded, nothing to plot",
                path.display()
            ),
        }
    }
    if report.stats.ok == 0 {
        std::process::exit(1);
    }
}
