//! payment-orchestrator: a gRPC service that runs payments split across
//! several payment partners.
//!
//! Data flows one way: [`api`] → [`payments`] → ([`domain`], [`store`],
//! [`partners`]). [`app`] is the one place that wires the concrete types.

pub mod domain;
