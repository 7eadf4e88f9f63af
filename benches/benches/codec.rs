//! Codec benchmarks: each taskwire operation beside the peer it must keep up with, on the
//! same message at three sizes (the workloads live in `taskwire_benches::codec`).
//!
//! | group | taskwire | peer |
//! |---|---|---|
//! | `decode` | `framed-binary`, `framed-binary-one-type` | `bare-prost`, `length-delimited+prost` |
//! | `encode` | `framed-binary`, `framed-binary-one-type` | `bare-prost`, `length-delimited+prost` |
//! | `json-decode` | `framed-json`, `framed-json-one-type` | `bare-serde-json` |
//! | `json-encode` | `framed-json` | `bare-serde-json` |
//!
//! `cargo bench -p taskwire-benches --bench codec` gives each one's time; for the ratios
//! against the peers, `--bench codec_ratios` measures each pair interleaved, which holds
//! up on a shared machine where criterion's one-after-the-other runs drift.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskwire_benches::codec::workloads;

fn codec(c: &mut Criterion) {
    let mut all = workloads();
    for group_name in ["decode", "encode", "json-decode", "json-encode"] {
        let mut group = c.benchmark_group(group_name);
        for workload in all.iter_mut().filter(|w| w.group == group_name) {
            group.throughput(Throughput::Bytes(workload.bytes));
            let run = &mut workload.run;
            group.bench_function(BenchmarkId::new(workload.id, workload.size), |b| {
                b.iter_custom(&mut *run);
            });
        }
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
