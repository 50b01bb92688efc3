//! The pure domain: money, the split and its priorities, allocation, amounts,
//! statuses and the state machines of sessions and payments.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time and ids
//! are passed in, which is what lets the rules be property-tested.
//!
//! Imports go one way: `money`, `items`, `status`, `amounts` and `routing`
//! are leaves; `operation` (kinds, records, transactions) builds on them;
//! `session` and `priority` on `operation`; `payment` (the header and its
//! ledger) on all of these; `precondition` names the refusals of the rules.

pub mod amounts;
pub mod items;
pub mod money;
pub mod operation;
pub mod payment;
pub mod precondition;
pub mod priority;
pub mod routing;
pub mod session;
pub mod status;
