//! The use cases: create, submit and cancel sessions; capture, refund and
//! void payments.
//!
//! Every mutating use case runs under its idempotency key ([`Payments::idempotent`]):
//! the first request executes and its outcome (response or business error) is
//! stored; a replay gets the stored outcome and causes no side effect.
//!
//! Money moves in three steps, each persisted with a compare-and-set on the
//! payment's version: (1) the operation is written with its reservation, (2)
//! each leg is sent to its partner in priority order, (3) each answer is
//! recorded (a declined leg's amount is re-offered to the later legs). A crash
//! between steps leaves UNCERTAIN transactions that keep their reservation.

mod listing;
mod resolution;

pub use listing::{DEFAULT_PAGE_SIZE, ListPayments, MAX_PAGE_SIZE, PaymentFilter, PaymentPage};
pub use resolution::{EventResult, Handled, MAX_WAIT, PartnerEvent};

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    clock::Clock,
    domain::{
        items::ItemLine,
        money::{Amount, Currency},
        payment::{
            CaptureMode, Leg, NewPayment, Operation, OperationError, OperationKind,
            OperationRequest, Payment, TransactionOutcome, TriggeredBy,
        },
        priority::{DefaultPriorities, PriorityRule},
        routing::AllocationError,
        session::{Session, SessionError, SessionStatus, Webhook},
        status::{OperationStatus, TransactionStatus},
    },
    partners::{PartnerAnswer, PartnerError, PartnerRequest, Partners, kind_label},
    store::{
        Claim, ClaimRequest, DueItem, IdempotencyScope, PaymentStore, StoreError, Versioned,
        WebhookDelivery,
    },
    webhooks::{EventType, Webhooks},
};

/// A business rule refused the request. Stored under the idempotency key like
/// a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Precondition {
    #[error("the session has expired")]
    SessionExpired,
    #[error("the session is not open")]
    SessionNotOpen { status: SessionStatus },
    #[error("the requested amount {requested} exceeds the available {available}")]
    AmountExceedsAvailable {
        requested: Amount,
        available: Amount,
    },
    #[error("nothing is available for this operation")]
    NothingAvailable,
    #[error("the payment is not authorized")]
    PaymentNotAuthorized,
    #[error("the operation is not waiting for review")]
    OperationNotUnderReview,
}

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
    #[error("a request with this idempotency key is still in progress")]
    RequestInProgress,
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for PaymentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => PaymentError::Unavailable(error),
            other => PaymentError::Internal(Box::new(other)),
        }
    }
}

impl From<SessionError> for Precondition {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Expired => Precondition::SessionExpired,
            SessionError::NotOpen(status) => Precondition::SessionNotOpen { status },
        }
    }
}

impl From<OperationError> for Precondition {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::NotAuthorized => Precondition::PaymentNotAuthorized,
            OperationError::Allocation(AllocationError::ExceedsAvailable {
                requested,
                available,
            }) => Precondition::AmountExceedsAvailable {
                requested,
                available,
            },
            OperationError::Allocation(AllocationError::NothingAvailable) => {
                Precondition::NothingAvailable
            }
        }
    }
}

/// A session as the caller sees it at one instant (EXPIRED is derived from
/// the time, so the response stores the status it was given with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub session: Session,
    pub status: SessionStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationResult {
    pub operation_id: Uuid,
    pub payment: Payment,
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

#[derive(Debug, Clone, Serialize)]
pub struct SubmitSession {
    pub session_id: Uuid,
    pub legs: Vec<Leg>,
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
    pub key: String,
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
        }
    }
}

fn status_label(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::Success => "success",
        OperationStatus::Pending => "pending",
        OperationStatus::Failure => "failure",
        OperationStatus::Conflict => "conflict",
        OperationStatus::Uncertain => "uncertain",
    }
}

/// The due-queue entry of an operation.
fn operation_item(payment: Uuid, operation: Uuid) -> DueItem {
    DueItem::Operation { payment, operation }
}

