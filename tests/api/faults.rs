//! Failure windows, injected: a store that, at a chosen call index k, either
//! fails the call before it applies (the store refused: nothing happened) or
//! applies it and loses the answer (a timeout after sending). Every lifecycle
//! is driven once for every k and both kinds of fault; then the request is
//! retried with the same key and the resolver runs. Whatever happened, the
//! books must balance: one operation per key, the payment's amounts equal to
//! the partner's ledger, no reservation left, every operation final, every
//! automatic capture and compensation exactly once, no session PROCESSING.
//! Run over the memory store and a private Redis.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use payment_orchestrator::{
    api::proto::{self, OperationStatus, PaymentState, SessionStatus, TriggeredBy},
    clock::ManualClock,
    domain::{
        checkout::HostedCheckout,
        operation::Operation,
        payment::Payment,
        session::Session,
        settlement::{
            FailedSettlement, ReconciliationIssue, SettledBy, Settlement, SettlementTransaction,
        },
    },
    store::{
        Checkouts, Committed, DueItem, DueQueue, DueSummary, EventLog, HeldInstrument,
        InstrumentClaim, Instruments, IssueQuery, Lane, ListQuery, ListedPayment, ListedSession,
        Notices, PaymentStore, SettlementQuery, SettlementStore, Step, Store, StoreError,
        StoredPayment, Versioned, WebhookDelivery, WebhookOutbox, memory::MemoryStore,
        redis::RedisStore,
    },
};
use tonic::Status;
use uuid::Uuid;

use super::{
    store_contract::redis_settings, support::harness::*, support::redis_server::RedisServer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The store refuses the call: nothing is applied.
    BeforeApplying,
    /// The call is applied, then its answer is lost (a timeout).
    AnswerLost,
}

/// Decides, call by call, what happens to each store call (a simulation's
/// seeded faults and stalls).
pub trait Chaos: Send + Sync + std::fmt::Debug {
    /// The fault of the next call, if any, and how long it stalls before it
    /// applies and before its answer arrives.
    fn next_call(&self) -> (Option<Fault>, Duration, Duration);
}

/// Wraps a store; counts its calls while armed and faults call `k`, or
/// faults what its [`Chaos`] says.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    calls: AtomicUsize,
    plan: Mutex<Option<Plan>>,
    chaos: Option<Arc<dyn Chaos>>,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    fault: Option<(usize, Fault)>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            calls: AtomicUsize::new(0),
            plan: Mutex::new(None),
            chaos: None,
        })
    }

    /// Every call as `chaos` decides.
    pub fn with_chaos(inner: Arc<dyn Store>, chaos: Arc<dyn Chaos>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            calls: AtomicUsize::new(0),
            plan: Mutex::new(None),
            chaos: Some(chaos),
        })
    }

    /// Counts calls from now on, and faults call `k` (from 0) if given.
    pub fn arm(&self, fault: Option<(usize, Fault)>) {
        self.calls.store(0, Ordering::SeqCst);
        *self.plan.lock().unwrap() = Some(Plan { fault });
    }

    /// Stops; how many calls were made while armed.
    pub fn disarm(&self) -> usize {
        *self.plan.lock().unwrap() = None;
        self.calls.load(Ordering::SeqCst)
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if let Some(chaos) = &self.chaos {
            let (fault, before, after) = chaos.next_call();
            if !before.is_zero() {
                tokio::time::sleep(before).await;
            }
            if fault == Some(Fault::BeforeApplying) {
                return Err(StoreError::Unavailable("injected: refused".into()));
            }
            let result = call.await;
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            return match fault {
                Some(Fault::AnswerLost) => {
                    Err(StoreError::Unknown("injected: the answer was lost".into()))
                }
                _ => result,
            };
        }
        let Some(plan) = *self.plan.lock().unwrap() else {
            return call.await;
        };
        let index = self.calls.fetch_add(1, Ordering::SeqCst);
        match plan.fault {
            Some((k, Fault::BeforeApplying)) if k == index => {
                drop(call);
                Err(StoreError::Unavailable("injected: refused".into()))
            }
            Some((k, Fault::AnswerLost)) if k == index => {
                let _ = call.await;
                Err(StoreError::Unknown("injected: the answer was lost".into()))
            }
            _ => call.await,
        }
    }
}

