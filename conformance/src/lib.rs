//! taskwire's conformance kit.
//!
//! * [`sample`]: a message of every registered type, either a deterministic filled-in
//!   example or random values from a seed, built from the schema itself so that no type
//!   is forgotten.
//! * [`vectors`]: the language-neutral golden vectors in `conformance/vectors/` and the
//!   check that runs this crate's codec against them. Another implementation passes when
//!   it decodes every valid vector to its message, encodes that message back to exactly
//!   the vector's bytes, and rejects every invalid vector with the named error kind.
//!
//! * [`kit`]: scripted sessions under `conformance/scripts/`, played against a live server
//!   over TCP and QUIC (`taskwire conformance`).
//!
//! `cargo xtask vectors` regenerates both files; the invalid cases are written
//! by hand in `conformance/src/invalid.rs`.
#![forbid(unsafe_code)]
// A conformance kit panics with context on broken expectations, by design.
#![allow(clippy::missing_panics_doc)]
// Random bits are cut to field widths on purpose, and test lengths are tiny.
#![allow(clippy::cast_possible_truncation)]

mod invalid;
pub mod kit;
pub mod sample;
pub mod vectors;
