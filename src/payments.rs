//! The use cases. Each child holds one concern and imports only this parent:
//!
//! - `sessions`: CreateSession, GetSession, CancelSession, SubmitSession;
//! - `operations`: Capture, Refund, Void, GetPayment, GetOperation,
//!   WaitOperation;
//! - `execution`: the only code that calls partners and so moves money;
//! - `steps`: the atomic store steps that record what happened (and what it
//!   implies: due-queue, webhooks, idempotency records, follow-ups);
//! - `idempotency`: keys, fingerprints, derived ids, replays;
//! - `resolution`: the resolver's due work, partner notifications and the
//!   operator's actions;
//! - `listing`: ListPayments, ListOperations, ListSessions;
//! - `settlements`: importing partners' settlement reports, matching them
//!   with our books, and serving them.
//!
//! Money moves in three phases. *Open* is one store step: claim the
//! idempotency key, reserve the amount on the payment header
//! (compare-and-set), write the operation and put it on the due-queue at the
//! end of its lease. *Execute* calls the partners leg by leg. *Conclude* is one
//! store step: the answers, the amounts, the response under the key, the
//! due-queue entry, webhooks and follow-ups. If the process dies in between,
//! the due entry hands the operation to the resolver; ids derived from the
//! idempotency key make sure no retry ever opens a second operation.

mod checkouts;
mod deliveries;
mod disputes;
mod dry_run;
mod execution;
mod headers;
mod idempotency;
mod instruments;
mod listing;
mod operations;
pub mod page_token;
mod resolution;
mod sessions;
mod settlements;
mod steps;
mod waiters;

pub use checkouts::Callback;
pub use deliveries::{Delivered, FailedDelivery, FailedPage};
pub use idempotency::{IdempotencyKey, requested_operation_id, submitted_payment_id};
// What the children share (they import this parent, never each other).
use execution::{Held, settle};
use idempotency::{
    Found, Scope, derived_id, fingerprint, found_record, operation_result, outcome_of,
    payment_view, system_id,
};
use instruments::Payer;
pub use listing::{
    DEFAULT_PAGE_SIZE, ListOperations, ListPayments, ListSessions, MAX_PAGE_SIZE, OperationFilter,
    OperationPage, PaymentFilter, PaymentPage, SessionFilter, SessionPage,
};
pub use operations::MAX_WAIT;
use resolution::WorkLease;
pub use resolution::{EventResult, Handled, PartnerEvent};
pub use settlements::{
    MAX_NOTE_CHARS, PARTNER_PAGE_SIZE, PartnerImport, SettlementSettings, Viewer,
};
use steps::{Advanced, Edit, Keying, Phase, operation_item};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;
use uuid::Uuid;

pub use crate::domain::precondition::Precondition;
use crate::{
    clock::{Chance, Clock, ThreadChance},
    domain::{
        dispute::Dispute,
        items::ItemLine,
        money::{Amount, Currency},
        operation::{Operation, OperationKind},
        payment::{Leg, Payment, Snapshot},
        priority::{DefaultPriorities, OrderSource, PriorityRule},
        session::{CaptureMode, Session, SessionChange, Webhook},
    },
    partners::Partners,
    store::{Store, StoreError, Versioned},
    webhooks::Webhooks,
};

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Unknown id, or another merchant's.
    #[error("not found")]
    NotFound,
    /// Input that only the stored state shows to be malformed (e.g. legs not
    /// summing to the session amount). Not stored under the key.
    #[error("invalid argument: {field}: {description}")]
    InvalidArgument { field: String, description: String },
    #[error(transparent)]
    Precondition(#[from] Precondition),
    #[error("the idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// The request's key is in flight, or what it did is not known yet (the
    /// store's answer was lost, or it failed after a partner was called): the
    /// resolver finishes the work, a retry gets the outcome.
    #[error("a request with this idempotency key is still in progress")]
    RequestInProgress,
    /// Nothing was changed: the store could not be reached.
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    /// The merchant has as many `WaitOperation` calls open as it may.
    #[error("too many WaitOperation calls open for this merchant (at most {max})")]
    TooManyWaiters { max: usize },
    /// A session asks for a webhook but the merchant has no signing secret:
    /// its events could never be signed, so never delivered. Not stored
    /// under the key (like a validation error).
    #[error("the merchant has no webhook signing secret")]
    WebhookSecretMissing,
    /// A partner refused, or did not answer, a call that moves no money
    /// (opening or reading a hosted checkout): nothing was changed.
    #[error("partner {partner}: {error}")]
    Partner {
        partner: String,
        error: crate::partners::PartnerError,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for PaymentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => PaymentError::Unavailable(error),
            StoreError::Unknown(source) => {
                tracing::warn!(error = %source, "the store's answer was lost: outcome unknown");
                PaymentError::RequestInProgress
            }
            StoreError::NotReplicated(_) => {
                tracing::warn!("a step was not acknowledged by enough replicas: answering later");
                PaymentError::RequestInProgress
            }
            StoreError::Corrupt(_) => PaymentError::Internal(Box::new(error)),
        }
    }
}

