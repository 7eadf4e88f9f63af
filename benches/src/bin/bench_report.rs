//! Prints the codec benchmarks' median ratios from criterion's results in
//! `target/criterion` (run `cargo bench -p taskwire-benches --bench codec` first).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    let table = taskwire_benches::codec_report(&dir);
    if table.lines().count() <= 2 {
        eprintln!(
            "no criterion results under {}: run `cargo bench -p taskwire-benches --bench codec` first",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    println!("{table}");
    ExitCode::SUCCESS
}
