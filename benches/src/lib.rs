//! Benchmarks of `walarch-core`; the benches are in `benches/`, and `README.md` beside this
//! crate lists the commands and the latest results.
