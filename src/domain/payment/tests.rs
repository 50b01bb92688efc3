use super::*;
use crate::domain::priority::DefaultPriorities;
use crate::domain::{money::amount, operation::answer};
use proptest::prelude::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// 100.00 on a card at ingenico + 20.00 on a gift card at illicado,
/// authorized.
fn authorized_payment() -> (Payment, Operation) {
    let leg = |partner: &str, method: &str, minor: i64| Leg {
        partner: partner.into(),
        method: method.into(),
        amount: amount(minor),
        token: PaymentToken::new("tok".into()),
        capabilities: Capabilities::default(),
        authorization_lifetime: Duration::from_secs(86_400),
    };
    let (mut payment, mut authorization) = Payment::new(
        NewPayment {
            id: id(1),
            merchant: "demo".into(),
            session_id: id(2),
            order_reference: "order-1".into(),
            amount: amount(12000),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            legs: vec![
                leg("ingenico", "creditcard", 10000),
                leg("illicado", "giftcard", 2000),
            ],
            webhook: None,
            authorization_id: id(3),
            origin: None,
            items: Vec::new(),
        },
        SystemTime::UNIX_EPOCH,
    );
    let txs: Vec<Uuid> = authorization.transactions.iter().map(|tx| tx.id).collect();
    for tx in txs {
        payment.record(&mut authorization, tx, success(), SystemTime::UNIX_EPOCH);
    }
    (payment, authorization)
}

/// An authorized payment with a capture of `minor` opened on it (at the
/// epoch).
fn capture_opened(minor: i64) -> (Payment, Operation) {
    let (mut payment, _) = authorized_payment();
    let capture = request(OperationKind::Capture, Some(minor));
    let op = payment
        .open_operation(id(10), &capture, SystemTime::UNIX_EPOCH)
        .unwrap();
    (payment, op)
}

fn success() -> TransactionOutcome {
    answer(TransactionStatus::Success)
}

fn request(kind: OperationKind, minor: Option<i64>) -> OperationRequest {
    OperationRequest {
        kind,
        amount: minor.map(amount),
        priority: DefaultPriorities::standard().for_kind(kind).to_vec(),
        fallback: true,
        merchant_reference: String::new(),
        reason: String::new(),
        triggered_by: TriggeredBy::Merchant,
        origin: None,
        items: Vec::new(),
        order_source: crate::domain::priority::OrderSource::Default,
        avoid: Vec::new(),
        max_operations: None,
    }
}

#[test]
fn an_operation_beyond_the_maximum_is_refused_and_changes_nothing() {
    let (mut payment, _) = authorized_payment();
    let mut capture = request(OperationKind::Capture, Some(100));
    capture.max_operations = Some(payment.operations + 1);
    let first = payment.open_operation(Uuid::now_v7(), &capture, SystemTime::now());
    assert!(first.is_ok());
    let before = payment.clone();
    let second = payment.open_operation(Uuid::now_v7(), &capture, SystemTime::now());
    assert_eq!(
        second.unwrap_err(),
        OperationError::TooManyOperations {
            max: before.operations
        }
    );
    assert_eq!(payment, before);
}

#[test]
fn an_authorized_payment_books_the_legs_and_their_references() {
    let (payment, _) = authorized_payment();
    assert_eq!(payment.totals().authorized, amount(12000));
    assert_eq!(payment.totals().authorize_pending, Amount::ZERO);
    assert_eq!(payment.authorization_reference(1), Some("ref"));
    assert_eq!(payment.state(), PaymentState::Authorized);
}

#[test]
fn capture_takes_the_gift_card_first_and_reserves_before_any_answer() {
    let (payment, op) = capture_opened(5000);
    let legs: Vec<(usize, i64)> = op
        .transactions
        .iter()
        .map(|t| (t.leg, t.amount.minor()))
        .collect();
    assert_eq!(legs, vec![(1, 2000), (0, 3000)]);
    assert_eq!((op.sequence, payment.operations), (1, 2));
    let totals = payment.totals();
    assert_eq!(totals.capture_pending, amount(5000));
    assert_eq!(totals.available_to_capture(), amount(7000));
    assert_eq!(payment.state(), PaymentState::Authorized);
}

