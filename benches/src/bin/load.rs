//! `load`: the RPC load generator.
//!
//! ```text
//! cargo run --release -p taskwire-benches --bin load -- [--duration SECONDS] [--runs N] [--json]
//! ```
//!
//! Runs unary calls (256 B requests, 1 KiB responses) over one connection at concurrency
//! 1 and 64, over QUIC and over TCP+TLS, `--runs` times each (default 3), and prints the
//! median of each figure with its min–max.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use taskwire_benches::load::{self, Report, Scenario};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: f64 = match value("--duration").map(|v| v.parse()) {
        None => 3.0,
        Some(Ok(v)) if v > 0.0 => v,
        Some(_) => {
            eprintln!("error: --duration takes a positive number of seconds");
            return ExitCode::FAILURE;
        }
    };
    let runs: usize = match value("--runs").map(|v| v.parse()) {
        None => 3,
        Some(Ok(v)) if v > 0 => v,
        Some(_) => {
            eprintln!("error: --runs takes a positive whole number");
            return ExitCode::FAILURE;
        }
    };
    let json = args.iter().any(|a| a == "--json");
    let mut rows = Vec::new();
    for (concurrency, connections) in [(1, 1), (64, 1)] {
        let scenario = Scenario {
            concurrency,
            connections,
            request_bytes: 256,
            response_bytes: 1024,
            duration: Duration::from_secs_f64(seconds),
        };
        // Transports alternate run by run, so drift on a shared machine hits both alike.
        let (mut quic, mut tcp): (Vec<Report>, Vec<Report>) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            quic.push(load::quic(scenario));
            tcp.push(load::tcp(scenario));
        }
        rows.push(taskwire_benches::summarize(&quic));
        rows.push(taskwire_benches::summarize(&tcp));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializable")
        );
    } else {
        println!("{}", taskwire_benches::load_table(&rows));
    }
    ExitCode::SUCCESS
}
