//! walarch's cluster layer: an instance manager that keeps one PostgreSQL server a member of a
//! replicated, failover-managed cluster (leader lease on etcd, fencing, failover, rejoin), and
//! the Kubernetes integration (to come: the Lease implementation and the operator).
//!
//! - [`leadership`]: the coordination store (the lease, members' published states).
//! - [`member`]: what a member does, as a pure function of what it observes.
//! - [`synchronous`]: the synchronous set and the record promotion relies on.
//! - [`instance`]: the manager that observes, decides and acts (PostgreSQL, HTTP).
//! - [`status`]: the cluster as the store sees it (`walarch-k8s status`).

pub mod instance;
pub mod leadership;
pub mod member;
pub mod operator;
pub mod status;
pub mod synchronous;
