//! One contract per storage port — payments (with atomic steps), idempotency
//! records, the due-queue, the webhook outbox, partner event ids — run
//! against the memory store, a private redis-server and a private 3-master
//! Redis Cluster.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use payment_orchestrator::{
    clock::SystemClock,
    domain::{
        capabilities::Capabilities,
        checkout::HostedCheckout,
        items::{ItemLine, ItemLineInput},
        money::{Amount, Currency},
        operation::{
            Fingerprint, Operation, OperationKind, Origin, TransactionOutcome, TriggeredBy,
        },
        payment::{Leg, NewPayment, OperationRequest, Payment, PaymentToken},
        precondition::Precondition,
        priority::DefaultPriorities,
        session::{CaptureMode, Session, SessionStatus},
        settlement::{
            Control, Day, EntryKind, FailedSettlement, Line, Match, ReconciliationIssue, SettledBy,
            Settlement, SettlementEntry, SettlementReport, SettlementTransaction, Totals,
        },
        status::TransactionStatus,
    },
    store::{
        ClaimChange, Committed, DueChange, DueItem, InstrumentAttempt, InstrumentClaim, IssueQuery,
        KeyChange, KeyState, Lane, ListQuery, OperationWrite, OutboxChange, Outcome, PaymentWrite,
        SettlementQuery, Shard, Step, Store, StoreError, Versioned, WebhookDelivery, Write,
        listing_member,
        memory::MemoryStore,
        redis::{RedisSettings, RedisStore},
    },
};
use uuid::Uuid;

use super::support::redis_server::{RedisCluster, RedisServer};

/// A store under test, with whatever keeps it alive.
pub struct Subject {
    pub store: Arc<dyn Store>,
    _servers: Option<Box<dyn std::any::Any + Send>>,
}

pub fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new(
            Duration::from_secs(3600),
            Arc::new(SystemClock),
        )),
        _servers: None,
    }
}

pub fn redis_settings(urls: Vec<String>, cluster: bool) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        session_retention: Duration::from_secs(3600),
        wait_replicas: 0,
        wait_timeout: Duration::from_millis(500),
    }
}

pub async fn redis() -> Subject {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(vec![server.url()], false))
        .await
        .expect("connects");
    Subject {
        store: Arc::new(store),
        _servers: Some(Box::new(server)),
    }
}

