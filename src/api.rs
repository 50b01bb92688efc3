//! The gRPC edge. Nothing outside this module knows proto types or
//! `tonic::Status`.
//!
//! - One file per service, its conversions beside it in `<service>/convert.rs`:
//!   `sessions`, `payments`, `admin`, `partner_events`, `settlements`.
//! - Shared by them: `auth` (API keys, roles, the interceptor), `violations`
//!   (the one helper every request parser reports through), `views` (the
//!   proto form of sessions, payments and operations), `error` (the one map
//!   from use-case errors to `Status`), [`detached`] (mutating calls that
//!   finish even if their caller leaves) and [`edge`] (the tower layer that
//!   sheds load, bounds time and records each call).
//! - [`events`]: webhook bodies, in the proto3 JSON mapping; the webhook
//!   adapter is handed them by `app.rs`.
//!
//! Depends on `payments` (use cases), `domain`, `partners` (which partners
//! and methods exist) and `webhooks::destinations` (which URLs a merchant
//! may name); nothing depends on it but `app.rs`.

mod admin;
mod auth;
pub mod callbacks;
pub mod detached;
pub mod edge;
mod error;
pub mod events;
mod partner_events;
mod payments;
mod sessions;
mod settlements;
mod views;
mod violations;

pub use admin::AdminService;
pub use auth::{ApiKeys, Merchant, Notifier, Operator, Required, Role};
pub use detached::Detached;
pub use error::ERROR_DOMAIN;
pub use partner_events::PartnerEventService;
pub use payments::PaymentService;
pub use sessions::SessionService;
pub use settlements::SettlementService;

/// Generated code of `proto/payment_orchestrator/v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("payment_orchestrator.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("payment_orchestrator_descriptor");
}
