//! payment-orchestrator: a gRPC service that runs payments split across
//! several payment partners.
//!
//! The map, from the top down; a module imports only modules below it:
//!
//! - [`app`] wires every concrete type together (the one place that does);
//!   `main.rs` reads [`config`], starts [`telemetry`] and runs the app.
//! - [`api`] is the gRPC edge: validation, proto ⇄ domain, the one error →
//!   `Status` map, authentication; it calls [`payments`].
//! - [`workers`] are the background loops (resolver, webhook deliveries,
//!   settlement import, readiness); they drive [`payments`].
//! - [`payments`] are the use cases; they use [`domain`], the [`store`] and
//!   [`partners`] ports, and [`webhooks`] (which the gRPC layer hands the
//!   bodies it renders).
//! - [`webhooks`] signs and sends merchant notifications; [`store`] and
//!   [`partners`] are ports with their adapters (the in-process sandbox
//!   partner of `cargo run` among them; the test doubles of partners live in
//!   the `sandbox-partner` crate).
//! - [`domain`] is pure (money, routing, statuses, the payment's state
//!   machine); [`clock`] and [`telemetry`] are leaves.
//!
//! [`config`] reads flags, the environment and the TOML file; only `app`
//! and `main` read it.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod domain;
pub mod partners;
pub mod payments;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod workers;
