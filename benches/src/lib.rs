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

pub use taskwire_load::{Summary, load_table, summarize};
