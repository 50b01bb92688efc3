//! payment-orchestrator: a gRPC service that runs payments split across
//! several payment partners.
//!
//! Data flows one way: [`api`] → [`payments`] → ([`domain`], [`store`],
//! [`partners`]). [`app`] is the one place that wires the concrete types.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod partners;
pub mod payments;
pub mod resolver;
pub mod simulators;
pub mod store;
pub mod telemetry;
pub mod webhooks;
