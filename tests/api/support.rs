//! What the tests share: the in-process server and its clients
//! ([`harness`]), private Redis servers ([`redis_server`]), the partner
//! simulations and the sandbox partner as real processes ([`simulator`]),
//! and deployments of several replicas ([`deployment`]); the calls as the
//! tests speak them ([`verbs`]) and waits on conditions ([`waits`]).

pub mod deployment;
pub mod harness;
pub mod redis_server;
pub mod simulator;
pub mod verbs;
pub mod waits;
