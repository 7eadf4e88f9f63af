//! Support for taskwire's benchmarks: reading criterion's results and reporting each
//! taskwire figure as a ratio against the peer measured in the same run.
#![forbid(unsafe_code)]

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
