//! Asynchronous resolution with controlled time: every sandbox scenario
//! reaches its true final state; system operations; review; notifications.

use std::{sync::Arc, time::Duration};

use payment_orchestrator::{
    api::ApiKeys,
    api::proto::{
        self, OperationStatus::*, PaymentState, SessionStatus, TriggeredBy,
        partner_event_service_client::PartnerEventServiceClient,
    },
    domain::operation::OperationKind,
};
use tonic::Code;

use super::support::harness::*;

/// Beyond the first backoff (1 s ± 20 %).
const A_MOMENT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn pending_capture_becomes_success_and_releases_its_reservation() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending", "tok").await;
    let Done { operation, payment } = card_capture(&server, &payment, 3000).await;
    assert_eq!(operation.status(), Pending);
    assert_eq!(amounts(&payment).capture_pending, 3000);

    // Not due yet: nothing happens.
    assert_eq!(server.resolve_after(Duration::ZERO).await.claimed, 0);
    let report = server.resolve_after(A_MOMENT).await;
    assert_eq!(report.finalized, 1, "{report:?}");
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Success
    );
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(capture_totals(&payment), (3000, 0, 9000));
    assert_eq!(
        payment.overview.unwrap().captured(),
        proto::Coverage::Partially
    );
    // Final: it left the queue.
    assert_eq!(
        server
            .resolve_after(Duration::from_secs(3600))
            .await
            .claimed,
        0
    );
}

#[tokio::test]
async fn pending_decline_becomes_failure_and_frees_the_money() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending_decline", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    server.resolve_after(A_MOMENT).await;
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Failure
    );
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(capture_totals(&payment), (0, 0, 12000));
}

#[tokio::test]
async fn timed_out_capture_is_found_by_lookup_without_a_second_call() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=timeout", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    assert_eq!(operation.status(), Uncertain);
    server.resolve_after(A_MOMENT).await;
    let operation = operation_now(&server, &operation.id).await;
    assert_eq!(operation.status(), Success);
    assert_eq!(server.sent("ingenico", OperationKind::Capture), 1);
    assert_eq!(
        amounts(&payment_now(&server, &payment.id).await).total_captured,
        3000
    );
}

#[tokio::test]
async fn lost_capture_is_sent_again_once_with_the_same_key() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=lost", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    assert_eq!(operation.status(), Uncertain);
    assert_eq!(server.sent("ingenico", OperationKind::Capture), 0);
    server.resolve_after(A_MOMENT).await;
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Success
    );
    let captures: Vec<_> = server
        .sandbox("ingenico")
        .received()
        .into_iter()
        .filter(|r| r.kind == OperationKind::Capture)
        .collect();
    assert_eq!(captures.len(), 1);
    assert_eq!(captures[0].idempotency_key, format!("{}:0", operation.id));
    let ledger = ledger(&server, "ingenico");
    assert_eq!(ledger[0].captured, 3000);
}

#[tokio::test]
async fn mixed_legs_resolve_to_a_conflict() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending", "capture=pending_decline").await;
    let operation = captured(&server, capture(&payment, Some(5000)))
        .await
        .operation;
    assert_eq!(operation.status(), Pending);
    server.resolve_after(A_MOMENT).await;
    let operation = operation_now(&server, &operation.id).await;
    assert_eq!(operation.status(), Conflict);
    assert_eq!(
        legs_of(&operation),
        vec![
            ("illicado".into(), 2000, Failure),
            ("ingenico".into(), 3000, Success)
        ]
    );
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(capture_totals(&payment), (3000, 0, 9000));
}

