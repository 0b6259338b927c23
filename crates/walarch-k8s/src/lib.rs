//! Kubernetes integration for walarch (custom resources, operator, in-pod instance manager).
//!
//! Not built yet: this crate holds its place in the workspace so that the engine's public API
//! is shaped with an embedding user in mind. See README.md.