#[test]
fn a_refused_operation_changes_nothing() {
    let (mut payment, _) = authorized_payment();
    let before = payment.clone();
    let refused = payment.open_operation(
        id(10),
        &request(OperationKind::Capture, Some(12001)),
        SystemTime::UNIX_EPOCH,
    );
    assert!(matches!(
        refused,
        Err(OperationError::ExceedsAvailable { .. })
    ));
    assert_eq!(payment, before);
}

/// The legs (leg index, minor amount) an operation of `kind` for `minor`
/// takes on the authorized payment while `avoid`'s circuits are open.
fn routed_around(kind: OperationKind, minor: i64, avoid: &[&str]) -> (Vec<(usize, i64)>, String) {
    let (mut payment, _) = authorized_payment();
    if kind == OperationKind::Refund {
        let capture = request(OperationKind::Capture, None);
        let mut op = payment
            .open_operation(id(9), &capture, SystemTime::UNIX_EPOCH)
            .unwrap();
        let txs: Vec<Uuid> = op.transactions.iter().map(|tx| tx.id).collect();
        for tx in txs {
            payment.record(&mut op, tx, success(), SystemTime::UNIX_EPOCH);
        }
    }
    let mut asked = request(kind, Some(minor));
    asked.avoid = avoid.iter().map(|p| (*p).to_owned()).collect();
    let op = payment
        .open_operation(id(10), &asked, SystemTime::UNIX_EPOCH)
        .unwrap();
    let legs = op
        .transactions
        .iter()
        .map(|tx| (tx.leg, tx.amount.minor()))
        .collect();
    (legs, op.history[0].note.clone())
}

#[test]
fn an_open_circuit_sends_captures_and_voids_to_the_other_legs_first_but_never_refunds() {
    // Void releases card holds first by default; with the card partner
    // sick, the gift card's 20.00 goes first.
    let (legs, why) = routed_around(OperationKind::Void, 1500, &["ingenico"]);
    assert_eq!(legs, [(1, 1500)]);
    assert!(
        why.contains("ingenico's circuit is open: its legs went last, and the others covered"),
        "{why}"
    );
    // Capture takes the gift card first anyway; beyond it, the card is used.
    let (legs, why) = routed_around(OperationKind::Capture, 2500, &["ingenico"]);
    assert_eq!(legs, [(1, 2000), (0, 500)]);
    assert!(
        why.contains("the others could not cover the amount"),
        "{why}"
    );
    // With the gift card partner sick a capture starts on the card.
    let (legs, _) = routed_around(OperationKind::Capture, 1500, &["illicado"]);
    assert_eq!(legs, [(0, 1500)]);
    // A refund keeps its order: the card first, sick or not.
    let (legs, why) = routed_around(OperationKind::Refund, 1500, &["ingenico"]);
    assert_eq!(legs, [(0, 1500)]);
    assert!(why.contains("a refund keeps its order"), "{why}");
    // Nothing open: the default order, and the history says which.
    let (legs, why) = routed_around(OperationKind::Void, 1500, &[]);
    assert_eq!(legs, [(0, 1500)]);
    assert_eq!(
        why,
        "legs ordered by the default priority [*:creditcard, *:*]"
    );
}

#[test]
fn declined_leg_is_reoffered_to_later_legs() {
    let (mut payment, mut op) = capture_opened(2000);
    let now = SystemTime::UNIX_EPOCH;
    let gift = op.transactions[0].id;
    op.claim_send(gift, now);
    payment.record(&mut op, gift, answer(TransactionStatus::Failure), now);
    let left = payment.reoffer(&mut op, 1, amount(2000), now);
    assert_eq!(left, Amount::ZERO);
    let card = op.transactions.iter().find(|t| t.leg == 0).unwrap().id;
    assert_eq!(op.transaction(card).unwrap().amount, amount(2000));
    assert_eq!(payment.totals().capture_pending, amount(2000));
    payment.record(&mut op, card, success(), now);
    assert_eq!(op.status, OperationStatus::Success);
    assert_eq!(payment.totals().captured, amount(2000));
}

