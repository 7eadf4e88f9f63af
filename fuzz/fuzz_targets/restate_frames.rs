//! Fuzz target: Restate service protocol frames as an endpoint reads them, decoded and then
//! run as an invocation (`taskwire_restate::fuzzing::check_invocation`). Its corpus is
//! replayed on stable by `crates/taskwire-restate/tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taskwire_restate::fuzzing::check_invocation(data);
});