pub async fn redis_cluster() -> Subject {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let store = RedisStore::connect(&redis_settings(cluster.urls(), true))
        .await
        .expect("connects");
    Subject {
        store: Arc::new(store),
        _servers: Some(Box::new(cluster)),
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn amount(minor: i64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

fn item(sku: &str, minor: i64) -> ItemLine {
    ItemLine::compute(ItemLineInput {
        sku_reference: sku.into(),
        name: "Item".into(),
        quantity: 1,
        unit_price: amount(minor),
        tax_rate: rust_decimal::Decimal::new(25, 0),
        discount_amount: Amount::ZERO,
    })
    .unwrap()
}

fn session(merchant: &str) -> Session {
    Session {
        id: Uuid::now_v7(),
        merchant: merchant.into(),
        order_reference: "order-1".into(),
        amount: amount(12000),
        currency: Currency::parse("EUR").unwrap(),
        capture_mode: CaptureMode::Manual,
        items: vec![],
        webhook: None,
        metadata: Default::default(),
        status: SessionStatus::Open,
        cancellation_reason: String::new(),
        created_at: now(),
        updated_at: now(),
        expires_at: now() + Duration::from_secs(1800),
        payment_id: None,
        fingerprint: Fingerprint([7; 16]),
        created: None,
    }
}

/// A payment of one card leg with its authorization, in `shard` (random
/// when `None`), created at `created_at`.
fn payment_at(merchant: &str, order: &str, created_at: SystemTime) -> (Payment, Operation) {
    let id = Uuid::now_v7();
    Payment::new(
        NewPayment {
            id,
            merchant: merchant.into(),
            session_id: Uuid::now_v7(),
            order_reference: order.into(),
            amount: amount(12000),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            legs: vec![Leg {
                partner: "ingenico".into(),
                method: "creditcard".into(),
                amount: amount(12000),
                token: PaymentToken::new("tok".into()),
                capabilities: Capabilities {
                    partial_void: false,
                    ..Capabilities::default()
                },
                authorization_lifetime: Duration::from_secs(14 * 86_400),
            }],
            webhook: None,
            authorization_id: Shard::of(id).stamp(Uuid::now_v7()),
            origin: None,
            items: vec![item("sku-1", 12000)],
        },
        created_at,
    )
}

fn payment() -> (Payment, Operation) {
    payment_at("demo", "order-1", now())
}

/// A step writing the payment: inserting it (`expected` None) or
/// compare-and-set on `expected`, with these operations.
fn payment_step(expected: Option<u64>, header: &Payment, operations: Vec<OperationWrite>) -> Step {
    let mut step = Step::new(Shard::of(header.id), now());
    step.payment = Some(PaymentWrite {
        header: match expected {
            None => Write::Insert(header.clone()),
            Some(expected) => Write::Update {
                expected,
                value: header.clone(),
            },
        },
        operations,
    });
    step
}

/// The payment version a step that wrote the payment came to.
fn payment_version(committed: Committed) -> u64 {
    match committed {
        Committed::Applied {
            payment: Some(version),
            ..
        } => version,
        other => panic!("the payment was not written: {other:?}"),
    }
}

/// A payment inserted with its authorization, at the version the store gave.
async fn inserted(store: &Arc<dyn Store>) -> (Versioned<Payment>, Operation) {
    let (header, authorization) = payment();
    let step = payment_step(
        None,
        &header,
        vec![OperationWrite::Insert(authorization.clone())],
    );
    let version = payment_version(store.commit(step).await.unwrap());
    (
        Versioned {
            value: header,
            version,
        },
        authorization,
    )
}

/// A partner's success with `reference`.
fn success(reference: &str) -> TransactionOutcome {
    TransactionOutcome {
        status: TransactionStatus::Success,
        partner_reference: Some(reference.into()),
        partner_status: String::new(),
        partner_status_description: String::new(),
        partner_token: None,
    }
}

/// The header with the authorization succeeded, and a capture opened on it.
fn capture_of(header: &Payment, authorization: &Operation, id: Uuid) -> (Payment, Operation) {
    let mut header = header.clone();
    let mut authorization = authorization.clone();
    let tx = authorization.transactions[0].id;
    header.record(&mut authorization, tx, success("ref"), now());
    let request = OperationRequest {
        kind: OperationKind::Capture,
        amount: Some(amount(100)),
        priority: DefaultPriorities::standard().capture,
        fallback: true,
        merchant_reference: String::new(),
        reason: String::new(),
        triggered_by: TriggeredBy::Merchant,
        origin: Some(Origin {
            record: id,
            fingerprint: Fingerprint([1; 16]),
        }),
        items: vec![item("sku-1", 100)],
        order_source: payment_orchestrator::domain::priority::OrderSource::Default,
        avoid: Vec::new(),
        max_operations: None,
    };
    let capture = header.open_operation(id, &request, now()).unwrap();
    (header, capture)
}

fn claim(record: Uuid, fingerprint: u8, lease: Duration) -> KeyChange {
    KeyChange::Claim {
        record,
        fingerprint: Fingerprint([fingerprint; 16]),
        lease,
        ttl: Duration::from_secs(3600),
    }
}

/// What claiming `record` with `fingerprint` for `lease` commits to.
async fn claimed(
    store: &Arc<dyn Store>,
    record: Uuid,
    fingerprint: u8,
    lease: Duration,
) -> Committed {
    store
        .commit(key_step(record, claim(record, fingerprint, lease)))
        .await
        .unwrap()
}

fn refused() -> Outcome {
    Outcome::Refused(Precondition::NothingAvailable)
}

fn key_step(record: Uuid, key: KeyChange) -> Step {
    let mut step = Step::new(Shard::of(record), now());
    step.key = Some(key);
    step
}

// ---- payments ----

pub async fn sessions_are_written_with_compare_and_set(subject: Subject) {
    let store = subject.store;
    let mut s = session("demo");
    let mut insert = Step::new(Shard::of(s.id), now());
    insert.session = Some(Write::Insert(s.clone()));
    assert!(matches!(
        store.commit(insert.clone()).await.unwrap(),
        Committed::Applied {
            session: Some(1),
            ..
        }
    ));
    assert_eq!(store.commit(insert).await.unwrap(), Committed::Exists);
    let read = store.session(s.id).await.unwrap().unwrap();
    assert_eq!((read.value.clone(), read.version), (s.clone(), 1));
    s.status = SessionStatus::Cancelled;
    let update = |expected| {
        let mut step = Step::new(Shard::of(s.id), now());
        step.session = Some(Write::Update {
            expected,
            value: s.clone(),
        });
        step
    };
    assert!(matches!(
        store.commit(update(1)).await.unwrap(),
        Committed::Applied {
            session: Some(2),
            ..
        }
    ));
    assert_eq!(store.commit(update(1)).await.unwrap(), Committed::Conflict);
    let mut check = Step::new(Shard::of(s.id), now());
    check.session = Some(Write::Check {
        expected: 1,
        id: s.id,
    });
    assert_eq!(store.commit(check).await.unwrap(), Committed::Conflict);
    assert_eq!(
        store.session(s.id).await.unwrap().unwrap().value.status,
        SessionStatus::Cancelled
    );
    assert!(store.session(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn a_step_writes_the_header_and_the_operations_it_names(subject: Subject) {
    let store = subject.store;
    let (header, authorization) = inserted(&store).await;
    let stored = store.payment(header.value.id).await.unwrap().unwrap();
    assert_eq!(stored.header, header);
    assert_eq!(stored.operations, vec![authorization.clone()]);

    let capture_id = Shard::of(header.value.id).stamp(Uuid::now_v7());
    let (reserved, capture) = capture_of(&header.value, &authorization, capture_id);
    let step = payment_step(
        Some(header.version),
        &reserved,
        vec![OperationWrite::Insert(capture.clone())],
    );
    let written = payment_version(store.commit(step.clone()).await.unwrap());
    assert!(written > header.version, "versions grow");
    // The same version again: someone else wrote first.
    assert_eq!(store.commit(step).await.unwrap(), Committed::Conflict);
    // A derived id already taken is never inserted twice.
    let again = payment_step(
        Some(written),
        &reserved,
        vec![OperationWrite::Insert(capture.clone())],
    );
    assert_eq!(store.commit(again).await.unwrap(), Committed::Exists);

    let (read_header, read_capture) = store
        .operation(header.value.id, capture_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read_header.version, &read_capture), (written, &capture));
    assert_eq!(
        store.header(header.value.id).await.unwrap().unwrap().value,
        reserved
    );
    let (found_header, found) = store.find_operation(capture_id).await.unwrap().unwrap();
    assert_eq!(
        (found_header.value.id, found),
        (header.value.id, capture.clone())
    );
    let stored = store.payment(header.value.id).await.unwrap().unwrap();
    assert_eq!(
        stored.operations,
        vec![authorization, capture],
        "oldest first"
    );
    assert!(
        store
            .find_operation(Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.payment(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn a_step_that_fails_a_check_applies_nothing(subject: Subject) {
    let store = subject.store;
    let (header, authorization) = inserted(&store).await;
    let capture_id = Shard::of(header.value.id).stamp(Uuid::now_v7());
    let (reserved, capture) = capture_of(&header.value, &authorization, capture_id);
    let item = DueItem::Operation {
        payment: header.value.id,
        operation: capture_id,
    };
    let mut step = Step::new(Shard::of(header.value.id), now());
    step.key = Some(claim(capture_id, 1, Duration::from_secs(60)));
    step.payment = Some(PaymentWrite {
        header: Write::Update {
            expected: 7, // stale
            value: reserved,
        },
        operations: vec![OperationWrite::Insert(capture)],
    });
    step.due.push(DueChange::Schedule(item, now()));
    assert_eq!(store.commit(step).await.unwrap(), Committed::Conflict);
    assert!(
        store
            .operation(header.value.id, capture_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .header(header.value.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        header.version
    );
    assert!(
        store
            .claim_due(Lane::Resolution, now(), Duration::from_secs(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The key was not claimed either.
    let fresh = key_step(capture_id, claim(capture_id, 2, Duration::from_secs(60)));
    assert!(matches!(
        store.commit(fresh).await.unwrap(),
        Committed::Applied { .. }
    ));
}

pub async fn only_one_concurrent_writer_wins_each_version(subject: Subject) {
    let store = subject.store;
    let (header, _) = inserted(&store).await;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let mut value = header.value.clone();
            let expected = header.version;
            tokio::spawn(async move {
                value.order_reference = format!("writer-{i}");
                let mut step = Step::new(Shard::of(value.id), now());
                step.payment = Some(PaymentWrite {
                    header: Write::Update { expected, value },
                    operations: vec![],
                });
                store.commit(step).await.unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Committed::Applied {
                payment: Some(version),
                ..
            } if version > header.version => won += 1,
            Committed::Conflict => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

pub async fn listing_is_ordered_bounded_and_paged(subject: Subject) {
    let store = subject.store;
    let merchant = format!("m-{}", Uuid::now_v7());
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let created: Vec<Payment> = (0..7)
        .map(|i| {
            payment_at(
                &merchant,
                if i % 2 == 0 { "even" } else { "odd" },
                t0 + Duration::from_secs(i),
            )
            .0
        })
        .collect();
    // Indexed out of order (and each one stored): the index orders by time.
    for p in created.iter().rev() {
        let mut step = Step::new(Shard::of(p.id), now());
        step.payment = Some(PaymentWrite {
            header: Write::Insert(p.clone()),
            operations: vec![],
        });
        store.commit(step).await.unwrap();
        store.index_payment(p).await.unwrap();
    }
    store
        .index_payment(&payment_at("someone-else", "even", t0).0)
        .await
        .unwrap();
    // A member whose payment was never stored is listed without payment.
    let ghost = payment_at(&merchant, "ghost", t0 + Duration::from_secs(100)).0;
    store.index_payment(&ghost).await.unwrap();
    let ids = |listed: Vec<payment_orchestrator::store::ListedPayment>| -> Vec<Uuid> {
        listed
            .into_iter()
            .filter_map(|l| l.payment.map(|p| p.header.value.id))
            .collect()
    };
    let query = every_payment_of(&merchant);
    let all: Vec<Uuid> = created.iter().map(|p| p.id).collect();
    let listed = store.list_payments(&query).await.unwrap();
    assert_eq!(listed.len(), 8);
    assert!(listed[7].payment.is_none(), "the ghost");
    assert_eq!(ids(listed), all);
    let newest = ListQuery {
        newest_first: true,
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&newest).await.unwrap()),
        all.iter().rev().copied().collect::<Vec<_>>()
    );
    let bounded = ListQuery {
        created_after: Some(t0 + Duration::from_secs(2)),
        created_before: Some(t0 + Duration::from_secs(5)),
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&bounded).await.unwrap()),
        all[2..5].to_vec()
    );
    let first_page = store
        .list_payments(&ListQuery {
            limit: 3,
            ..query.clone()
        })
        .await
        .unwrap();
    let cursor = first_page.last().unwrap().cursor.clone();
    let second_page = store
        .list_payments(&ListQuery {
            limit: 3,
            cursor: Some(cursor),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(first_page), all[0..3].to_vec());
    assert_eq!(ids(second_page), all[3..6].to_vec());
    let odd = ListQuery {
        order_reference: Some("odd".into()),
        newest_first: true,
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&odd).await.unwrap()),
        vec![all[5], all[3], all[1]]
    );
}

// ---- idempotency records ----

pub async fn a_claimed_key_is_in_flight_until_answered(subject: Subject) {
    let store = subject.store;
    let record = Uuid::now_v7();
    // Judged by the store's own clock: a short lease, really waited out.
    let lease = Duration::from_millis(400);
    assert!(matches!(
        claimed(&store, record, 1, lease).await,
        Committed::Applied { .. }
    ));
    assert_eq!(
        claimed(&store, record, 1, lease).await,
        Committed::Claimed(KeyState::InFlight {
            lease_expired: false
        })
    );
    assert_eq!(
        claimed(&store, record, 2, lease).await,
        Committed::Claimed(KeyState::Mismatch)
    );
    // The lease ran out: the claim says so (and changes nothing), whatever
    // the claimant's clock says.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let mut late = key_step(record, claim(record, 1, lease));
    late.now = now() - Duration::from_secs(3600);
    assert_eq!(
        store.commit(late).await.unwrap(),
        Committed::Claimed(KeyState::InFlight {
            lease_expired: true
        })
    );
    // Completed: every later claim gets the answer.
    let complete = |outcome| key_step(record, KeyChange::Complete { record, outcome });
    assert_eq!(
        store.commit(complete(refused())).await.unwrap(),
        Committed::Applied {
            payment: None,
            session: None,
            answered: None
        }
    );
    assert_eq!(
        claimed(&store, record, 1, lease).await,
        Committed::Claimed(KeyState::Done(Box::new(refused())))
    );
    assert_eq!(
        claimed(&store, record, 2, lease).await,
        Committed::Claimed(KeyState::Mismatch)
    );
    // A second completion keeps the first answer and hands it back.
    let other = Outcome::Refused(Precondition::PaymentNotAuthorized);
    assert_eq!(
        store.commit(complete(other)).await.unwrap(),
        Committed::Applied {
            payment: None,
            session: None,
            answered: Some(Box::new(refused()))
        }
    );
}

pub async fn completing_a_missing_record_creates_nothing(subject: Subject) {
    let store = subject.store;
    let record = Uuid::now_v7();
    let complete = key_step(
        record,
        KeyChange::Complete {
            record,
            outcome: refused(),
        },
    );
    assert!(matches!(
        store.commit(complete).await.unwrap(),
        Committed::Applied { answered: None, .. }
    ));
    assert!(matches!(
        claimed(&store, record, 1, Duration::from_secs(5)).await,
        Committed::Applied { .. }
    ));
}

pub async fn an_answer_is_stored_at_once_and_replayed_in_full(subject: Subject) {
    let store = subject.store;
    // An operation answer whose operation is stored (final or not, the
    // replay is the operation as the answer showed it).
    let (header, authorization) = inserted(&store).await;
    let capture_id = Shard::of(header.value.id).stamp(Uuid::now_v7());
    let (reserved, mut capture) = capture_of(&header.value, &authorization, capture_id);
    let step = payment_step(
        Some(header.version),
        &reserved,
        vec![OperationWrite::Insert(capture.clone())],
    );
    let written = payment_version(store.commit(step).await.unwrap());
    let uncertain = Outcome::Operation {
        snapshot: reserved.snapshot(),
        operation: capture.clone(),
    };
    let answer = KeyChange::Answer {
        record: capture_id,
        fingerprint: Fingerprint([1; 16]),
        outcome: uncertain.clone(),
        ttl: Duration::from_secs(3600),
    };
    assert!(matches!(
        store.commit(key_step(capture_id, answer)).await.unwrap(),
        Committed::Applied { .. }
    ));
    // The operation moves on; the stored answer does not.
    let tx = capture.transactions[0].id;
    let mut header2 = reserved.clone();
    header2.record(&mut capture, tx, success("cap"), now());
    let write = payment_step(
        Some(written),
        &header2,
        vec![OperationWrite::Update(capture.clone())],
    );
    store.commit(write).await.unwrap();
    assert_eq!(
        claimed(&store, capture_id, 1, Duration::from_secs(5)).await,
        Committed::Claimed(KeyState::Done(Box::new(uncertain)))
    );
    // A final operation's answer, then, is replayed exactly too.
    let record = Shard::of(header.value.id).stamp(Uuid::now_v7());
    let final_answer = Outcome::Operation {
        snapshot: header2.snapshot(),
        operation: capture.clone(),
    };
    store
        .commit(key_step(
            record,
            KeyChange::Answer {
                record,
                fingerprint: Fingerprint([3; 16]),
                outcome: final_answer.clone(),
                ttl: Duration::from_secs(3600),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        claimed(&store, record, 3, Duration::from_secs(5)).await,
        Committed::Claimed(KeyState::Done(Box::new(final_answer)))
    );
    // A session's answer.
    let s = session("demo");
    let mut insert = Step::new(Shard::of(s.id), now());
    let view = s.clone().view_at(now());
    insert.session = Some(Write::Insert(s.clone()));
    insert.key = Some(KeyChange::Answer {
        record: s.id,
        fingerprint: Fingerprint([4; 16]),
        outcome: Outcome::Session(view.clone()),
        ttl: Duration::from_secs(3600),
    });
    store.commit(insert).await.unwrap();
    assert_eq!(
        store
            .commit(key_step(s.id, claim(s.id, 4, Duration::from_secs(5))))
            .await
            .unwrap(),
        Committed::Claimed(KeyState::Done(Box::new(Outcome::Session(view))))
    );
}

pub async fn idempotency_records_expire_after_their_ttl(subject: Subject) {
    let store = subject.store;
    let record = Uuid::now_v7();
    let answer = KeyChange::Answer {
        record,
        fingerprint: Fingerprint([1; 16]),
        outcome: refused(),
        ttl: Duration::from_millis(100),
    };
    store.commit(key_step(record, answer)).await.unwrap();
    // Redis expires by its own clock, the memory store by the time given.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        claimed(&store, record, 2, Duration::from_secs(5)).await,
        Committed::Applied { .. }
    ));
}

pub async fn exactly_one_concurrent_claim_is_acquired(subject: Subject) {
    let store = subject.store;
    let record = Uuid::now_v7();
    let claims: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { claimed(&store, record, 1, Duration::from_secs(10)).await })
        })
        .collect();
    let mut acquired = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Committed::Applied { .. } => acquired += 1,
            Committed::Claimed(KeyState::InFlight { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acquired, 1);
}

// ---- the due-queue ----

fn due_step(item: &DueItem, change: DueChange) -> Step {
    let mut step = Step::new(item.shard(), now());
    step.due.push(change);
    step
}

pub async fn due_items_are_leased_and_come_back_after_the_lease(subject: Subject) {
    let store = subject.store;
    let t = now();
    let payments: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let items: Vec<DueItem> = payments
        .iter()
        .map(|p| DueItem::Operation {
            payment: *p,
            operation: Shard::of(*p).stamp(Uuid::now_v7()),
        })
        .collect();
    for (i, item) in items.iter().enumerate() {
        let at = t + Duration::from_secs(i as u64);
        store
            .commit(due_step(item, DueChange::Schedule(item.clone(), at)))
            .await
            .unwrap();
    }
    let summary = store.due_summary(Lane::Resolution).await.unwrap();
    assert_eq!(summary.depth, 5);
    assert_eq!(
        summary
            .earliest
            .map(payment_orchestrator::store::unix_millis),
        Some(payment_orchestrator::store::unix_millis(t))
    );
    // Due at t+2: the first three, and only up to the limit.
    let lease = Duration::from_secs(30);
    let first = store
        .claim_due(Lane::Resolution, t + Duration::from_secs(2), lease, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .claim_due(Lane::Resolution, t + Duration::from_secs(2), lease, 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1, "the leased ones are not taken again");
    let mut taken: Vec<DueItem> = first.into_iter().chain(rest).collect();
    taken.sort();
    let mut expected = items[..3].to_vec();
    expected.sort();
    assert_eq!(taken, expected);
    // Off the queue: never due again.
    store
        .commit(due_step(&items[0], DueChange::Unschedule(items[0].clone())))
        .await
        .unwrap();
    // After the lease, the others come back (a worker that died).
    let later = store
        .claim_due(Lane::Resolution, t + Duration::from_secs(40), lease, 10)
        .await
        .unwrap();
    assert_eq!(later.len(), 4, "{later:?}");
    assert!(!later.contains(&items[0]));
    assert_eq!(store.due_summary(Lane::Resolution).await.unwrap().depth, 4);
}

// ---- the webhook outbox ----

pub async fn webhook_deliveries_are_put_once_updated_and_deleted(subject: Subject) {
    let store = subject.store;
    let payment = Uuid::now_v7();
    let delivery = WebhookDelivery {
        id: Shard::of(payment).stamp(Uuid::now_v7()),
        merchant: "demo".into(),
        url: "https://example.test/hook".into(),
        headers: Default::default(),
        body: "{\"a\":1}".into(),
        attempts: 0,
        created_at: now(),
        last_error: None,
    };
    let outbox = |change| {
        let mut step = Step::new(Shard::of(payment), now());
        step.outbox.push(change);
        step
    };
    store
        .commit(outbox(OutboxChange::Put(delivery.clone())))
        .await
        .unwrap();
    let mut second = delivery.clone();
    second.body = "{\"b\":2}".into();
    store
        .commit(outbox(OutboxChange::Put(second)))
        .await
        .unwrap();
    assert_eq!(
        store.delivery(delivery.id).await.unwrap(),
        Some(delivery.clone()),
        "a repeated event is one delivery"
    );
    let mut retried = delivery.clone();
    retried.attempts = 2;
    retried.last_error = Some("the receiver answered HTTP 503".into());
    store
        .commit(outbox(OutboxChange::Update(retried.clone())))
        .await
        .unwrap();
    assert_eq!(store.delivery(delivery.id).await.unwrap(), Some(retried));
    store
        .commit(outbox(OutboxChange::Delete(delivery.id)))
        .await
        .unwrap();
    assert_eq!(store.delivery(delivery.id).await.unwrap(), None);
}

/// Each lane is claimed on its own: a delivery never comes out of the
/// resolver's claim nor an operation out of the delivery worker's; failed
/// deliveries are listed by time and paged.
pub async fn lanes_are_claimed_and_listed_apart(subject: Subject) {
    let store = subject.store;
    let t = now();
    let payment = Uuid::now_v7();
    let shard = Shard::of(payment);
    let operation = DueItem::Operation {
        payment,
        operation: shard.stamp(Uuid::now_v7()),
    };
    let delivery = DueItem::Webhook {
        delivery: shard.stamp(Uuid::now_v7()),
    };
    let failed: Vec<DueItem> = (0..3)
        .map(|_| DueItem::FailedWebhook {
            delivery: Shard::of(Uuid::now_v7()).stamp(Uuid::now_v7()),
        })
        .collect();
    let mut step = Step::new(shard, t);
    step.due.push(DueChange::Schedule(operation.clone(), t));
    step.due.push(DueChange::Schedule(delivery.clone(), t));
    store.commit(step).await.unwrap();
    for (i, item) in failed.iter().enumerate() {
        let at = t + Duration::from_secs(i as u64);
        store
            .commit(due_step(item, DueChange::Schedule(item.clone(), at)))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    let later = t + Duration::from_secs(10);
    assert_eq!(
        store
            .claim_due(Lane::Resolution, later, lease, 100)
            .await
            .unwrap(),
        vec![operation.clone()]
    );
    assert_eq!(
        store
            .claim_due(Lane::Delivery, later, lease, 100)
            .await
            .unwrap(),
        vec![delivery.clone()]
    );
    assert_eq!(store.due_summary(Lane::Delivery).await.unwrap().depth, 1);
    assert_eq!(store.due_summary(Lane::Failed).await.unwrap().depth, 3);
    assert!(store.scheduled(&delivery).await.unwrap().is_some());
    assert_eq!(
        store
            .scheduled(&failed[1])
            .await
            .unwrap()
            .map(payment_orchestrator::store::unix_millis),
        Some(payment_orchestrator::store::unix_millis(
            t + Duration::from_secs(1)
        ))
    );
    // Paged by time: two, then the one after the cursor.
    let first = store.list_lane(Lane::Failed, None, 2).await.unwrap();
    let items: Vec<&DueItem> = first.iter().map(|(_, item)| item).collect();
    assert_eq!(items, vec![&failed[0], &failed[1]]);
    let rest = store
        .list_lane(Lane::Failed, first.last().cloned(), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, failed[2]);
    // Off a lane by the same step kinds.
    store
        .commit(due_step(
            &failed[0],
            DueChange::Unschedule(failed[0].clone()),
        ))
        .await
        .unwrap();
    assert_eq!(store.scheduled(&failed[0]).await.unwrap(), None);
    assert_eq!(store.due_summary(Lane::Failed).await.unwrap().depth, 2);
}

// ---- partner event ids ----

pub async fn a_partner_event_is_first_seen_once_within_its_memory(subject: Subject) {
    let store = subject.store;
    let event = format!("evt-{}", Uuid::now_v7());
    let ttl = Duration::from_millis(200);
    assert!(
        store
            .first_sighting("ingenico", &event, ttl, now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_sighting("ingenico", &event, ttl, now())
            .await
            .unwrap()
    );
    assert!(
        store
            .first_sighting("illicado", &event, ttl, now())
            .await
            .unwrap(),
        "ids are per partner"
    );
    // Time passing is the point: the id is forgotten once its memory ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .first_sighting("ingenico", &event, ttl, now())
            .await
            .unwrap()
    );
}

// ---- settlements ----

fn settlement(partner: &str, reference: &str, date: &str) -> Settlement {
    Settlement {
        id: Settlement::id_for(partner, reference),
        partner: partner.into(),
        reference: reference.into(),
        payout_reference: format!("payout-{reference}"),
        date: date.parse().unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        totals: Totals::default(),
        lines: 0,
        issues: 0,
        merchant: (partner == "walley").then(|| "demo".to_owned()),
        imported_at: now(),
    }
}

fn settlement_line(index: u64, amount: i64) -> SettlementTransaction {
    SettlementTransaction {
        index,
        line: Line::Entry(SettlementEntry {
            kind: EntryKind::Capture,
            amount,
            currency: Currency::parse("EUR").unwrap(),
            order_reference: format!("order-{index}"),
            partner_reference: format!("p-{index}"),
            action_reference: format!("a-{index}"),
            transaction_date: Day::from_days(20_000),
            vat: Vec::new(),
        }),
        matched: Match::Matched,
        operation_id: None,
        partner_transaction_id: None,
        payment_id: None,
    }
}

pub async fn settlements_are_stored_once_and_listed_by_date_with_filters(subject: Subject) {
    let store = subject.store;
    let keep = now() + Duration::from_secs(3600);
    let first = settlement("ingenico", &format!("S-{}", Uuid::now_v7()), "2026-11-02");
    let id = first.id;
    let lines: Vec<SettlementTransaction> =
        (0..7).map(|i| settlement_line(i, 100 + i as i64)).collect();
    store
        .put_settlement_lines(id, &lines[..4], keep)
        .await
        .unwrap();
    // Written again (an import taken over midway): stored once, by index.
    store
        .put_settlement_lines(id, &lines[2..], keep)
        .await
        .unwrap();
    assert_eq!(
        store.settlement(id).await.unwrap(),
        None,
        "not before it is finished"
    );
    assert!(store.finish_settlement(&first, keep).await.unwrap());
    assert!(
        !store.finish_settlement(&first, keep).await.unwrap(),
        "stored once"
    );
    assert_eq!(store.settlement(id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.settlement_lines(id, 0, 100).await.unwrap(), lines);
    assert_eq!(
        store.settlement_lines(id, 5, 100).await.unwrap(),
        lines[5..]
    );
    assert_eq!(store.settlement_lines(id, 2, 2).await.unwrap(), lines[2..4]);
    assert!(store.settlement_lines(id, 7, 10).await.unwrap().is_empty());

    let second = settlement("walley", &format!("S-{}", Uuid::now_v7()), "2026-11-01");
    let third = settlement("ingenico", &format!("S-{}", Uuid::now_v7()), "2026-11-03");
    for s in [&second, &third] {
        assert!(store.finish_settlement(s, keep).await.unwrap());
    }
    let list = |query: SettlementQuery| {
        let store = store.clone();
        async move {
            store
                .list_settlements(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|(cursor, s)| (cursor, s.id))
                .collect::<Vec<_>>()
        }
    };
    let all = list(SettlementQuery {
        limit: 10,
        ..SettlementQuery::default()
    })
    .await;
    let ids: Vec<Uuid> = all.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, [second.id, first.id, third.id], "by date");
    let paged = list(SettlementQuery {
        limit: 1,
        cursor: Some(all[0].0.clone()),
        ..SettlementQuery::default()
    })
    .await;
    assert_eq!(
        paged.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [first.id]
    );
    let filtered = list(SettlementQuery {
        partner: Some("ingenico".into()),
        from: Some("2026-11-03".parse().unwrap()),
        to: Some("2026-11-03".parse().unwrap()),
        limit: 10,
        ..SettlementQuery::default()
    })
    .await;
    assert_eq!(
        filtered.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [third.id]
    );
    let owned = list(SettlementQuery {
        merchant: Some("demo".into()),
        limit: 10,
        ..SettlementQuery::default()
    })
    .await;
    assert_eq!(
        owned.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [second.id]
    );
}

fn issue(
    kind: Match,
    partner: &str,
    merchant: Option<&str>,
    at: SystemTime,
) -> ReconciliationIssue {
    ReconciliationIssue {
        id: ReconciliationIssue::id_for_missing(Uuid::now_v7()),
        kind,
        partner: partner.into(),
        merchant: merchant.map(Into::into),
        settlement_id: None,
        line: None,
        payment_id: None,
        operation_id: None,
        partner_transaction_id: None,
        reference: "ref".into(),
        currency: Currency::parse("EUR").unwrap(),
        expected: Amount::from_minor(100).unwrap(),
        settled: Amount::ZERO,
        description: "missing".into(),
        created_at: at,
        resolved_at: None,
        resolution: String::new(),
    }
}

pub async fn reconciliation_issues_are_recorded_once_and_listed_with_filters(subject: Subject) {
    let store = subject.store;
    let keep = now() + Duration::from_secs(3600);
    let start = now();
    let issues = [
        issue(Match::UnknownToUs, "ingenico", None, start),
        issue(
            Match::AmountMismatch,
            "ingenico",
            Some("demo"),
            start + Duration::from_secs(1),
        ),
        issue(
            Match::MissingFromSettlement,
            "walley",
            Some("other"),
            start + Duration::from_secs(2),
        ),
    ];
    for issue in &issues {
        assert!(store.record_issue(issue, keep).await.unwrap());
        assert!(
            !store.record_issue(issue, keep).await.unwrap(),
            "recorded once"
        );
    }
    let list = |query: IssueQuery| {
        let store = store.clone();
        async move {
            store
                .list_issues(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|(cursor, i)| (cursor, i.id))
                .collect::<Vec<_>>()
        }
    };
    let ids = |page: &[(String, Uuid)]| page.iter().map(|(_, id)| *id).collect::<Vec<_>>();
    let after = |t| IssueQuery {
        created_after: Some(t),
        limit: 10,
        ..IssueQuery::default()
    };
    let all = list(after(start)).await;
    assert_eq!(ids(&all), issues.iter().map(|i| i.id).collect::<Vec<_>>());
    let page = list(IssueQuery {
        cursor: Some(all[0].0.clone()),
        limit: 1,
        ..after(start)
    })
    .await;
    assert_eq!(ids(&page), [issues[1].id]);
    let by_kind = list(IssueQuery {
        kind: Some(Match::MissingFromSettlement),
        ..after(start)
    })
    .await;
    assert_eq!(ids(&by_kind), [issues[2].id]);
    let by_partner_and_merchant = list(IssueQuery {
        partner: Some("ingenico".into()),
        merchant: Some("demo".into()),
        ..after(start)
    })
    .await;
    assert_eq!(ids(&by_partner_and_merchant), [issues[1].id]);
    // Resolved once, with its note; open_only leaves it out.
    let resolved_at = start + Duration::from_secs(10);
    let resolved = store
        .resolve_issue(issues[1].id, "refunded by hand", resolved_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resolved.resolved_at, resolved.resolution.as_str()),
        (Some(resolved_at), "refunded by hand")
    );
    let again = store
        .resolve_issue(issues[1].id, "another note", now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, resolved, "a resolved issue stays as it was resolved");
    assert_eq!(store.issue(issues[1].id).await.unwrap(), Some(resolved));
    assert_eq!(
        store
            .resolve_issue(Uuid::now_v7(), "no such issue", now())
            .await
            .unwrap(),
        None
    );
    let open = list(IssueQuery {
        open_only: true,
        ..after(start)
    })
    .await;
    assert_eq!(ids(&open), [issues[0].id, issues[2].id]);
    let before = list(IssueQuery {
        created_before: Some(start + Duration::from_secs(1)),
        ..after(start)
    })
    .await;
    assert_eq!(ids(&before), [issues[0].id]);
}

pub async fn a_settled_transaction_names_its_settlement_until_retention_ends(subject: Subject) {
    let store = subject.store;
    let (one, two, settlement) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let first = SettledBy {
        settlement,
        line: 3,
    };
    let keep = now() + Duration::from_millis(300);
    assert_eq!(
        store.claim_settled(&[(one, first)], keep).await.unwrap(),
        [first]
    );
    // The same claim again holds; another line finds the first one.
    let later = SettledBy {
        settlement: Uuid::now_v7(),
        line: 0,
    };
    assert_eq!(
        store
            .claim_settled(&[(one, first), (one, later), (two, later)], keep)
            .await
            .unwrap(),
        [first, first, later]
    );
    assert_eq!(store.settled_in(one).await.unwrap(), Some(first));
    assert_eq!(store.settled_in(two).await.unwrap(), Some(later));
    assert_eq!(store.settled_in(Uuid::now_v7()).await.unwrap(), None);
    // Time passing is the point: retention ends by the store's clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.settled_in(one).await.unwrap(), None);
}

pub async fn a_failed_settlement_is_kept_until_cleared(subject: Subject) {
    let store = subject.store;
    let partner = format!("contract-{}", Uuid::now_v7());
    let failed = |reference: &str, date: &str, attempts| FailedSettlement {
        report: SettlementReport {
            reference: reference.into(),
            payout_reference: String::new(),
            date: date.parse().unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            fees: Amount::ZERO,
            control: Control::default(),
        },
        error: format!("attempt {attempts}"),
        attempts,
        first_failed_at: now(),
        last_failed_at: now(),
    };
    assert!(store.failed_settlements(&partner).await.unwrap().is_empty());
    store
        .put_failed_settlement(&partner, &failed("B", "2026-11-03", 1))
        .await
        .unwrap();
    store
        .put_failed_settlement(&partner, &failed("A", "2026-11-02", 1))
        .await
        .unwrap();
    store
        .put_failed_settlement(&partner, &failed("B", "2026-11-03", 2))
        .await
        .unwrap();
    let kept = store.failed_settlements(&partner).await.unwrap();
    let seen: Vec<(&str, u64, &str)> = kept
        .iter()
        .map(|f| (f.report.reference.as_str(), f.attempts, f.error.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("A", 1, "attempt 1"), ("B", 2, "attempt 2")],
        "oldest first, replaced by reference"
    );
    store.clear_failed_settlement(&partner, "A").await.unwrap();
    let kept = store.failed_settlements(&partner).await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|f| f.report.reference.as_str())
            .collect::<Vec<_>>(),
        ["B"]
    );
}

pub async fn a_lease_is_held_by_one_owner_until_it_runs_out(subject: Subject) {
    let store = subject.store;
    let name = format!("contract-{}", Uuid::now_v7());
    let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
    let lease = Duration::from_millis(300);
    assert!(store.take_lease(&name, one, now(), lease).await.unwrap());
    assert!(!store.take_lease(&name, two, now(), lease).await.unwrap());
    assert!(
        store.take_lease(&name, one, now(), lease).await.unwrap(),
        "renewed"
    );
    // Time passing is the point: the lease runs out by the store's clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.take_lease(&name, two, now(), lease).await.unwrap(),
        "ran out"
    );
    assert!(!store.take_lease(&name, one, now(), lease).await.unwrap());
}

// ---- send claims ----

pub async fn a_send_claim_is_held_until_released_or_run_out(subject: Subject) {
    let store = subject.store;
    let operation = Uuid::now_v7();
    let ttl = Duration::from_millis(400);
    let step = |claim: ClaimChange| {
        let mut step = Step::new(Shard::of(operation), now());
        step.claims.push(claim);
        step
    };
    let take = |fence| ClaimChange::Take {
        operation,
        leg: 0,
        fence,
        ttl,
    };
    let release = |fence| ClaimChange::Release {
        operation,
        leg: 0,
        fence,
    };
    let applied = |c: Committed| matches!(c, Committed::Applied { .. });
    assert!(applied(store.commit(step(take(1))).await.unwrap()));
    assert_eq!(store.commit(step(take(2))).await.unwrap(), Committed::Busy);
    // Another leg is another claim.
    let mut other = step(take(1));
    other.claims = vec![ClaimChange::Take {
        operation,
        leg: 1,
        fence: 1,
        ttl,
    }];
    assert!(applied(store.commit(other).await.unwrap()));
    // Only its own fence gives a claim up.
    assert!(applied(store.commit(step(release(2))).await.unwrap()));
    assert_eq!(store.commit(step(take(2))).await.unwrap(), Committed::Busy);
    assert!(applied(store.commit(step(release(1))).await.unwrap()));
    assert!(applied(store.commit(step(take(2))).await.unwrap()));
    // It runs out by the store's clock, whatever the caller's says.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let mut late = step(take(3));
    late.now = now() - Duration::from_secs(3600);
    assert!(applied(store.commit(late).await.unwrap()));
}

pub async fn an_abandoned_record_is_in_flight_with_its_lease_over(subject: Subject) {
    let store = subject.store;
    let record = Uuid::now_v7();
    let lease = Duration::from_secs(60);
    claimed(&store, record, 1, lease).await;
    store
        .commit(key_step(record, KeyChange::Abandon { record }))
        .await
        .unwrap();
    assert_eq!(
        claimed(&store, record, 1, lease).await,
        Committed::Claimed(KeyState::InFlight {
            lease_expired: true
        })
    );
    // A record answered stays answered.
    let done = Uuid::now_v7();
    store
        .commit(key_step(
            done,
            KeyChange::Answer {
                record: done,
                fingerprint: Fingerprint([1; 16]),
                outcome: refused(),
                ttl: Duration::from_secs(3600),
            },
        ))
        .await
        .unwrap();
    store
        .commit(key_step(done, KeyChange::Abandon { record: done }))
        .await
        .unwrap();
    assert!(matches!(
        claimed(&store, done, 1, lease).await,
        Committed::Claimed(KeyState::Done(_))
    ));
}

// ---- instruments ----

pub async fn an_instrument_is_claimed_once_and_replaced_only_as_read(subject: Subject) {
    let store = subject.store;
    let instrument = format!("i-{}", Uuid::now_v7().simple());
    let claim = |merchant: &str| InstrumentClaim {
        merchant: merchant.into(),
        session: Uuid::now_v7(),
        confirmed: false,
        attempts: vec![InstrumentAttempt {
            payment: Uuid::now_v7(),
            at: None,
        }],
    };
    let (a, b, c) = (claim("a"), claim("b"), claim("c"));
    let held = store.claim_instrument(&instrument, &a).await.unwrap();
    assert_eq!(held.claim.merchant, "a");
    let stamped = held.claim.attempts[0].at.expect("the store's time");
    assert!(stamped <= held.now);
    let again = store.claim_instrument(&instrument, &b).await.unwrap();
    assert_eq!(again.claim, held.claim, "claimed once");
    assert!(
        store
            .replace_instrument(&instrument, &held, Some(&b))
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_instrument(&instrument, &held, Some(&c))
            .await
            .unwrap(),
        "replaced only as read"
    );
    let now_b = store.instrument(&instrument).await.unwrap().expect("held");
    assert_eq!(now_b.claim.merchant, "b");
    assert!(
        store
            .replace_instrument(&instrument, &now_b, None)
            .await
            .unwrap()
    );
    assert_eq!(store.instrument(&instrument).await.unwrap(), None);
}

async fn a_sessions_checkout_is_kept_once_per_partner_and_replaced_only_in_place(subject: Subject) {
    let store = &subject.store;
    let session_id = Uuid::now_v7();
    let checkout = |partner: &str, id: &str| HostedCheckout {
        session: session_id,
        partner: partner.into(),
        id: id.into(),
        public_token: format!("pt-{id}"),
        redirect_url: String::new(),
        expires_at: now() + Duration::from_secs(600),
        amount: amount(5000),
        items: vec![item("sku-1", 4000)],
        opened_at: now(),
    };
    assert_eq!(store.checkouts(session_id).await.unwrap(), vec![]);
    let first = checkout("walley", "a");
    assert_eq!(store.keep_checkout(&first, None).await.unwrap(), first);
    // A concurrent opening finds the first kept.
    let second = checkout("walley", "b");
    assert_eq!(store.keep_checkout(&second, None).await.unwrap(), first);
    // Replaced only in place of the one kept.
    let stale = checkout("walley", "c");
    assert_eq!(
        store.keep_checkout(&stale, Some("not-kept")).await.unwrap(),
        first
    );
    assert_eq!(
        store.keep_checkout(&second, Some("a")).await.unwrap(),
        second
    );
    let other = checkout("wepay", "1");
    store.keep_checkout(&other, None).await.unwrap();
    let mut kept = store.checkouts(session_id).await.unwrap();
    kept.sort_by(|a, b| a.partner.cmp(&b.partner));
    assert_eq!(kept, vec![second, other]);
    assert_eq!(store.checkouts(Uuid::now_v7()).await.unwrap(), vec![]);
}

/// The first 100 of a merchant's listing, oldest first.
fn every_payment_of(merchant: &str) -> ListQuery {
    ListQuery {
        merchant: merchant.into(),
        order_reference: None,
        created_after: None,
        created_before: None,
        cursor: None,
        newest_first: false,
        limit: 100,
    }
}

/// A payment of one card leg for `session`, in its shard (as SubmitSession
/// makes it).
fn payment_of(session: &Session) -> (Payment, Operation) {
    let (mut header, _) = payment_at(&session.merchant, &session.order_reference, now());
    let shard = Shard::of(session.id);
    let id = shard.stamp(Uuid::now_v7());
    Payment::new(
        NewPayment {
            id,
            merchant: header.merchant.clone(),
            session_id: session.id,
            order_reference: header.order_reference.clone(),
            amount: header.amount,
            currency: header.currency,
            capture_mode: header.capture_mode,
            legs: std::mem::take(&mut header.legs),
            webhook: None,
            authorization_id: shard.stamp(Uuid::now_v7()),
            origin: None,
            items: vec![item("sku-1", 12000)],
        },
        now(),
    )
}

/// A session with its payment, idempotency record, due items, hosted
/// checkout and listing entries, as a submitted session has them.
async fn submitted_payment(
    store: &Arc<dyn Store>,
    merchant: &str,
) -> (Session, Payment, Operation) {
    let s = session(merchant);
    let (header, authorization) = payment_of(&s);
    let mut step = payment_step(
        None,
        &header,
        vec![OperationWrite::Insert(authorization.clone())],
    );
    step.session = Some(Write::Insert(s.clone()));
    step.key = Some(claim(header.id, 1, Duration::from_secs(60)));
    let later = now() + Duration::from_secs(3600);
    step.due.push(DueChange::Schedule(
        DueItem::Operation {
            payment: header.id,
            operation: authorization.id,
        },
        later,
    ));
    step.due.push(DueChange::Schedule(
        DueItem::Retention { payment: header.id },
        later,
    ));
    assert!(matches!(
        store.commit(step).await.unwrap(),
        Committed::Applied { .. }
    ));
    let checkout = HostedCheckout {
        session: s.id,
        partner: "walley".into(),
        id: "a".into(),
        public_token: "pt-a".into(),
        redirect_url: String::new(),
        expires_at: now() + Duration::from_secs(600),
        amount: amount(12000),
        items: vec![],
        opened_at: now(),
    };
    store.keep_checkout(&checkout, None).await.unwrap();
    store.index_payment(&header).await.unwrap();
    store.index_session(&s).await.unwrap();
    (s, header, authorization)
}

/// Retention forgets a payment whole (header, operations, index entries,
/// due items, idempotency record, session, checkouts, listing entries),
/// only at the version read, and touches no other payment.
pub async fn a_forgotten_payment_leaves_nothing_and_one_that_moved_is_kept(subject: Subject) {
    let store = subject.store;
    let merchant = format!("m-{}", Uuid::now_v7());
    let (s, header, authorization) = submitted_payment(&store, &merchant).await;
    let (_, neighbour, neighbour_authorization) = submitted_payment(&store, &merchant).await;
    let read = store.payment(header.id).await.unwrap().unwrap();
    // A write after the read: forgetting what was read is refused.
    let moved = payment_step(Some(read.header.version), &header, vec![]);
    assert!(payment_version(store.commit(moved).await.unwrap()) > read.header.version);
    let session_read = store.session(s.id).await.unwrap();
    assert!(
        !store
            .forget_payment(&read, session_read.as_ref(), SystemTime::now())
            .await
            .unwrap()
    );
    assert!(store.header(header.id).await.unwrap().is_some());
    assert!(store.session(s.id).await.unwrap().is_some());
    let read = store.payment(header.id).await.unwrap().unwrap();
    // Not for a caller whose clock runs an hour ahead of the store's.
    let ahead = SystemTime::now() + Duration::from_secs(3600);
    let too_early = store.forget_payment(&read, session_read.as_ref(), ahead);
    assert!(!too_early.await.unwrap());
    assert!(store.header(header.id).await.unwrap().is_some());
    assert!(
        store
            .forget_payment(&read, session_read.as_ref(), SystemTime::now())
            .await
            .unwrap()
    );
    assert!(store.header(header.id).await.unwrap().is_none());
    assert!(store.session(s.id).await.unwrap().is_none());
    assert!(
        store
            .find_operation(authorization.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.checkouts(s.id).await.unwrap(), vec![]);
    for item in read.due_items() {
        assert_eq!(store.scheduled(&item).await.unwrap(), None, "{item:?}");
    }
    // The idempotency record is gone: the key can be claimed anew.
    assert!(matches!(
        claimed(&store, header.id, 2, Duration::from_secs(60)).await,
        Committed::Applied { .. }
    ));
    let query = every_payment_of(&merchant);
    let listed: Vec<Option<Uuid>> = store
        .list_payments(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|listed| listed.payment.map(|p| p.header.value.id))
        .collect();
    assert_eq!(listed, vec![Some(neighbour.id)]);
    let sessions = store.list_sessions(&query).await.unwrap();
    assert_eq!(sessions.len(), 1, "the neighbour's session only");
    // The neighbour (same merchant and order) is untouched.
    assert!(
        store
            .find_operation(neighbour_authorization.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .scheduled(&DueItem::Retention {
                payment: neighbour.id
            })
            .await
            .unwrap()
            .is_some()
    );
    // A session that moved since it was read is kept (to its own
    // retention), while its payment goes.
    let session = store.session(neighbour.session_id).await.unwrap().unwrap();
    let mut moved = Step::new(Shard::of(session.value.id), now());
    moved.session = Some(Write::Update {
        expected: session.version,
        value: session.value.clone(),
    });
    store.commit(moved).await.unwrap();
    let read = store.payment(neighbour.id).await.unwrap().unwrap();
    assert!(
        store
            .forget_payment(&read, Some(&session), SystemTime::now())
            .await
            .unwrap()
    );
    assert!(store.header(neighbour.id).await.unwrap().is_none());
    assert!(store.session(session.value.id).await.unwrap().is_some());
    assert_eq!(store.list_sessions(&query).await.unwrap().len(), 1);
}

macro_rules! contract {
    ($subject:ident: $($name:ident),* $(,)?) => {
        mod $subject {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::$subject().await).await;
                }
            )*
        }
    };
}

macro_rules! contract_suite {
    ($($subject:ident),*) => {
        $(
            contract!($subject:
                sessions_are_written_with_compare_and_set,
                a_step_writes_the_header_and_the_operations_it_names,
                a_step_that_fails_a_check_applies_nothing,
                only_one_concurrent_writer_wins_each_version,
                listing_is_ordered_bounded_and_paged,
                a_claimed_key_is_in_flight_until_answered,
                completing_a_missing_record_creates_nothing,
                an_answer_is_stored_at_once_and_replayed_in_full,
                idempotency_records_expire_after_their_ttl,
                exactly_one_concurrent_claim_is_acquired,
                due_items_are_leased_and_come_back_after_the_lease,
                webhook_deliveries_are_put_once_updated_and_deleted,
                lanes_are_claimed_and_listed_apart,
                a_partner_event_is_first_seen_once_within_its_memory,
                settlements_are_stored_once_and_listed_by_date_with_filters,
                reconciliation_issues_are_recorded_once_and_listed_with_filters,
                a_lease_is_held_by_one_owner_until_it_runs_out,
                a_settled_transaction_names_its_settlement_until_retention_ends,
                a_failed_settlement_is_kept_until_cleared,
                a_send_claim_is_held_until_released_or_run_out,
                an_abandoned_record_is_in_flight_with_its_lease_over,
                an_instrument_is_claimed_once_and_replaced_only_as_read,
                a_sessions_checkout_is_kept_once_per_partner_and_replaced_only_in_place,
                a_forgotten_payment_leaves_nothing_and_one_that_moved_is_kept,
            );
        )*
    };
}

async fn in_memory() -> Subject {
    memory()
}

async fn single_redis() -> Subject {
    redis().await
}

async fn clustered_redis() -> Subject {
    redis_cluster().await
}

contract_suite!(in_memory, single_redis, clustered_redis);

/// The cluster client never re-sends a step (no client retries: a re-run
/// after a connection error would answer "already there"): one whose
/// answer is cut by the response timeout is *unknown* — it may have run,
/// so nothing is undone and nobody is told nothing changed — and it ran
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_step_cut_by_its_response_timeout_is_unknown_and_runs_once() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let mut settings = redis_settings(cluster.urls(), true);
    settings.response_timeout = Duration::from_millis(200);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&settings).await.expect("connects"));
    let record = Uuid::now_v7();
    let lease = Duration::from_secs(60);
    // The connection to the record's node is open and its script loaded.
    let neighbour = Shard::of(record).stamp(Uuid::now_v7());
    claimed(&store, neighbour, 1, lease).await;
    // Every master is busy for 600 ms: the step waits in its socket, its
    // answer does not come in time, then it runs.
    let sleepers: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            let port = node.port.to_string();
            std::thread::spawn(move || {
                std::process::Command::new("redis-cli")
                    .args(["-p", &port, "DEBUG", "SLEEP", "0.6"])
                    .output()
            })
        })
        .collect();
    // Nothing shows a DEBUG SLEEP begun but the node's silence: 100 ms for
    // the sleepers to reach their nodes before the step is sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = store
        .commit(key_step(record, claim(record, 1, lease)))
        .await;
    assert!(
        matches!(cut, Err(StoreError::Unknown(_))),
        "a cut step is unknown: {cut:?}"
    );
    for sleeper in sleepers {
        let _ = sleeper.join();
    }
    // No read shows the queued step run without running a claim itself:
    // 200 ms for the woken nodes to run it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        claimed(&store, record, 1, lease).await,
        Committed::Claimed(KeyState::InFlight {
            lease_expired: false
        }),
        "it ran, once"
    );
}

/// One merchant's listing is spread over slots (no hot slot on the request
/// path): 10 000 checkouts land on every node of a 3-master cluster, and
/// the listing pages as one, with what an earlier release listed under the
/// merchant's single key still in it.
#[tokio::test]
async fn one_merchants_listing_spreads_over_the_cluster_and_pages_as_one() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&redis_settings(cluster.urls(), true))
            .await
            .expect("connects"),
    );
    let merchant = format!("big-{}", Uuid::now_v7());
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let payments: Vec<Payment> = (0..10_000u64)
        .map(|i| {
            let order = format!("order-{}", i % 7);
            payment_at(&merchant, &order, t0 + Duration::from_millis(i)).0
        })
        .collect();
    for chunk in payments.chunks(500) {
        futures_util::future::try_join_all(chunk.iter().map(|p| store.index_payment(p)))
            .await
            .expect("indexed");
    }
    // An earlier release listed a payment under one key in the merchant's
    // slot; it is still listed (the newest here).
    let legacy = payment_at(&merchant, "order-0", t0 + Duration::from_secs(60)).0;
    let legacy_member = listing_member(legacy.created_at, legacy.id);
    let zadd = std::process::Command::new("redis-cli")
        .args(["-c", "-p", &cluster.nodes[0].port.to_string(), "ZADD"])
        .arg(format!("po:{{m:{merchant}}}:payments"))
        .args(["0", &legacy_member])
        .output()
        .expect("redis-cli runs");
    assert!(zadd.status.success());

    // Each node holds part of the merchant's listing.
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|node| {
            let port = node.port.to_string();
            let keys = std::process::Command::new("redis-cli")
                .args(["-p", &port, "--scan", "--pattern"])
                .arg(format!("po:{{mb:*:{merchant}}}:payments"))
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&keys.stdout)
                .lines()
                .map(|key| {
                    let card = std::process::Command::new("redis-cli")
                        .args(["-p", &port, "ZCARD", key])
                        .output()
                        .expect("redis-cli runs");
                    String::from_utf8_lossy(&card.stdout)
                        .trim()
                        .parse::<usize>()
                        .expect("a count")
                })
                .sum()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 10_000, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "every node holds part of it: {per_node:?}"
    );

    // Paged oldest first, 100 at a time: every payment once, in order.
    let mut expected: Vec<String> = payments
        .iter()
        .map(|p| listing_member(p.created_at, p.id))
        .collect();
    expected.push(legacy_member);
    let mut query = every_payment_of(&merchant);
    let mut paged = Vec::new();
    loop {
        let page = store.list_payments(&query).await.expect("a page");
        let Some(last) = page.last() else { break };
        query.cursor = Some(last.cursor.clone());
        paged.extend(page.into_iter().map(|listed| listed.cursor));
    }
    assert_eq!(paged.len(), expected.len());
    assert_eq!(paged, expected);

    // By order reference, newest first: the order's payments only.
    let order: Vec<String> = store
        .list_payments(&ListQuery {
            order_reference: Some("order-0".into()),
            newest_first: true,
            cursor: None,
            limit: 5,
            ..query
        })
        .await
        .expect("a page")
        .into_iter()
        .map(|listed| listed.cursor)
        .collect();
    let mut of_order: Vec<String> = payments
        .iter()
        .filter(|p| p.order_reference == "order-0")
        .map(|p| listing_member(p.created_at, p.id))
        .collect();
    of_order.reverse();
    assert_eq!(order, of_order[..5].to_vec());
}