#[test]
fn a_leg_that_may_have_been_sent_is_never_re_amounted_by_fallback() {
    let (mut payment, mut op) = capture_opened(6000);
    let now = SystemTime::UNIX_EPOCH;
    let gift = op.transactions.iter().find(|t| t.leg == 1).unwrap().id;
    let card = op.transactions.iter().find(|t| t.leg == 0).unwrap().id;
    // The card's request went out and its answer was lost.
    op.claim_send(card, now);
    payment.record(&mut op, card, answer(TransactionStatus::Uncertain), now);
    let before = op.transaction(card).unwrap().amount;
    op.claim_send(gift, now);
    payment.record(&mut op, gift, answer(TransactionStatus::Failure), now);
    let left = payment.reoffer(&mut op, 1, amount(2000), now);
    assert_eq!(left, amount(2000), "nothing placed on a maybe-sent leg");
    assert_eq!(op.transaction(card).unwrap().amount, before);
}

#[test]
fn failed_authorization_is_compensated_by_voiding_the_authorized_legs() {
    let (mut payment, mut auth) = Payment::new(
        NewPayment {
            id: id(1),
            merchant: "demo".into(),
            session_id: id(2),
            order_reference: "o".into(),
            amount: amount(300),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Automatic,
            legs: vec![
                Leg {
                    partner: "a".into(),
                    method: "creditcard".into(),
                    amount: amount(100),
                    token: PaymentToken::new("t".into()),
                    capabilities: Capabilities::default(),
                    authorization_lifetime: Duration::from_secs(86_400),
                },
                Leg {
                    partner: "b".into(),
                    method: "giftcard".into(),
                    amount: amount(200),
                    token: PaymentToken::new("t".into()),
                    capabilities: Capabilities::default(),
                    authorization_lifetime: Duration::from_secs(86_400),
                },
            ],
            webhook: None,
            authorization_id: id(3),
            origin: None,
            items: Vec::new(),
        },
        SystemTime::UNIX_EPOCH,
    );
    let now = SystemTime::UNIX_EPOCH;
    let (card, gift) = (auth.transactions[0].id, auth.transactions[1].id);
    payment.record(&mut auth, card, success(), now);
    payment.record(&mut auth, gift, answer(TransactionStatus::Failure), now);
    assert_eq!(payment.state(), PaymentState::Failed);
    let void = payment.open_compensation(id(4), now).unwrap();
    assert_eq!(void.triggered_by, TriggeredBy::System);
    assert_eq!(
        void.transactions
            .iter()
            .map(|t| (t.leg, t.amount.minor()))
            .collect::<Vec<_>>(),
        vec![(0, 100)]
    );
    assert!(
        payment.open_compensation(id(5), now).is_none(),
        "reserved already"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Open(OperationKind, Option<i64>),
    Answer(usize, TransactionStatus),
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        Just(OperationKind::Capture),
        Just(OperationKind::Refund),
        Just(OperationKind::Void)
    ];
    let status = prop_oneof![
        Just(TransactionStatus::Success),
        Just(TransactionStatus::Failure),
        Just(TransactionStatus::Pending),
        Just(TransactionStatus::Uncertain),
    ];
    prop_oneof![
        (kind, prop::option::of(1i64..9000)).prop_map(|(k, a)| Step::Open(k, a)),
        (0usize..64, status).prop_map(|(i, s)| Step::Answer(i, s)),
    ]
}