#[tokio::test]
async fn pending_authorization_in_automatic_mode_captures_once_it_succeeds() {
    let server = TestServer::start().await;
    let split = vec![card(10000, "authorize=pending"), gift(2000, "tok")];
    let (session, payment) = submitted(&server, proto::CaptureMode::Automatic, split).await;
    assert_eq!(payment.state(), PaymentState::Authorizing);
    server.resolve_after(A_MOMENT).await;
    let resolved = payment_now(&server, &payment.id).await;
    assert_eq!(resolved.authorization.as_ref().unwrap().status(), Success);
    assert_eq!(resolved.state(), PaymentState::Captured);
    assert_eq!(resolved.captures.len(), 1);
    assert_eq!(resolved.captures[0].triggered_by(), TriggeredBy::System);
    // More steps change nothing: exactly once.
    server.resolve_after(Duration::from_secs(3600)).await;
    assert_eq!(payment_now(&server, &payment.id).await.captures.len(), 1);
    assert_eq!(server.sent("ingenico", OperationKind::Capture), 1);
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Submitted);
}

#[tokio::test]
async fn authorization_declined_later_voids_the_other_legs() {
    let server = TestServer::start().await;
    let split = vec![card(10000, "tok"), gift(2000, "authorize=pending_decline")];
    let (session, payment) = submitted(&server, proto::CaptureMode::Manual, split).await;
    assert_eq!(payment.state(), PaymentState::Authorizing);
    server.resolve_after(A_MOMENT).await;
    let resolved = payment_now(&server, &payment.id).await;
    assert_eq!(resolved.state(), PaymentState::Failed);
    assert_eq!(resolved.voids.len(), 1);
    assert_eq!(resolved.voids[0].triggered_by(), TriggeredBy::System);
    assert_eq!(resolved.voids[0].status(), Success);
    let ledger = ledger(&server, "ingenico");
    assert_eq!(ledger[0].voided, 10000);
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Open);
}

#[tokio::test]
async fn uncaptured_authorization_is_voided_when_its_lifetime_ends() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    captured(&server, capture(&payment, Some(5000))).await;
    assert_eq!(
        server
            .resolve_after(Duration::from_secs(7 * 24 * 3600 - 60))
            .await
            .finalized,
        0
    );
    server.resolve_after(Duration::from_secs(61)).await;
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(payment.voids.len(), 1);
    let void = &payment.voids[0];
    assert_eq!(
        (void.triggered_by(), void.amount, void.status()),
        (TriggeredBy::System, 7000, Success)
    );
    assert_eq!(amounts(&payment).available_to_capture, 0);
    // Exactly once.
    server
        .resolve_after(Duration::from_secs(7 * 24 * 3600))
        .await;
    assert_eq!(payment_now(&server, &payment.id).await.voids.len(), 1);
}

#[tokio::test]
async fn unresolvable_operation_is_flagged_for_review_and_settled_by_an_operator() {
    let receiver = webhook_receiver().await;
    let server = TestServer::start().await;
    let session = open_session_with_webhook(&server, 12000, Some(receiver.uri())).await;
    let split = vec![
        card(10000, "capture=pending,pending_lookups=1000000"),
        gift(2000, "tok"),
    ];
    let payment = submit(&server, &session.id, split).await.unwrap();
    let operation = card_capture(&server, &payment, 3000).await.operation;
    for _ in 0..5 {
        server.resolve_after(Duration::from_secs(1800)).await;
    }
    let still = operation_now(&server, &operation.id).await;
    assert_eq!((still.status(), still.requires_review), (Pending, false));
    server.resolve_after(Duration::from_secs(24 * 3600)).await;
    let flagged = operation_now(&server, &operation.id).await;
    assert_eq!(
        (flagged.status(), flagged.requires_review),
        (Pending, true),
        "never silently failed"
    );
    assert!(
        flagged
            .history
            .iter()
            .any(|entry| entry.note.contains("needs an operator")),
        "{:?}",
        flagged.history
    );
    // Announced by webhook (delivered at the next step).
    server.resolve_after(Duration::ZERO).await;
    let announced = receiver.received_requests().await.unwrap().iter().any(|r| {
        let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        event["type"] == "operation.requires_review"
            && event["data"]["operation"]["id"] == operation.id.as_str()
    });
    assert!(announced, "no requires_review webhook");

    // A merchant key cannot settle it; an admin key can.
    let settle = proto::ResolveOperationRequest {
        operation_id: operation.id.clone(),
        reason: "confirmed captured in the partner's settlement report".into(),
        outcomes: vec![proto::TransactionResolution {
            partner_transaction_id: flagged.partner_transactions[0].id.clone(),
            status: Success.into(),
        }],
    };
    let denied = server
        .admin_as(DEMO_KEY)
        .resolve_operation(settle.clone())
        .await
        .refusal();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut admin = server.admin();
    let settled = admin.resolve_operation(settle).await.answer();
    assert_eq!(settled.status(), Success);
    assert!(
        settled
            .history
            .iter()
            .any(|h| h.note.contains("settlement report"))
    );
    let a = capture_totals(&payment_now(&server, &payment.id).await);
    assert_eq!((a.0, a.1), (3000, 0));
    // Settled once, the review is over: a second attempt is refused.
    assert!(!settled.requires_review);
    let again = proto::ResolveOperationRequest {
        operation_id: operation.id.clone(),
        reason: "again".into(),
        outcomes: vec![],
    };
    let refused = admin.resolve_operation(again).await.refusal();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        reason(&refused).as_deref(),
        Some("OPERATION_NOT_UNDER_REVIEW")
    );
}

