//! Fuzz target: RRQ frames as a runner reads them from an orchestrator's connection
//! (`taskwire_rrq::fuzzing::check_stream`). Its corpus is replayed on stable by
//! `crates/taskwire-rrq/tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taskwire_rrq::fuzzing::check_stream(data);
});
