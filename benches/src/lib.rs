//! Support for taskwire's benchmarks: the codec workloads, the RPC load generator, and
//! reporting each taskwire figure as a ratio against the peer measured in the same run.
#![forbid(unsafe_code)]

pub mod codec;
pub mod load;

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

/// The codec comparisons `benches/codec_ratios.rs` measures. The codec issue sets the goals
/// against bare prost and bare serde_json decoding and against bare prost encoding; the
/// others (at least as fast as `LengthDelimitedCodec` plus prost, JSON encoding within
/// 0.85× of serde_json) are this project's own bar.
pub const CODEC_COMPARISONS: &[Comparison] = &[
    Comparison {
        group: "decode",
        ours: "framed-binary",
        peer: "bare-prost",
        goal: 0.9,
    },
    Comparison {
        group: "decode",
        ours: "framed-binary-one-type",
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
        ours: "framed-binary-one-type",
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
        group: "json-decode",
        ours: "framed-json-one-type",
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
