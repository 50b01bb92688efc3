//! Background work. Every replica runs each worker; a worker is one step
//! (a function tests call directly, with the time they choose) and a loop
//! that calls it on an interval until shutdown. What is shared between
//! replicas is shared through the store, under leases.
//!
//! - [`resolver`]: non-final operations, authorization expiries, settlement
//!   checks (the resolution lane of the due-queue);
//! - [`deliveries`]: webhook deliveries (their own lane);
//! - [`settlement_import`]: the partners' new settlements;
//! - [`readiness`]: follows the store, for the health service.

pub mod deliveries;
pub mod readiness;
pub mod resolver;
pub mod settlement_import;