#[async_trait]
impl PaymentStore for FaultyStore {
    async fn commit(&self, step: Step) -> Result<Committed, StoreError> {
        self.call(self.inner.commit(step)).await
    }
    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        self.call(self.inner.session(id)).await
    }
    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        self.call(self.inner.header(id)).await
    }
    async fn operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        self.call(self.inner.operation(payment, operation)).await
    }
    async fn find_operation(
        &self,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        self.call(self.inner.find_operation(operation)).await
    }
    async fn payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        self.call(self.inner.payment(id)).await
    }
    async fn index_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        self.call(self.inner.index_payment(payment)).await
    }
    async fn index_session(&self, session: &Session) -> Result<(), StoreError> {
        self.call(self.inner.index_session(session)).await
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError> {
        self.inner.list_sessions(query).await
    }

    async fn forget_payment(
        &self,
        payment: &StoredPayment,
        session: Option<&Versioned<Session>>,
        caller_now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.call(self.inner.forget_payment(payment, session, caller_now))
            .await
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        self.call(self.inner.list_payments(query)).await
    }
    /// Readiness probes run on their own schedule: never counted.
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Notices for FaultyStore {
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.inner.finals()
    }
    async fn announce_health(&self, notice: &str) -> Result<(), StoreError> {
        self.inner.announce_health(notice).await
    }
    fn health_notices(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.health_notices()
    }
}

#[async_trait]
impl DueQueue for FaultyStore {
    async fn claim_due(
        &self,
        lane: Lane,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError> {
        self.call(self.inner.claim_due(lane, now, lease, limit))
            .await
    }
    async fn open_operations(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        self.inner.open_operations(limit).await
    }

    async fn due_summary(&self, lane: Lane) -> Result<DueSummary, StoreError> {
        self.call(self.inner.due_summary(lane)).await
    }

    async fn scheduled(&self, item: &DueItem) -> Result<Option<SystemTime>, StoreError> {
        self.call(self.inner.scheduled(item)).await
    }

    async fn list_lane(
        &self,
        lane: Lane,
        after: Option<(SystemTime, DueItem)>,
        limit: usize,
    ) -> Result<Vec<(SystemTime, DueItem)>, StoreError> {
        self.call(self.inner.list_lane(lane, after, limit)).await
    }
}

#[async_trait]
impl WebhookOutbox for FaultyStore {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        self.call(self.inner.delivery(id)).await
    }
}

#[async_trait]
impl Instruments for FaultyStore {
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError> {
        self.call(self.inner.claim_instrument(instrument, claim))
            .await
    }
    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError> {
        self.call(self.inner.instrument(instrument)).await
    }
    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError> {
        self.call(self.inner.replace_instrument(instrument, held, claim))
            .await
    }
}

#[async_trait]
impl Checkouts for FaultyStore {
    async fn keep_checkout(
        &self,
        checkout: &HostedCheckout,
        replacing: Option<&str>,
    ) -> Result<HostedCheckout, StoreError> {
        self.call(self.inner.keep_checkout(checkout, replacing))
            .await
    }
    async fn checkouts(&self, session: Uuid) -> Result<Vec<HostedCheckout>, StoreError> {
        self.call(self.inner.checkouts(session)).await
    }
}

#[async_trait]
impl EventLog for FaultyStore {
    async fn first_sighting(
        &self,
        partner: &str,
        event_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.call(self.inner.first_sighting(partner, event_id, ttl, now))
            .await
    }
}