#[tokio::test]
async fn sync_operation_resolves_now() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    let synced = server
        .admin()
        .sync_operation(proto::SyncOperationRequest {
            operation_id: operation.id,
        })
        .await
        .answer();
    assert_eq!(synced.status(), Success);
}

#[tokio::test]
async fn partner_notifications_apply_once_and_never_change_a_final_status() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending,pending_lookups=1000000", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    let event = |event_id: &str, outcome| ingenico_capture_event(&operation, event_id, outcome);
    let mut merchant =
        PartnerEventServiceClient::with_interceptor(server.channel(), Bearer::new(DEMO_KEY));
    let denied = merchant
        .notify_partner_event(event("evt-1", proto::PartnerEventOutcome::Succeeded))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);

    let mut partner = PartnerEventServiceClient::with_interceptor(
        server.channel(),
        Bearer::new("sk_test_partner"),
    );
    let result = |r: proto::NotifyPartnerEventResponse| r.result();
    let first = partner
        .notify_partner_event(event("evt-1", proto::PartnerEventOutcome::Succeeded))
        .await
        .unwrap();
    assert_eq!(result(first.into_inner()), proto::NotifyResult::Applied);
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Success
    );
    let repeat = partner
        .notify_partner_event(event("evt-1", proto::PartnerEventOutcome::Succeeded))
        .await
        .unwrap();
    assert_eq!(result(repeat.into_inner()), proto::NotifyResult::Duplicate);
    let contradiction = partner
        .notify_partner_event(event("evt-2", proto::PartnerEventOutcome::Declined))
        .await
        .unwrap();
    assert_eq!(
        result(contradiction.into_inner()),
        proto::NotifyResult::IgnoredFinal
    );
    // The status stays; an operator is asked to look, with both facts.
    let flagged = operation_now(&server, &operation.id).await;
    assert_eq!((flagged.status(), flagged.requires_review), (Success, true));
    assert!(
        flagged
            .history
            .iter()
            .any(|h| h.note.contains("reported failure") && h.note.contains("hold success")),
        "{:?}",
        flagged.history
    );
    assert_eq!(
        amounts(&payment_now(&server, &payment.id).await).total_captured,
        3000
    );
    // The merchant's review queue lists it, final as it is (an operator's
    // too, naming the merchant).
    let queue = proto::ListOperationsRequest {
        requires_review: Some(true),
        ..Default::default()
    };
    let own = server
        .payments()
        .list_operations(queue.clone())
        .await
        .answer();
    let merchants = proto::ListOperationsRequest {
        merchant: "demo".into(),
        ..queue
    };
    let operators = server.admin().list_operations(merchants).await.answer();
    for listing in [own, operators] {
        let listed: Vec<&str> = listing.operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(listed, [operation.id.as_str()]);
    }
    // Nothing is open to settle: an operator's reason ends the review.
    let reviewed = proto::ResolveOperationRequest {
        operation_id: operation.id.clone(),
        reason: "the partner confirmed the capture by phone".into(),
        outcomes: vec![],
    };
    let reviewed = server.admin().resolve_operation(reviewed).await.answer();
    assert_eq!(
        (reviewed.status(), reviewed.requires_review),
        (Success, false)
    );
    let queue = proto::ListOperationsRequest {
        requires_review: Some(true),
        ..Default::default()
    };
    let queue = server.payments().list_operations(queue).await.answer();
    assert!(queue.operations.is_empty(), "{queue:?}");
}