/// When to look at a non-final operation again: about a quarter of its age,
/// between 1 s and 1 h, ±20 % jitter. Fast at first (seconds), slow later
/// (minutes, then hourly), with no per-operation state to keep.
fn resolution_backoff(age: Duration) -> Duration {
    let base = (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    base.mul_f64(rand::random_range(0.8..1.2))
}

/// How many times a compare-and-set write is retried against concurrent
/// writers of the same payment before giving up.
const MAX_WRITE_ATTEMPTS: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
enum Stored<T> {
    Response(T),
    Refused(Precondition),
}

#[derive(Debug, Clone)]
pub struct Payments {
    store: Arc<dyn PaymentStore>,
    partners: Partners,
    clock: Arc<dyn Clock>,
    settings: Settings,
    webhooks: Webhooks,
}

impl Payments {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        partners: Partners,
        clock: Arc<dyn Clock>,
        settings: Settings,
        webhooks: Webhooks,
    ) -> Self {
        Payments {
            store,
            partners,
            clock,
            settings,
            webhooks,
        }
    }

    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        merchant: &str,
        request: Idempotent<CreateSession>,
    ) -> Result<SessionView, PaymentError> {
        let scope = scope(merchant, "create-session".into(), &request.key);
        let fingerprint = fingerprint("CreateSession", &request.command);
        self.idempotent(scope, fingerprint, |id, _taken_over| async move {
            if let Some(existing) = self.store.session(id).await? {
                return Ok(self.view(existing.value));
            }
            let now = self.clock.now();
            let command = request.command;
            let session = Session {
                id,
                merchant: merchant.to_owned(),
                order_reference: command.order_reference,
                amount: command.amount,
                currency: command.currency,
                capture_mode: command.capture_mode,
                items: command.items,
                webhook: command.webhook,
                metadata: command.metadata,
                status: SessionStatus::Open,
                cancellation_reason: String::new(),
                created_at: now,
                updated_at: now,
                expires_at: now + command.expires_in.unwrap_or(self.settings.session_expiry),
                payment_id: None,
            };
            self.store.insert_session(&session).await?;
            Ok(self.view(session))
        })
        .await
    }

    pub async fn session(&self, merchant: &str, id: Uuid) -> Result<SessionView, PaymentError> {
        let session = self.owned_session(merchant, id).await?;
        Ok(self.view(session.value))
    }

    pub async fn cancel_session(
        &self,
        merchant: &str,
        request: Idempotent<CancelSession>,
    ) -> Result<SessionView, PaymentError> {
        let session_id = request.command.session_id;
        self.owned_session(merchant, session_id).await?;
        let scope = scope(merchant, format!("session:{session_id}"), &request.key);
        let fingerprint = fingerprint("CancelSession", &request.command);
        self.idempotent(scope, fingerprint, |_, _| async move {
            let reason = request.command.reason;
            let session = self
                .update_session(session_id, |session, now| {
                    session.cancel(reason.clone(), now)
                })
                .await?;
            Ok(self.view(session))
        })
        .await
    }

    /// Authorizes every leg in split order. A declined leg stops the walk,
    /// voids the legs already authorized (compensation) and reopens the
    /// session; success captures at once in AUTOMATIC mode.
    pub async fn submit_session(
        &self,
        merchant: &str,
        request: Idempotent<SubmitSession>,
    ) -> Result<Payment, PaymentError> {
        let session_id = request.command.session_id;
        let session = self.owned_session(merchant, session_id).await?.value;
        let legs_total = Amount::sum(request.command.legs.iter().map(|leg| leg.amount));
        if legs_total != Ok(session.amount) {
            return Err(PaymentError::InvalidArgument {
                field: "split".into(),
                description: format!(
                    "leg amounts must sum to the session amount {}",
                    session.amount
                ),
            });
        }
        for (index, leg) in request.command.legs.iter().enumerate() {
            let Some(partner) = self.partners.get(&leg.partner) else {
                continue;
            };
            if let Err(problem) = partner.adapter.check_token(leg.token.expose()).await {
                return Err(PaymentError::InvalidArgument {
                    field: format!("split[{index}].payment_token"),
                    description: problem,
                });
            }
        }
        let scope = scope(merchant, format!("session:{session_id}"), &request.key);
        let fingerprint = fingerprint("SubmitSession", &request.command);
        let key = request.key.clone();
        self.idempotent(scope, fingerprint, |payment_id, _| async move {
            if let Some(existing) = self.store.payment(payment_id).await? {
                // A retry after a crash: the first attempt created it. Final:
                // answer it; otherwise the resolver is finishing it.
                return if existing.value.authorization().status.is_final() {
                    Ok(existing.value)
                } else {
                    Err(PaymentError::RequestInProgress)
                };
            }
            let session = self
                .update_session(session_id, |session, now| {
                    session.begin_payment(payment_id, now)
                })
                .await?;
            let mut ids = || self.new_id();
            let payment = Payment::new(
                NewPayment {
                    id: payment_id,
                    merchant: merchant.to_owned(),
                    session_id,
                    order_reference: session.order_reference.clone(),
                    amount: session.amount,
                    currency: session.currency,
                    capture_mode: session.capture_mode,
                    legs: request.command.legs,
                    webhook: session.webhook.clone(),
                    authorization_id: ids(),
                    idempotency_key: Some(key),
                },
                &mut ids,
                self.clock.now(),
            );
            let authorization = payment.authorization().id;
            self.prepare_operation(payment_id, authorization).await?;
            self.store.insert_payment(&payment).await?;
            let created = Versioned {
                value: payment,
                version: 1,
            };
            Ok(self.run_operation(created, authorization).await?.value)
        })
        .await
    }

    /// What follows a final authorization: the session's status, the
    /// automatic capture after a success (with the authorization's expiry),
    /// compensation voids after a decline. Each exactly once.
    async fn after_authorization(
        &self,
        current: Versioned<Payment>,
    ) -> Result<Versioned<Payment>, PaymentError> {
        let payment = &current.value;
        let status = payment.authorization().status;
        if !status.is_final() {
            return Ok(current);
        }
        let authorized = status == OperationStatus::Success;
        self.update_session(payment.session_id, |session, now| {
            session.finish_payment(authorized, now);
            Ok(())
        })
        .await?;
        if authorized {
            let expiry = DueItem::AuthorizationExpiry {
                payment: payment.id,
            };
            let at = payment.authorization().updated_at + self.settings.authorization_lifetime;
            self.store.schedule(&expiry, at).await?;
        }
        let automatic_capture = payment.needs_automatic_capture();
        if !automatic_capture && payment.compensation_needed().is_empty() {
            return Ok(current);
        }
        let (payment_id, id) = (payment.id, self.new_id());
        self.prepare_operation(payment_id, id).await?;
        let (payment, opened) = self
            .mutate(current, |payment, now| {
                let mut ids = || self.new_id();
                // Checked again on the fresh payment: exactly once, even if
                // another request or replica got here first.
                if automatic_capture && payment.needs_automatic_capture() {
                    let request = OperationRequest {
                        kind: OperationKind::Capture,
                        amount: None,
                        priority: self.priorities(&payment.merchant).capture.clone(),
                        fallback: true,
                        merchant_reference: String::new(),
                        reason: "automatic capture".into(),
                        triggered_by: TriggeredBy::System,
                        idempotency_key: None,
                    };
                    return Ok(payment.open_operation(id, &request, &mut ids, now).is_ok());
                }
                let compensation = payment.compensation_needed();
                if compensation.is_empty() {
                    return Ok(false);
                }
                payment.open_compensation(id, &compensation, &mut ids, now);
                Ok(true)
            })
            .await?;
        if !opened {
            self.store
                .unschedule(&operation_item(payment_id, id))
                .await?;
            return Ok(payment);
        }
        // Boxed: running the follow-up concludes it, which may come back here.
        Box::pin(self.run_operation(payment, id)).await
    }

    // ---- payments ----

    pub async fn payment(&self, merchant: &str, id: Uuid) -> Result<Payment, PaymentError> {
        Ok(self.owned_payment(merchant, id).await?.value)
    }

    pub async fn operation(
        &self,
        merchant: &str,
        operation: Uuid,
    ) -> Result<(Uuid, Payment), PaymentError> {
        let payment_id = self.payment_id_of(operation).await?;
        let payment = self.owned_payment(merchant, payment_id).await?.value;
        if payment.operation(operation).is_none() {
            return Err(PaymentError::NotFound);
        }
        Ok((operation, payment))
    }

    /// Capture, refund or void: routes the amount across the legs in priority
    /// order, reserves it, then executes leg by leg.
    pub async fn operate(
        &self,
        merchant: &str,
        request: Idempotent<OperationCommand>,
    ) -> Result<OperationResult, PaymentError> {
        let payment_id = request.command.payment_id;
        let current = self.owned_payment(merchant, payment_id).await?;
        let scope = scope(merchant, format!("payment:{payment_id}"), &request.key);
        let fingerprint = fingerprint("Operation", &request.command);
        let key = request.key.clone();
        self.idempotent(scope, fingerprint, |operation_id, taken_over| async move {
            let command = request.command;
            let priority = if command.priority.is_empty() {
                self.priorities(merchant).for_kind(command.kind).to_vec()
            } else {
                command.priority
            };
            let operation_request = OperationRequest {
                kind: command.kind,
                amount: command.amount,
                priority,
                fallback: !command.disable_fallback,
                merchant_reference: command.merchant_reference,
                reason: command.reason,
                triggered_by: TriggeredBy::Merchant,
                idempotency_key: Some(key),
            };
            if !taken_over {
                self.prepare_operation(payment_id, operation_id).await?;
            }
            let opened = self
                .mutate(current, |payment, now| {
                    if payment.operation(operation_id).is_some() {
                        return Ok(false);
                    }
                    payment
                        .open_operation(
                            operation_id,
                            &operation_request,
                            &mut || self.new_id(),
                            now,
                        )
                        .map(|_| true)
                        .map_err(|e| PaymentError::Precondition(e.into()))
                })
                .await;
            let (payment, opened) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    self.store
                        .unschedule(&operation_item(payment_id, operation_id))
                        .await?;
                    return Err(error);
                }
            };
            let payment = if opened {
                self.run_operation(payment, operation_id).await?
            } else {
                // A retry after a crash found the first attempt's operation:
                // final, it is the answer; otherwise the resolver, never this
                // request, settles its uncertain legs.
                self.store.index_operation(operation_id, payment_id).await?;
                let final_now = payment
                    .value
                    .operation(operation_id)
                    .is_some_and(|op| op.status.is_final());
                if !final_now {
                    return Err(PaymentError::RequestInProgress);
                }
                payment
            };
            Ok(OperationResult {
                operation_id,
                payment: payment.value,
            })
        })
        .await
    }

    // ---- execution ----

    /// Before an operation is written: its index entry, and its place on the
    /// due-queue at the end of its lease — if this process dies while running
    /// it, any replica's resolver takes it over then.
    async fn prepare_operation(&self, payment: Uuid, operation: Uuid) -> Result<(), PaymentError> {
        metrics::counter!("operations_opened_total").increment(1);
        self.store.index_operation(operation, payment).await?;
        let due = self.clock.now() + self.settings.operation_lease;
        self.store
            .schedule(&operation_item(payment, operation), due)
            .await?;
        Ok(())
    }

    /// Executes an opened operation, then concludes it.
    async fn run_operation(
        &self,
        payment: Versioned<Payment>,
        operation: Uuid,
    ) -> Result<Versioned<Payment>, PaymentError> {
        let payment = self.execute(payment, operation).await?;
        self.conclude(payment, operation).await
    }

    /// After an operation was worked on: a non-final one goes back on the
    /// due-queue with backoff; a final one is announced (webhook), its
    /// crashed request's idempotency key completed, and it leaves the queue;
    /// a final authorization triggers what follows it.
    pub(crate) async fn conclude(
        &self,
        payment: Versioned<Payment>,
        operation: Uuid,
    ) -> Result<Versioned<Payment>, PaymentError> {
        let item = operation_item(payment.value.id, operation);
        let Some(op) = payment.value.operation(operation) else {
            self.store.unschedule(&item).await?;
            return Ok(payment);
        };
        let now = self.clock.now();
        if !op.status.is_final() {
            let age = now.duration_since(op.created_at).unwrap_or_default();
            self.store
                .schedule(&item, now + resolution_backoff(age))
                .await?;
            return Ok(payment);
        }
        metrics::counter!(
            "operations_final_total",
            "kind" => kind_label(op.kind),
            "status" => status_label(op.status),
        )
        .increment(1);
        if let Some(delivery) =
            self.webhooks
                .event(&payment.value, op, EventType::OperationFinal, now)
        {
            self.enqueue_webhook(&delivery).await?;
        }
        self.complete_abandoned_request(&payment.value, op).await?;
        let kind = op.kind;
        self.store.unschedule(&item).await?;
        if kind == OperationKind::Authorization {
            return self.after_authorization(payment).await;
        }
        Ok(payment)
    }

    /// If the request that opened a (now final) operation died, its
    /// idempotency key is still in flight: store the final response there so
    /// that replays get it.
    async fn complete_abandoned_request(
        &self,
        payment: &Payment,
        op: &Operation,
    ) -> Result<(), PaymentError> {
        let Some(key) = &op.idempotency_key else {
            return Ok(());
        };
        let (resource, bytes) = if op.kind == OperationKind::Authorization {
            (
                format!("session:{}", payment.session_id),
                serde_json::to_vec(&Stored::Response(payment)),
            )
        } else {
            let result = OperationResult {
                operation_id: op.id,
                payment: payment.clone(),
            };
            (
                format!("payment:{}", payment.id),
                serde_json::to_vec(&Stored::Response(&result)),
            )
        };
        let bytes = bytes.map_err(|e| PaymentError::Internal(Box::new(e)))?;
        let scope = scope(&payment.merchant, resource, key);
        self.store.complete_if_in_flight(&scope, &bytes).await?;
        Ok(())
    }

    pub(crate) async fn enqueue_webhook(
        &self,
        delivery: &WebhookDelivery,
    ) -> Result<(), PaymentError> {
        if self.store.put_webhook(delivery).await? {
            metrics::counter!("webhooks_enqueued_total").increment(1);
            let item = DueItem::Webhook {
                delivery: delivery.id,
            };
            self.store.schedule(&item, self.clock.now()).await?;
        }
        Ok(())
    }

    /// Sends the operation's unsent legs one by one in route order and
    /// records each answer. Returns the payment after the last answer.
    async fn execute(
        &self,
        mut payment: Versioned<Payment>,
        operation_id: Uuid,
    ) -> Result<Versioned<Payment>, PaymentError> {
        loop {
            let Some((request, partner, transaction)) = next_unsent(&payment.value, operation_id)
            else {
                return Ok(payment);
            };
            let result = self.partners.send(&partner, &request).await;
            let outcome = outcome_of(&result);
            let declined = outcome.status == TransactionStatus::Failure;
            (payment, ()) = self
                .mutate(payment, |payment, now| {
                    payment.mark_sent(operation_id, transaction, now);
                    payment.record(operation_id, transaction, outcome.clone(), now);
                    let Some(op) = payment.operation(operation_id) else {
                        return Ok(());
                    };
                    let Some(tx) = op.transaction(transaction) else {
                        return Ok(());
                    };
                    let (kind, fallback, leg, amount) = (op.kind, op.fallback, tx.leg, tx.amount);
                    if declined && kind == OperationKind::Authorization {
                        payment.abandon_unsent(operation_id, now);
                    } else if declined && fallback {
                        payment.reoffer(operation_id, leg, amount, &mut || self.new_id(), now);
                    }
                    Ok(())
                })
                .await?;
        }
    }

    // ---- plumbing ----

    /// A UUIDv7 from the service's clock, so that ids sort like `created_at`.
    fn new_id(&self) -> Uuid {
        let since_epoch = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        ))
    }

    fn priorities(&self, merchant: &str) -> &DefaultPriorities {
        self.settings
            .merchant_priorities
            .get(merchant)
            .unwrap_or(&self.settings.priorities)
    }

    fn view(&self, session: Session) -> SessionView {
        let status = session.status_at(self.clock.now());
        SessionView { session, status }
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

    async fn owned_payment(
        &self,
        merchant: &str,
        id: Uuid,
    ) -> Result<Versioned<Payment>, PaymentError> {
        self.store
            .payment(id)
            .await?
            .filter(|p| p.value.merchant == merchant)
            .ok_or(PaymentError::NotFound)
    }

    /// The payment an operation belongs to (NOT_FOUND for an unknown id).
    async fn payment_id_of(&self, operation: Uuid) -> Result<Uuid, PaymentError> {
        self.store
            .payment_of_operation(operation)
            .await?
            .ok_or(PaymentError::NotFound)
    }

    async fn load(&self, payment_id: Uuid) -> Result<Versioned<Payment>, PaymentError> {
        self.store
            .payment(payment_id)
            .await?
            .ok_or(PaymentError::NotFound)
    }

    /// Read-modify-write of a payment with compare-and-set. The first attempt
    /// changes `current` (the caller's latest read, saving a round trip); on
    /// a conflict the payment is read again and the change re-applied.
    /// `change` must be a pure function of the payment; when it fails nothing
    /// is written, and a failure only counts when computed on a fresh read
    /// (`current` may predate a released reservation).
    async fn mutate<R>(
        &self,
        current: Versioned<Payment>,
        mut change: impl FnMut(&mut Payment, SystemTime) -> Result<R, PaymentError>,
    ) -> Result<(Versioned<Payment>, R), PaymentError> {
        let payment_id = current.value.id;
        let mut attempt = Some(current);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (
                Versioned {
                    value: mut payment,
                    version,
                },
                fresh,
            ) = match attempt.take() {
                Some(current) => (current, false),
                None => (self.load(payment_id).await?, true),
            };
            let result = match change(&mut payment, self.clock.now()) {
                Ok(result) => result,
                Err(_) if !fresh => continue,
                Err(error) => return Err(error),
            };
            match self.store.update_payment(&payment, version).await {
                Ok(version) => {
                    return Ok((
                        Versioned {
                            value: payment,
                            version,
                        },
                        result,
                    ));
                }
                Err(StoreError::Conflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one payment".into(),
        ))
    }

    async fn update_session(
        &self,
        id: Uuid,
        mut change: impl FnMut(&mut Session, SystemTime) -> Result<(), SessionError>,
    ) -> Result<Session, PaymentError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Versioned {
                value: mut session,
                version,
            } = self
                .store
                .session(id)
                .await?
                .ok_or(PaymentError::NotFound)?;
            change(&mut session, self.clock.now()).map_err(Precondition::from)?;
            match self.store.update_session(&session, version).await {
                Ok(_) => return Ok(session),
                Err(StoreError::Conflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one session".into(),
        ))
    }

    /// The idempotency contract around `run(id, taken_over)`: `id` is the id
    /// reserved for what the request creates (the same on every retry).
    async fn idempotent<T, F, Fut>(
        &self,
        scope: IdempotencyScope,
        fingerprint: String,
        run: F,
    ) -> Result<T, PaymentError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Uuid, bool) -> Fut,
        Fut: Future<Output = Result<T, PaymentError>>,
    {
        let claim = ClaimRequest {
            fingerprint,
            reserved_id: self.new_id(),
            lease: self.settings.idempotency_lease,
            ttl: self.settings.idempotency_ttl,
        };
        let (id, taken_over) = match self.store.claim(&scope, &claim, self.clock.now()).await? {
            Claim::Acquired => (claim.reserved_id, false),
            Claim::TakenOver { reserved_id } => (reserved_id, true),
            Claim::InFlight => return Err(PaymentError::RequestInProgress),
            Claim::Mismatch => return Err(PaymentError::IdempotencyKeyReused),
            Claim::Done(stored) => {
                return match serde_json::from_slice(&stored)
                    .map_err(|e| PaymentError::Internal(Box::new(e)))?
                {
                    Stored::Response(response) => Ok(response),
                    Stored::Refused(precondition) => Err(precondition.into()),
                };
            }
        };
        let result = run(id, taken_over).await;
        let stored = match &result {
            Ok(response) => Stored::Response(response),
            Err(PaymentError::Precondition(precondition)) => Stored::Refused(precondition.clone()),
            Err(PaymentError::NotFound | PaymentError::InvalidArgument { .. }) => {
                // Nothing happened: a corrected retry with this key may run.
                self.store.release(&scope).await?;
                return result;
            }
            // Unknown how far it got: the key stays claimed until its lease
            // runs out, then a retry takes over with the same reserved id.
            Err(_) => return result,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| PaymentError::Internal(Box::new(e)))?;
        self.store
            .complete(&scope, &bytes, self.clock.now())
            .await?;
        result
    }
}