async fn connected(server: &RedisServer) -> Arc<dyn Store> {
    let settings = redis_settings(vec![server.url()], false);
    Arc::new(RedisStore::connect(&settings).await.expect("connects"))
}

/// A payment header written to a master and lost with it (the replica
/// promoted never got it) leaves its version unused: the next writer's
/// version differs in its tag, so whoever still holds the lost header (a
/// replica keeps the headers it wrote) cannot pass the compare-and-set with
/// it and overwrite what was written since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_lost_to_a_failover_is_not_written_again_with_other_content() {
    let mut master = RedisServer::start();
    let replica = RedisServer::replica_of(&master);
    let store = connected(&master).await;
    let (header, _) = inserted(&store).await;
    let id = header.value.id;
    let key = format!("po:{{{}}}:p:{id}", Shard::of(id).index());
    super::support::redis_server::wait_until("the replica to hold the payment", || {
        super::support::redis_server::redis_cli(replica.port, &["EXISTS", &key])
            .is_some_and(|answer| answer.trim() == "1")
    });
    // The replica hears nothing more: paused, and its link cut before the
    // write (nothing of it waits in the link's buffers).
    replica.pause();
    super::support::redis_server::redis_cli(master.port, &["CLIENT", "KILL", "TYPE", "replica"])
        .expect("link cut");
    let mut lost = header.value.clone();
    lost.order_reference = "lost".into();
    let lost_version = payment_version(
        store
            .commit(payment_step(Some(header.version), &lost, vec![]))
            .await
            .unwrap(),
    );
    master.stop();
    replica.resume();
    replica.promote();
    let promoted = connected(&replica).await;
    let read = promoted.header(id).await.unwrap().unwrap();
    assert_eq!(read.version, header.version, "the write was lost");
    let mut kept = read.value.clone();
    kept.order_reference = "kept".into();
    let kept_version = payment_version(
        promoted
            .commit(payment_step(Some(read.version), &kept, vec![]))
            .await
            .unwrap(),
    );
    assert_ne!(kept_version, lost_version);
    assert_eq!(
        promoted
            .commit(payment_step(Some(lost_version), &lost, vec![]))
            .await
            .unwrap(),
        Committed::Conflict
    );
    let now_read = promoted.header(id).await.unwrap().unwrap();
    assert_eq!(now_read.value.order_reference, "kept");
}

/// A session's version lost to a failover can be written again with other
/// content (sessions count by one): forgetting compares what was read, not
/// only the version, and keeps a session that is not the one read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rewritten_at_the_version_read_is_not_forgotten() {
    let server = RedisServer::start();
    let store = connected(&server).await;
    let merchant = format!("m-{}", Uuid::now_v7());
    let (s, header, _) = submitted_payment(&store, &merchant).await;
    let read = store.payment(header.id).await.unwrap().unwrap();
    let session_read = store.session(s.id).await.unwrap().expect("the session");
    // Same version, other content (as another writer would after the loss).
    let key = format!("po:{{{}}}:s:{}", Shard::of(s.id).index(), s.id);
    super::support::redis_server::redis_cli(server.port, &["HSET", &key, "d", "other"])
        .expect("rewritten");
    assert!(
        store
            .forget_payment(&read, Some(&session_read), SystemTime::now())
            .await
            .unwrap()
    );
    assert!(store.header(header.id).await.unwrap().is_none());
    let kept = super::support::redis_server::redis_cli(server.port, &["HGET", &key, "v"]);
    assert_eq!(
        kept.map(|v| v.trim().to_owned()),
        Some(session_read.version.to_string())
    );
}
