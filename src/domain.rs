//! The pure domain: money, the split and its priorities, allocation, amounts,
//! statuses and the state machines of sessions and payments.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time and ids
//! are passed in, which is what lets the rules be property-tested.
//!
//! Imports go one way: `money`, `items`, `status`, `amounts` are leaves;
//! `operation` (kinds, records, transactions) builds on them, `capabilities`
//! and `routing` on `operation`;
//! `session` and `priority` on `operation`; `payment` (the header and its
//! ledger) on all of these; `precondition` names the refusals of the rules;
//! `settlement` (partner reports and how they match our books) on `operation`
//! and `day` (calendar days, a leaf); `dispute` (chargebacks a partner
//! reports) on `money`. `checkout` (partner-hosted checkouts) on `money`.

pub mod amounts;
pub mod capabilities;
pub mod checkout;
pub mod day;
pub mod dispute;
pub mod items;
pub mod money;
pub mod operation;
pub mod payment;
pub mod precondition;
pub mod priority;
pub mod routing;
pub mod session;
pub mod settlement;
pub mod status;