#[tokio::test]
async fn a_notifier_key_speaks_only_for_its_partners_and_never_for_an_unsent_leg() {
    let bound = format!("illicado:{}", ApiKeys::hash("sk_illicado_events"));
    let server = TestServer::start_with(&["--partner-notifier-api-keys", &bound]).await;
    // The card leg is declined, so the gift card leg is never sent.
    let split = vec![card(2_000, "authorize=decline"), gift(1_000, "tok")];
    let (_, declined) = submitted(&server, proto::CaptureMode::Manual, split).await;
    let authorization = declined.authorization.unwrap();
    let event = |partner: &str, leg: usize| {
        let id = format!("evt-{partner}-{leg}");
        succeeded_event(partner, &id, &authorization.id, leg, "forged")
    };
    let mut illicado = PartnerEventServiceClient::with_interceptor(
        server.channel(),
        Bearer::new("sk_illicado_events"),
    );
    let other_partner = illicado
        .notify_partner_event(event("ingenico", 0))
        .await
        .refusal();
    assert_eq!(other_partner.code(), Code::PermissionDenied);
    let unsent = illicado
        .notify_partner_event(event("illicado", 1))
        .await
        .answer();
    assert_eq!(unsent.result(), proto::NotifyResult::UnknownTransaction);
    let after = operation_now(&server, &authorization.id).await;
    assert_eq!((after.status(), after.requires_review), (Failure, false));
}