/// Settlements are not on the request path: passed through untouched.
#[async_trait]
impl SettlementStore for FaultyStore {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError> {
        self.inner.settlement(id).await
    }
    async fn put_settlement_lines(
        &self,
        settlement: Uuid,
        lines: &[SettlementTransaction],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner
            .put_settlement_lines(settlement, lines, retain_until)
            .await
    }
    async fn finish_settlement(
        &self,
        settlement: &Settlement,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.finish_settlement(settlement, retain_until).await
    }
    async fn settlement_lines(
        &self,
        settlement: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<SettlementTransaction>, StoreError> {
        self.inner.settlement_lines(settlement, offset, limit).await
    }
    async fn list_settlements(
        &self,
        query: &SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, StoreError> {
        self.inner.list_settlements(query).await
    }
    async fn record_issue(
        &self,
        issue: &ReconciliationIssue,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.record_issue(issue, retain_until).await
    }
    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError> {
        self.inner.list_issues(query).await
    }
    async fn issue(&self, id: Uuid) -> Result<Option<ReconciliationIssue>, StoreError> {
        self.inner.issue(id).await
    }
    async fn resolve_issue(
        &self,
        id: Uuid,
        resolution: &str,
        at: SystemTime,
    ) -> Result<Option<ReconciliationIssue>, StoreError> {
        self.inner.resolve_issue(id, resolution, at).await
    }
    async fn claim_settled(
        &self,
        claims: &[(Uuid, SettledBy)],
        retain_until: SystemTime,
    ) -> Result<Vec<SettledBy>, StoreError> {
        self.inner.claim_settled(claims, retain_until).await
    }
    async fn replace_settled(
        &self,
        transaction: Uuid,
        held: SettledBy,
        claim: SettledBy,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .replace_settled(transaction, held, claim, retain_until)
            .await
    }
    async fn settled_in(&self, transaction: Uuid) -> Result<Option<SettledBy>, StoreError> {
        self.inner.settled_in(transaction).await
    }
    async fn failed_settlements(&self, partner: &str) -> Result<Vec<FailedSettlement>, StoreError> {
        self.inner.failed_settlements(partner).await
    }
    async fn put_failed_settlement(
        &self,
        partner: &str,
        failed: &FailedSettlement,
    ) -> Result<(), StoreError> {
        self.inner.put_failed_settlement(partner, failed).await
    }
    async fn clear_failed_settlement(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<(), StoreError> {
        self.inner.clear_failed_settlement(partner, reference).await
    }
    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.take_lease(name, owner, now, lease).await
    }
    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        self.inner.release_lease(name, owner).await
    }
}

// ---- lifecycles ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    ManualCapture,
    Refund,
    Void,
    AutomaticSubmit,
    DeclinedSubmit,
}

/// What a lifecycle's faulted request is, ready to be sent (again).
#[derive(Debug, Clone)]
enum Request {
    Capture(proto::CaptureRequest),
    Refund(proto::RefundRequest),
    Void(proto::VoidRequest),
    Submit(proto::SubmitSessionRequest),
}

/// A prepared run: the request under test, and what it acts on.
struct Run {
    request: Request,
    payment_id: Option<String>,
    session_id: String,
}

impl Lifecycle {
    const ALL: [Lifecycle; 5] = [
        Lifecycle::ManualCapture,
        Lifecycle::Refund,
        Lifecycle::Void,
        Lifecycle::AutomaticSubmit,
        Lifecycle::DeclinedSubmit,
    ];

    /// Everything before the faulted request, with no fault.
    async fn prepare(self, server: &TestServer) -> Run {
        let submit = |session: &proto::Session, split| {
            Request::Submit(proto::SubmitSessionRequest {
                session_id: session.id.clone(),
                idempotency_key: new_key(),
                split,
            })
        };
        match self {
            Lifecycle::AutomaticSubmit | Lifecycle::DeclinedSubmit => {
                let mode = if self == Lifecycle::AutomaticSubmit {
                    proto::CaptureMode::Automatic
                } else {
                    proto::CaptureMode::Manual
                };
                let session = open_session(server, 12000, mode).await;
                let gift_token = if self == Lifecycle::DeclinedSubmit {
                    "authorize=decline"
                } else {
                    "tok"
                };
                Run {
                    request: submit(&session, vec![card(10000, "tok"), gift(2000, gift_token)]),
                    payment_id: None,
                    session_id: session.id,
                }
            }
            _ => {
                let payment = card_and_gift(server, "tok", "tok").await;
                let request = match self {
                    Lifecycle::ManualCapture => Request::Capture(capture(&payment, Some(5000))),
                    Lifecycle::Refund => {
                        server
                            .payments()
                            .capture(capture(&payment, Some(5000)))
                            .await
                            .unwrap();
                        Request::Refund(refund(&payment, Some(1000)))
                    }
                    _ => Request::Void(void(&payment, None)),
                };
                Run {
                    request,
                    payment_id: Some(payment.id),
                    session_id: payment.session_id,
                }
            }
        }
    }