impl PaymentError {
    /// After a partner was called something may have moved: a failure to
    /// record it is never "nothing changed" (the resolver records it).
    fn after_partner_call(self) -> PaymentError {
        match self {
            PaymentError::Unavailable(source) => {
                tracing::warn!(error = %source, "could not record a partner's answer: the resolver will");
                PaymentError::RequestInProgress
            }
            other => other,
        }
    }
}

/// A payment as a response shows it: the header's fixed part, its changing
/// part as of the response ([`Snapshot`]), and the operations the response
/// carries — all of them for GetPayment, none for an operation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentView {
    pub header: Payment,
    pub snapshot: Snapshot,
    pub operations: Vec<Operation>,
    /// The payment's disputes, in a view of it now (an answer kept for a
    /// request's replays shows the payment as it was then: none).
    pub disputes: Vec<Dispute>,
}

impl PaymentView {
    fn now(header: Payment, operations: Vec<Operation>) -> PaymentView {
        PaymentView {
            snapshot: header.snapshot(),
            disputes: header.disputes.clone(),
            header,
            operations,
        }
    }
}

/// Capture, refund and void answer the operation and the payment's header
/// view (no other operations: the answer does not grow with the history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationResult {
    pub operation: Operation,
    pub payment: PaymentView,
    /// A dry run's answer: nothing was executed, the statuses are not
    /// outcomes.
    pub dry_run: bool,
}

// ---- commands (validated by the api layer) ----

#[derive(Debug, Clone, Serialize)]
pub struct CreateSession {
    pub order_reference: String,
    pub amount: Amount,
    pub currency: Currency,
    pub capture_mode: CaptureMode,
    pub items: Vec<ItemLine>,
    pub webhook: Option<Webhook>,
    pub expires_in: Option<Duration>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct SubmitSession {
    pub session_id: Uuid,
    /// A leg reusing an earlier payment's instrument has no token here
    /// until the submit reads it from that payment.
    pub legs: Vec<Leg>,
    /// Indexed like `legs` (empty when no leg names one): the earlier
    /// payment whose instrument a leg reuses.
    pub parents: Vec<Option<Parent>>,
}

/// An earlier payment of the same merchant whose instrument a leg reuses
/// (a merchant-initiated payment): its leg at the same partner with the
/// same method, or the one whose authorization is `transaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Parent {
    pub payment: Uuid,
    pub transaction: Option<Uuid>,
}

impl SubmitSession {
    /// The earlier payment leg `index` reuses the instrument of, if any.
    pub fn parent(&self, index: usize) -> Option<Parent> {
        self.parents.get(index).copied().flatten()
    }
}

