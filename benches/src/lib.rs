//! Support for taskwire's benchmarks: reading criterion's results and reporting each
//! taskwire figure as a ratio against the peer measured in the same run.
#![forbid(unsafe_code)]

pub mod load;

use std::path::{Path, PathBuf};

/// A taskwire benchmark beside its peer, with the goal for `peer time ÷ taskwire time`
/// (how fast taskwire is, relative to the peer: above 1 is faster).
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// The criterion group.
    pub group: &'static str,
    /// The taskwire function id.
    pub ours: &'static str,
    /// The peer's function id.
    pub peer: &'static str,
    /// The smallest acceptable speed ratio.
    pub goal: f64,
}

/// The codec comparisons the codec issue sets goals for.
pub const CODEC_COMPARISONS: &[Comparison] = &[
    Comparison {
        group: "decode",
        ours: "framed-binary",
        peer: "bare-prost",
        goal: 0.9,
    },
    Comparison {
        group: "decode",
        ours: "framed-binary",
        peer: "length-delimited+prost",
        goal: 1.0,
    },
    Comparison {
        group: "encode",
        ours: "framed-binary",
        peer: "bare-prost",
        goal: 0.9,
    },
    Comparison {
        group: "encode",
        ours: "framed-binary",
        peer: "length-delimited+prost",
        goal: 1.0,
    },
    Comparison {
        group: "json-decode",
        ours: "framed-json",
        peer: "bare-serde-json",
        goal: 0.85,
    },
    Comparison {
        group: "json-encode",
        ours: "framed-json",
        peer: "bare-serde-json",
        goal: 0.85,
    },
];

/// The sizes the codec benches run at, as criterion parameter labels.
pub const CODEC_SIZES: &[&str] = &["128B", "2KiB", "64KiB"];

/// The median time in nanoseconds of one criterion benchmark, from
/// `target/criterion/GROUP/FUNCTION/PARAMETER/new/estimates.json`.
pub fn median_ns(
    criterion_dir: &Path,
    group: &str,
    function: &str,
    parameter: &str,
) -> Option<f64> {
    let path: PathBuf = [
        criterion_dir,
        Path::new(group),
        Path::new(function),
        Path::new(parameter),
    ]
    .iter()
    .collect::<PathBuf>()
    .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

/// A Markdown table of every comparison at every size found under `criterion_dir`.
pub fn codec_report(criterion_dir: &Path) -> String {
    let mut out = String::from(
        "| group | size | taskwire | median | peer | median | speed ratio | goal |\n|---|---|---|---|---|---|---|---|\n",
    );
    for c in CODEC_COMPARISONS {
        for size in CODEC_SIZES {
            let (Some(ours), Some(peer)) = (
                median_ns(criterion_dir, c.group, c.ours, size),
                median_ns(criterion_dir, c.group, c.peer, size),
            ) else {
                continue;
            };
            let ratio = peer / ours;
            let verdict = if ratio >= c.goal { "met" } else { "missed" };
            out.push_str(&format!(
                "| {} | {size} | {} | {} | {} | {} | {ratio:.2}× | ≥ {:.2}× {verdict} |\n",
                c.group,
                c.ours,
                human(ours),
                c.peer,
                human(peer),
                c.goal
            ));
        }
    }
    out
}

fn human(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The median of each figure over several runs of one scenario, with its range.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// The transport.
    pub transport: &'static str,
    /// Calls in flight.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Runs summarized.
    pub runs: usize,
    /// Calls per second: median, min, max.
    pub calls_per_second: [f64; 3],
    /// p50 latency in µs: median, min, max.
    pub p50_us: [f64; 3],
    /// p99 latency in µs: median, min, max.
    pub p99_us: [f64; 3],
    /// p99.9 latency in µs: median, min, max.
    pub p999_us: [f64; 3],
    /// Failed calls over all runs.
    pub errors: u64,
    /// Client CPU per call in µs: median, min, max.
    pub client_cpu_us: [f64; 3],
    /// Server CPU per call in µs: median, min, max.
    pub server_cpu_us: [f64; 3],
}

fn median_min_max(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    [median, values[0], values[values.len() - 1]]
}

/// Summarizes runs of one scenario (at least one).
pub fn summarize(reports: &[load::Report]) -> Summary {
    let first = &reports[0];
    Summary {
        transport: first.transport,
        concurrency: first.concurrency,
        connections: first.connections,
        runs: reports.len(),
        calls_per_second: median_min_max(reports.iter().map(|r| r.calls_per_second).collect()),
        p50_us: median_min_max(reports.iter().map(|r| r.p50_us).collect()),
        p99_us: median_min_max(reports.iter().map(|r| r.p99_us).collect()),
        p999_us: median_min_max(reports.iter().map(|r| r.p999_us).collect()),
        errors: reports.iter().map(|r| r.errors).sum(),
        client_cpu_us: median_min_max(reports.iter().map(|r| r.client_cpu_us).collect()),
        server_cpu_us: median_min_max(reports.iter().map(|r| r.server_cpu_us).collect()),
    }
}

/// A Markdown table of load summaries.
pub fn load_table(rows: &[Summary]) -> String {
    let mut out = String::from(
        "| transport | concurrency | connections | calls/s (min–max) | p50 µs | p99 µs | p99.9 µs | CPU µs/call client + server | errors |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} | {:.0} | {:.1} + {:.1} | {} |\n",
            r.transport,
            r.concurrency,
            r.connections,
            r.calls_per_second[0],
            r.calls_per_second[1],
            r.calls_per_second[2],
            r.p50_us[0],
            r.p99_us[0],
            r.p999_us[0],
            r.client_cpu_us[0],
            r.server_cpu_us[0],
            r.errors
        ));
    }
    out
}
