//! Fuzz target: the property `taskwire_codec::fuzzing::stream_splitting` checks. Its
//! corpus is replayed on stable by `crates/taskwire-codec/tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taskwire_codec::fuzzing::stream_splitting(data);
});
