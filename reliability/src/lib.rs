//! taskwire's reliability suite.
//!
//! The tests in `tests/` try hostile input against the codec and the servers and measure
//! the memory it costs, inject faults, and load the reference server. This library holds
//! what the fuzz targets share with those tests: [`session_script`], the stateful harness
//! that drives a server session through sequences of Hello, calls, stream items,
//! cancellations, raw bytes, time passing and close, over an in-memory transport.
#![forbid(unsafe_code)]

pub mod fixture;
pub mod session_script;