proptest! {
    /// No sequence of operations and outcomes (success, decline, pending,
    /// uncertain, re-offers) breaks the amount invariants, and the header's
    /// ledger always equals the sum of what its operations hold.
    #[test]
    fn the_ledger_is_the_sum_of_the_operations_and_keeps_the_invariants(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let (mut payment, authorization) = authorized_payment();
        let mut operations = vec![authorization];
        let now = SystemTime::UNIX_EPOCH;
        let mut next = 100;
        for step in steps {
            match step {
                Step::Open(kind, amount) => {
                    next += 1;
                    if let Ok(op) = payment.open_operation(id(next), &request(kind, amount), now) {
                        operations.push(op);
                    }
                }
                Step::Answer(index, status) => {
                    let open: Vec<(usize, Uuid, usize)> = operations.iter().enumerate()
                        .flat_map(|(i, op)| op.transactions.iter()
                            .filter(|tx| !tx.status.is_final())
                            .map(move |tx| (i, tx.id, tx.leg)))
                        .collect();
                    if let Some(&(i, tx, leg)) = open.get(index % open.len().max(1)) {
                        let op = &mut operations[i];
                        op.claim_send(tx, now);
                        payment.record(op, tx, answer(status), now);
                        if status == TransactionStatus::Failure {
                            let amount = op.transaction(tx).unwrap().amount;
                            payment.reoffer(op, leg, amount, now);
                        }
                    }
                }
            }
            let mut summed = vec![crate::domain::amounts::Amounts::ZERO; payment.legs.len()];
            for op in &operations {
                for (total, held) in summed.iter_mut().zip(op.contribution(payment.legs.len())) {
                    *total = total.plus(&held);
                }
            }
            prop_assert_eq!(&summed, &payment.ledger);
            for leg in &payment.ledger {
                let captured_or_voided = leg.captured.minor() + leg.capture_pending.minor()
                    + leg.voided.minor() + leg.void_pending.minor();
                prop_assert!(captured_or_voided <= leg.authorized.minor());
                prop_assert!(leg.refunded.minor() + leg.refund_pending.minor() <= leg.captured.minor());
            }
            for op in operations.iter().skip(1) {
                let reserved: i64 = op.transactions.iter()
                    .filter(|tx| tx.status != TransactionStatus::Failure)
                    .map(|tx| tx.amount.minor()).sum();
                prop_assert!(reserved <= op.amount.minor());
            }
            let all_final = operations.iter().all(|op| op.status.is_final());
            prop_assert_eq!(payment.totals().nothing_pending(), all_final);
        }
    }
}

#[test]
fn an_expiry_leaves_a_leg_whose_whole_void_would_release_a_capture_in_flight() {
    // The capture takes 5.00 of the gift card (first by default), whose
    // partner cannot void part of a leg.
    let (mut payment, _) = capture_opened(500);
    assert_eq!(payment.ledger[1].capture_pending, amount(500));
    payment.legs[1].capabilities.partial_void = false;
    let void = payment.expiry_void(&[0, 1]);
    assert_eq!(
        (void.amount, void.legs),
        (amount(10000), vec![0]),
        "only the card"
    );
    // A partner that voids exactly what it is asked: the remainder goes too.
    payment.legs[1].capabilities.partial_void = true;
    let void = payment.expiry_void(&[0, 1]);
    assert_eq!((void.amount, void.legs), (amount(11500), vec![0, 1]));
}

#[test]
fn a_send_answered_after_an_operator_settled_its_leg_otherwise_goes_to_review() {
    let (mut payment, mut capture) = capture_opened(500);
    let now = SystemTime::UNIX_EPOCH;
    let tx = capture.transactions[0].id;
    capture.transactions[0].attempts = 1;
    capture.requires_review = true;
    payment
        .apply(&mut capture, now, |op| {
            op.settle_by_hand(&[(tx, TransactionStatus::Failure)], "checked by phone", now)
        })
        .unwrap();
    assert!(!capture.requires_review, "reviewed");
    let books = payment.ledger.clone();
    // The send that was in flight meanwhile: the partner captured.
    let late = Answer {
        transaction: tx,
        sent: Some(1),
        outcome: success(),
        review: None,
    };
    assert!(!payment.take_answer(&mut capture, &late, true, now));
    assert_eq!(payment.ledger, books, "the books were not changed");
    assert_eq!(capture.transactions[0].status, TransactionStatus::Failure);
    assert!(capture.requires_review);
    assert!(
        capture
            .history
            .last()
            .unwrap()
            .note
            .contains("came back Success"),
        "{:?}",
        capture.history
    );
}

#[test]
fn an_operator_cannot_settle_a_leg_never_sent_as_succeeded() {
    let (_, mut capture) = capture_opened(500);
    let tx = capture.transactions[0].id;
    capture.requires_review = true;
    let settled = capture.settle_by_hand(
        &[(tx, TransactionStatus::Success)],
        "sure",
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        settled,
        Err(crate::domain::operation::SettleError::NeverSent)
    );
}