fn scope(merchant: &str, resource: String, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        merchant: merchant.to_owned(),
        resource,
        key: key.to_owned(),
    }
}

/// SHA-256 over the RPC name and the validated command.
fn fingerprint(rpc: &str, command: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rpc.as_bytes());
    hasher.update([0]);
    // Serializing plain data structures cannot fail.
    hasher.update(serde_json::to_vec(command).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// The next transaction of the operation that was never sent, in route order,
/// as a partner request.
fn next_unsent(payment: &Payment, operation_id: Uuid) -> Option<(PartnerRequest, String, Uuid)> {
    let op = payment.operation(operation_id)?;
    let tx = op
        .transactions
        .iter()
        .find(|tx| tx.attempts == 0 && !tx.status.is_final())?;
    let (request, partner) = request_for(payment, operation_id, tx.id)?;
    Some((request, partner, tx.id))
}

/// One transaction as a partner request, with the partner to send it to.
fn request_for(
    payment: &Payment,
    operation_id: Uuid,
    transaction: Uuid,
) -> Option<(PartnerRequest, String)> {
    let op = payment.operation(operation_id)?;
    let tx = op.transaction(transaction)?;
    let leg = payment.legs.get(tx.leg)?;
    let request = PartnerRequest {
        kind: op.kind,
        // Deterministic per operation and leg, so a re-send is deduplicated.
        idempotency_key: format!("{}:{}", op.id, tx.leg),
        amount: tx.amount,
        currency: payment.currency,
        method: leg.method.clone(),
        token: leg.token.clone(),
        authorization_reference: payment.authorization_reference(tx.leg).map(str::to_owned),
    };
    Some((request, leg.partner.clone()))
}

fn outcome_of(result: &Result<PartnerAnswer, PartnerError>) -> TransactionOutcome {
    match result {
        Ok(answer) => TransactionOutcome {
            status: if answer.settled {
                TransactionStatus::Success
            } else {
                TransactionStatus::Pending
            },
            partner_reference: Some(answer.reference.clone()),
            partner_status: answer.partner_status.clone(),
            partner_status_description: answer.description.clone(),
        },
        Err(PartnerError::Declined { code, description }) => TransactionOutcome {
            status: TransactionStatus::Failure,
            partner_reference: None,
            partner_status: code.clone(),
            partner_status_description: description.clone(),
        },
        // Nothing happened at the partner: the leg fails and fallback applies.
        Err(PartnerError::Unavailable { description }) => TransactionOutcome {
            status: TransactionStatus::Failure,
            partner_reference: None,
            partner_status: "UNAVAILABLE".into(),
            partner_status_description: description.clone(),
        },
        Err(PartnerError::Unknown { description }) => TransactionOutcome {
            status: TransactionStatus::Uncertain,
            partner_reference: None,
            partner_status: "UNKNOWN".into(),
            partner_status_description: description.clone(),
        },
    }
}