#[tokio::test]
async fn wait_operation_returns_as_soon_as_the_operation_is_final() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    let mut payments = server.payments();
    let id = operation.id.clone();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let operation = payments.waited(&id, Duration::from_secs(20)).await;
        (operation, started.elapsed())
    });
    // Time passing is the point: the waiter has waited 300 ms, with nothing
    // to wake it, when the operation is resolved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resolved_at = std::time::Instant::now();
    server.resolve_after(A_MOMENT).await;
    let (operation, waited) = waiting.await.unwrap();
    assert_eq!(operation.status(), Success);
    assert!(
        resolved_at.elapsed() < Duration::from_secs(1),
        "returned {:?} after resolution",
        resolved_at.elapsed()
    );
    assert!(waited >= Duration::from_millis(300));

    // A short timeout on a non-final operation returns it as it is.
    let stuck = card_and_gift(&server, "capture=pending,pending_lookups=1000000", "tok").await;
    let open = card_capture(&server, &stuck, 100).await.operation;
    let started = std::time::Instant::now();
    let answer = server
        .payments()
        .waited(&open.id, Duration::from_millis(300))
        .await;
    assert_eq!(answer.status(), Pending);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_resolver_moves_on_a_session_left_processing() {
    use payment_orchestrator::{
        clock::ManualClock,
        store::{DueChange, DueItem, PaymentStore, Shard, Step, Store, Write, memory::MemoryStore},
    };
    let clock = ManualClock::new(std::time::SystemTime::now());
    let store = Arc::new(MemoryStore::new(
        Duration::from_secs(30 * 24 * 3600),
        Arc::new(clock.clone()),
    ));
    let server = TestServer::start_on(&[], clock, Some(store.clone() as Arc<dyn Store>)).await;
    let (session, payment) = submitted(
        &server,
        proto::CaptureMode::Manual,
        vec![card(12000, "tok")],
    )
    .await;
    // Data no step writes: the session back at PROCESSING for this payment,
    // and the final authorization due again.
    let session_id = uuid::Uuid::parse_str(&session.id).unwrap();
    let stored = store.session(session_id).await.unwrap().unwrap();
    let mut stuck = stored.value.clone();
    stuck.status = payment_orchestrator::domain::session::SessionStatus::Processing;
    let mut step = Step::new(Shard::of(session_id), server.clock.now_time());
    step.session = Some(Write::Update {
        expected: stored.version,
        value: stuck,
    });
    step.due.push(DueChange::Schedule(
        DueItem::Operation {
            payment: uuid::Uuid::parse_str(&payment.id).unwrap(),
            operation: uuid::Uuid::parse_str(&payment.authorization.unwrap().id).unwrap(),
        },
        server.clock.now_time(),
    ));
    store.commit(step).await.unwrap();
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Processing);
    server.resolve_after(Duration::ZERO).await;
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Submitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_never_answers_gets_max_sends_and_then_only_lookups() {
    // Each call takes 3 s at the partner, the timeout is 1 s: no send is ever
    // answered (nor applied), every lookup says "never received".
    let server = TestServer::start_with(&["--partner-timeout", "1s"]).await;
    let split = vec![card(1_000, "latency=3s")];
    let (_, payment) = submitted(&server, proto::CaptureMode::Manual, split).await;
    assert_eq!(payment.state(), proto::PaymentState::Authorizing);
    for _ in 0..6 {
        server.resolve_after(Duration::from_secs(3600)).await;
    }
    let ingenico = server.sandbox("ingenico");
    assert_eq!(
        ingenico.arrivals(OperationKind::Authorization),
        3,
        "the first send and two re-sends (max 3 sends), then lookups only"
    );
    let now = payment_now(&server, &payment.id).await;
    assert_eq!(now.state(), proto::PaymentState::Authorizing);
    assert_eq!(amounts(&now).authorize_pending, 1_000, "still reserved");
}

/// A resolver step starts nothing after its lease: with a 1 s lease and
/// lookups of 700 ms (the sandbox's `lookup_latency`), the third of three due captures is left for the next
/// step (its lease runs out and it comes back), never worked by a step
/// that may already have lost it.
#[tokio::test]
async fn a_resolver_step_starts_no_item_after_its_lease() {
    let server =
        TestServer::start_with(&["--resolver-lease", "1s", "--resolver-concurrency", "1"]).await;
    for _ in 0..3 {
        let payment = card_and_gift(&server, "capture=pending,lookup_latency=700ms", "tok").await;
        card_capture(&server, &payment, 3000).await;
    }
    let report = server.resolve_after(A_MOMENT).await;
    assert_eq!(report.claimed, 3, "{report:?}");
    assert_eq!(report.finalized, 2, "{report:?}");
    // Leased until its lease ends; then the next step takes it.
    assert_eq!(server.resolve_after(Duration::ZERO).await.claimed, 0);
    let report = server.resolve_after(Duration::from_secs(2)).await;
    assert_eq!(report.finalized, 1, "{report:?}");
}

/// A lookup outage never frees a reservation: a capture whose answer was
/// lost, at a partner whose lookups all fail, keeps its money reserved
/// through every resolver step until the partner can say.
#[tokio::test]
async fn a_lookup_outage_never_frees_a_reservation() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=timeout,lookup=error", "tok").await;
    let operation = card_capture(&server, &payment, 3000).await.operation;
    assert_eq!(operation.status(), Uncertain);
    for _ in 0..8 {
        server.resolve_after(Duration::from_secs(600)).await;
        let a = amounts(&payment_now(&server, &payment.id).await);
        assert_eq!(
            (a.capture_pending, a.available_to_capture),
            (3000, 9000),
            "still reserved"
        );
    }
    assert_eq!(
        server.sandbox("ingenico").arrivals(OperationKind::Capture),
        1,
        "no re-send without knowing it was never received"
    );
}
