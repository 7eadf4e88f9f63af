//! Fuzz target: the property `taskwire_codec::fuzzing::json_frames` checks. Its
//! corpus is replayed on stable by `crates/taskwire-codec/tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = taskwire_codec::fuzzing::json_frames(data);
});