    /// What the books must show once everything settled: `(payment state,
    /// captured, refunded, voided)`, and the SYSTEM operation expected.
    fn expected(self) -> (PaymentState, i64, i64, i64) {
        match self {
            Lifecycle::ManualCapture => (PaymentState::PartiallyCaptured, 5000, 0, 0),
            Lifecycle::Refund => (PaymentState::PartiallyRefunded, 5000, 1000, 0),
            Lifecycle::Void => (PaymentState::Voided, 0, 0, 12000),
            Lifecycle::AutomaticSubmit => (PaymentState::Captured, 12000, 0, 0),
            Lifecycle::DeclinedSubmit => (PaymentState::Failed, 0, 0, 10000),
        }
    }
}

/// Sends the request; the payment id it answers about, if it answered.
async fn send(server: &TestServer, request: &Request) -> Result<String, Status> {
    let payment = |result: proto::OperationResult| result.payment.unwrap().id;
    match request.clone() {
        Request::Capture(r) => server
            .payments()
            .capture(r)
            .await
            .map(|r| payment(r.into_inner())),
        Request::Refund(r) => server
            .payments()
            .refund(r)
            .await
            .map(|r| payment(r.into_inner())),
        Request::Void(r) => server
            .payments()
            .void(r)
            .await
            .map(|r| payment(r.into_inner())),
        Request::Submit(r) => server
            .sessions()
            .submit_session(r)
            .await
            .map(|r| r.into_inner().id),
    }
}

/// Lets the resolver take over everything a cut-off request left: past the
/// operation lease, the idempotency lease and a few backoffs. `real` is how
/// long the store's own clock must run for its leases and send claims to
/// end (Redis judges them by its clock, not the test's).
async fn settle_down(server: &TestServer, real: Duration) {
    tokio::time::sleep(real).await;
    for seconds in [61, 121, 600, 3600, 3600] {
        server.resolve_after(Duration::from_secs(seconds)).await;
    }
}

/// Runs one lifecycle with `fault`; checks the books. Returns how many store
/// calls the faulted request made.
async fn run(
    server: &TestServer,
    store: &FaultyStore,
    lifecycle: Lifecycle,
    fault: Option<(usize, Fault)>,
    real: Duration,
) -> usize {
    let Run {
        request,
        payment_id,
        session_id,
    } = lifecycle.prepare(server).await;
    store.arm(fault);
    let first = send(server, &request).await;
    let calls = store.disarm();
    // A retry at once, then the resolver, then the retry that must answer.
    let _ = send(server, &request).await;
    settle_down(
        server,
        if fault.is_some() {
            real
        } else {
            Duration::ZERO
        },
    )
    .await;
    let answered = send(server, &request).await.unwrap_or_else(|status| {
        panic!("{lifecycle:?} {fault:?}: the key never answered: {status:?} (first: {first:?})")
    });
    let payment_id = payment_id.unwrap_or(answered.clone());
    assert_eq!(answered, payment_id, "{lifecycle:?} {fault:?}");
    check_books(server, lifecycle, fault, &payment_id, &session_id).await;
    calls
}