/// What a SubmitSession's fingerprint covers: what the merchant sent, not
/// what the configuration adds to each leg (capabilities, lifetime), so that
/// a retry after a configuration change or an upgrade is still the same
/// request. Serialized as submits always were.
impl Serialize for SubmitSession {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sent<'a> {
            partner: &'a str,
            method: &'a str,
            amount: crate::domain::money::Amount,
            token: &'a crate::domain::payment::PaymentToken,
            #[serde(skip_serializing_if = "Option::is_none")]
            parent: Option<Parent>,
        }
        #[derive(Serialize)]
        struct Submit<'a> {
            session_id: Uuid,
            legs: Vec<Sent<'a>>,
        }
        Submit {
            session_id: self.session_id,
            legs: self
                .legs
                .iter()
                .enumerate()
                .map(|(index, leg)| Sent {
                    partner: &leg.partner,
                    method: &leg.method,
                    amount: leg.amount,
                    token: &leg.token,
                    parent: self.parent(index),
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdateSession {
    pub session_id: Uuid,
    pub change: SessionChange,
}

#[derive(Debug, Clone, Serialize)]
pub struct CancelSession {
    pub session_id: Uuid,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationCommand {
    pub payment_id: Uuid,
    pub kind: OperationKind,
    pub amount: Option<Amount>,
    /// Empty: the merchant's default for the kind.
    pub priority: Vec<PriorityRule>,
    pub disable_fallback: bool,
    pub merchant_reference: String,
    pub reason: String,
    pub items: Vec<ItemLine>,
}

/// A mutating request with its idempotency key.
#[derive(Debug, Clone)]
pub struct Idempotent<C> {
    pub key: IdempotencyKey,
    pub command: C,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub idempotency_ttl: Duration,
    /// How long a request holds its key before a retry may take over.
    pub idempotency_lease: Duration,
    pub session_expiry: Duration,
    pub priorities: DefaultPriorities,
    /// Per-merchant overrides of the default priorities.
    pub merchant_priorities: BTreeMap<String, DefaultPriorities>,
    /// How long a request may work on an operation before the resolver may
    /// take it over (it must outlast the partner calls of all its legs).
    pub operation_lease: Duration,
    /// A non-final operation older than this is flagged `requires_review`.
    pub max_resolution_age: Duration,
    /// How many times a partner request is sent in all (the first send and
    /// re-sends after the partner said it never received it).
    pub max_sends: u32,
    /// After this, what an authorization still holds is voided (SYSTEM).
    pub authorization_lifetime: Duration,
    /// A merchant's operation on a payment that has this many is refused
    /// (each operation is kept with the payment).
    pub max_operations_per_payment: u32,
    /// `WaitOperation` calls one merchant may have open at once.
    pub max_waiters_per_merchant: usize,
    /// Every call's deadline on the server (a wait ends before it).
    pub request_timeout: Duration,
    pub settlements: SettlementSettings,
    /// The key of the keyed hash that names instruments in the store.
    pub instrument_key: crate::partners::Secret,
    /// Where partners reach the callback listener (`None`: no listener;
    /// hosted checkouts are found completed by lookups alone).
    pub callback_url: Option<String>,
    /// How long a finished payment is kept after its last change (`None`:
    /// for ever).
    pub payment_retention: Option<Duration>,
    /// How many payment headers a replica keeps of those it wrote, to open
    /// the next operation on one without reading it first (0: none).
    pub header_cache: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_lease: Duration::from_secs(120),
            session_expiry: Duration::from_secs(30 * 60),
            priorities: DefaultPriorities::standard(),
            merchant_priorities: BTreeMap::new(),
            operation_lease: Duration::from_secs(60),
            max_resolution_age: Duration::from_secs(24 * 3600),
            max_sends: 3,
            authorization_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_operations_per_payment: 1000,
            max_waiters_per_merchant: 1000,
            request_timeout: Duration::from_secs(30),
            settlements: SettlementSettings::default(),
            // The service is given the configured key (`--instrument-secret`).
            instrument_key: crate::partners::Secret::new("payments-default-instrument-key".into()),
            callback_url: None,
            payment_retention: None,
            header_cache: 0,
        }
    }
}

/// How many times a step is tried against concurrent writers of the same
/// payment before giving up.
const MAX_WRITE_ATTEMPTS: usize = 64;

/// An operation being worked on, with the header (and, for an
/// authorization, the session) as last read or written.
#[derive(Debug, Clone)]
struct Work {
    header: Versioned<Payment>,
    operation: Operation,
    session: Option<Versioned<Session>>,
}

#[derive(Debug, Clone)]
pub struct Payments {
    store: Arc<dyn Store>,
    partners: Partners,
    clock: Arc<dyn Clock>,
    chance: Arc<dyn Chance>,
    settings: Settings,
    webhooks: Webhooks,
    waiters: Arc<waiters::Waiters>,
    /// The headers this replica last wrote (see `headers`).
    headers: Arc<headers::Headers>,
}

impl Payments {
    /// Where the operator lets webhooks go (sessions are checked against
    /// it).
    pub fn webhook_destinations(&self) -> &crate::webhooks::Destinations {
        self.webhooks.destinations()
    }

    pub fn new(
        store: Arc<dyn Store>,
        partners: Partners,
        clock: Arc<dyn Clock>,
        settings: Settings,
        webhooks: Webhooks,
    ) -> Self {
        let waiters = waiters::Waiters::new(settings.max_waiters_per_merchant);
        let headers = Arc::new(headers::Headers::new(settings.header_cache));
        Payments {
            headers,
            store,
            partners,
            clock,
            chance: Arc::new(ThreadChance),
            settings,
            webhooks,
            waiters,
        }
    }

    /// The same use cases drawing their chance from `chance` (a simulation
    /// replays a seed exactly).
    pub fn with_chance(mut self, chance: Arc<dyn Chance>) -> Self {
        self.chance = chance;
        self
    }

    /// Wakes `WaitOperation` calls as the store announces finals; runs until
    /// the store stops (spawned once per replica).
    pub fn listen_for_finals(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.waiters.clone().listen(self.store.finals())
    }

    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    /// The merchant's priority order for `kind` (the service's default
    /// unless the merchant's configuration changes it), and which it is.
    fn priority(&self, merchant: &str, kind: OperationKind) -> (Vec<PriorityRule>, OrderSource) {
        let default = self.settings.priorities.for_kind(kind);
        match self.settings.merchant_priorities.get(merchant) {
            Some(own) if own.for_kind(kind) != default => {
                (own.for_kind(kind).to_vec(), OrderSource::Merchant)
            }
            _ => (default.to_vec(), OrderSource::Default),
        }
    }

    async fn owned_session(
        &self,
        merchant: &str,
        id: Uuid,
    ) -> Result<Versioned<Session>, PaymentError> {
        self.store
            .session(id)
            .await?
            .filter(|s| s.value.merchant == merchant)
            .ok_or(PaymentError::NotFound)
    }

    async fn owned_header(
        &self,
        merchant: &str,
        id: Uuid,
    ) -> Result<Versioned<Payment>, PaymentError> {
        self.store
            .header(id)
            .await?
            .filter(|p| p.value.merchant == merchant)
            .ok_or(PaymentError::NotFound)
    }
}
