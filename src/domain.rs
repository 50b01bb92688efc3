//! The pure domain: money, the split and its priorities, allocation, amounts,
//! statuses and the state machines of sessions and payments.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time and ids
//! are passed in, which is what lets the rules be property-tested.

pub mod amounts;
pub mod items;
pub mod money;
pub mod payment;
pub mod priority;
pub mod routing;
pub mod session;
pub mod status;