async fn check_books(
    server: &TestServer,
    lifecycle: Lifecycle,
    fault: Option<(usize, Fault)>,
    payment_id: &str,
    session_id: &str,
) {
    let at = format!("{lifecycle:?} {fault:?}");
    let payment = payment_now(server, payment_id).await;
    let ops: Vec<&proto::Operation> = payment
        .authorization
        .iter()
        .chain(&payment.captures)
        .chain(&payment.refunds)
        .chain(&payment.voids)
        .collect();
    for op in &ops {
        assert!(
            !matches!(
                op.status(),
                OperationStatus::Pending | OperationStatus::Uncertain
            ),
            "{at}: an operation is not final: {op:#?}"
        );
    }
    let a = amounts(&payment);
    assert_eq!(
        (
            a.authorize_pending,
            a.capture_pending,
            a.refund_pending,
            a.void_pending
        ),
        (0, 0, 0, 0),
        "{at}: a reservation is left"
    );
    let (state, captured, refunded, voided) = lifecycle.expected();
    assert_eq!(payment.state(), state, "{at}: {payment:#?}");
    assert_eq!(
        (a.total_captured, a.total_refunded, a.total_voided),
        (captured, refunded, voided),
        "{at}"
    );
    // One operation per key, system operations exactly once.
    let (captures, refunds, voids) = match lifecycle {
        Lifecycle::ManualCapture | Lifecycle::AutomaticSubmit => (1, 0, 0),
        Lifecycle::Refund => (1, 1, 0),
        Lifecycle::Void | Lifecycle::DeclinedSubmit => (0, 0, 1),
    };
    assert_eq!(
        (
            payment.captures.len(),
            payment.refunds.len(),
            payment.voids.len()
        ),
        (captures, refunds, voids),
        "{at}: {payment:#?}"
    );
    if matches!(
        lifecycle,
        Lifecycle::AutomaticSubmit | Lifecycle::DeclinedSubmit
    ) {
        let system = ops
            .iter()
            .filter(|op| op.triggered_by() == TriggeredBy::System)
            .count();
        assert_eq!(system, 1, "{at}: SYSTEM operations");
    }
    // The partners' books say the same, leg by leg.
    let authorization = payment.authorization.as_ref().unwrap();
    for tx in &authorization.partner_transactions {
        let booked = |ops: &[proto::Operation]| -> i64 {
            ops.iter()
                .flat_map(|op| &op.partner_transactions)
                .filter(|t| t.partner == tx.partner && t.status() == OperationStatus::Success)
                .map(|t| t.amount)
                .sum()
        };
        let ledger = server.sandbox(&tx.partner).authorizations();
        let totals = ledger
            .get(&tx.partner_reference)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (
                totals.authorized,
                totals.captured,
                totals.refunded,
                totals.voided
            ),
            (
                if tx.status() == OperationStatus::Success {
                    tx.amount
                } else {
                    0
                },
                booked(&payment.captures),
                booked(&payment.refunds),
                booked(&payment.voids)
            ),
            "{at}: {} disagrees with its ledger",
            tx.partner
        );
    }
    let status = session_status(server, session_id).await;
    assert_ne!(
        status,
        SessionStatus::Processing,
        "{at}: session left PROCESSING"
    );
}

/// Every lifecycle, every call index, both faults, on the store `make`
/// builds, with the server `settings`; `real` as in [`settle_down`].
async fn every_failure_window(
    settings: &[&str],
    real: Duration,
    mut make: impl AsyncFnMut(ManualClock) -> Arc<dyn Store>,
) {
    for lifecycle in Lifecycle::ALL {
        let clock = ManualClock::new(SystemTime::now());
        let store = FaultyStore::new(make(clock.clone()).await);
        let server = TestServer::start_on(settings, clock, Some(store.clone())).await;
        let calls = run(&server, &store, lifecycle, None, real).await;
        assert!(calls >= 3, "{lifecycle:?} made {calls} store calls");
        for k in 0..calls {
            for fault in [Fault::BeforeApplying, Fault::AnswerLost] {
                run(&server, &store, lifecycle, Some((k, fault)), real).await;
            }
        }
        eprintln!("{lifecycle:?}: {calls} store calls, each faulted both ways");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_window_balances_on_the_memory_store() {
    // The memory store judges leases by the server's (manual) clock.
    every_failure_window(&[], Duration::ZERO, async |clock: ManualClock| {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(
            Duration::from_secs(30 * 24 * 3600),
            Arc::new(clock),
        ));
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_window_balances_on_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    // Redis judges leases and send claims by its own clock: short ones,
    // waited out for real after a fault.
    let settings = [
        "--operation-lease",
        "1s",
        "--idempotency-lease",
        "1s",
        "--partner-timeout",
        "300ms",
    ];
    let real = Duration::from_millis(1100);
    every_failure_window(&settings, real, async |_clock: ManualClock| {
        // Each lifecycle on an empty Redis: no other server's due work.
        let store = RedisStore::connect(&redis_settings(vec![url.clone()], false))
            .await
            .expect("connects");
        redis::cmd("FLUSHALL")
            .query_async::<()>(
                &mut redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        store
    })
    .await;
}
