//! Settlements a finance team can sign off: every line kind with its sign,
//! duplicates and header totals caught, one bad line or settlement never
//! blocking the others, and issues that can be resolved — against the
//! Walley simulation run as a real process, and the in-process sandbox.

use std::time::Duration;

use payment_orchestrator::{
    api::proto,
    domain::{
        money::Currency,
        settlement::{Day, EntryKind, SettlementEntry},
    },
    partners::sandbox::Discrepancy,
};
use serde_json::json;
use tonic::Code;

use super::{
    round_trips::commands_during,
    settlements::{
        Settlements, import, import_of, issues_of, key_of, lines_page, listed, settlements_as,
    },
    support::{
        harness::*,
        redis_server::{RedisServer, redis_cli},
        simulator::Partners,
    },
};

/// The lines of a settlement, all of them.
async fn lines_of(client: &mut Settlements, id: &str) -> Vec<proto::SettlementTransaction> {
    lines_page(client, id, 1000, String::new())
        .await
        .transactions
}

/// A Walley payment of `amount`, captured in full and processed (Walley
/// accepts a capture, then completes it): the order, the payment and its
/// capture.
async fn walley_captured(
    partners: &Partners,
    server: &TestServer,
    amount: i64,
) -> (String, proto::Payment, proto::Operation) {
    let (order, payment) = partners.walley_payment(server, amount, json!({})).await;
    let capture = captured(server, capture(&payment, None)).await.operation;
    server.resolve_after(Duration::from_secs(2)).await;
    (order, payment, capture)
}

/// Issue kinds, sorted.
fn kinds(issues: &[proto::ReconciliationIssue]) -> Vec<proto::ReconciliationStatus> {
    let mut kinds: Vec<_> = issues.iter().map(|i| i.kind()).collect();
    kinds.sort();
    kinds
}

/// The settlements of `partner`, oldest first, as an operator sees them.
async fn settlements_of(server: &TestServer, partner: &str) -> Vec<proto::Settlement> {
    let request = proto::ListSettlementsRequest {
        partner: partner.into(),
        ..Default::default()
    };
    listed(&mut settlements_as(server, ADMIN_KEY), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messy_walley_settlement_and_the_clean_one_after_it_are_imported_with_exactly_the_expected_issues()
 {
    let (partners, server) = Partners::serving().await;
    // Three captures of 100.00, 50.00 and (later) 30.00, each succeeded.
    let (order_a, a) = partners.walley_payment(&server, 10_000, json!({})).await;
    let (order_b, b) = partners.walley_payment(&server, 5_000, json!({})).await;
    let a_capture = captured(&server, capture(&a, None)).await.operation;
    let b_capture = captured(&server, capture(&b, None)).await.operation;
    server.resolve_after(Duration::from_secs(2)).await;
    // The partner reports A's capture twice, B's without its action
    // reference (extended reporting off), a negative purchase for A, a fee,
    // an adjustment of A, a chargeback on B, a line that does not read, and
    // a header whose captured figure is not what its lines add up to.
    let closed = partners
        .walley
        .settle(json!({
            "duplicate": [key_of(&a_capture)],
            "withoutReference": [key_of(&b_capture)],
            "lines": [
                { "type": "Purchase", "amount": "-100.00", "orderId": order_a,
                  "actionReference": key_of(&a_capture) },
                { "type": "InvoiceFee", "amount": "-5.00" },
                { "type": "PurchaseAmountAdjustment", "amount": "-10.00", "orderId": order_a },
                { "type": "Chargeback", "amount": "-50.00", "orderId": order_b }
            ],
            "raw": [{ "type": "Purchase", "amount": "a hundred", "currency": "EUR" }],
            "header": { "captured": "999.99" }
        }))
        .await;
    assert_eq!(closed["settlements"], json!(["1"]), "{closed}");
    // The next settlement is clean: C's capture alone.
    let (_, _, c_capture) = walley_captured(&partners, &server, 3_000).await;
    partners.walley.settle(json!({})).await;

    let walley = import_of(&server, "walley").await;
    assert_eq!(
        (walley.settlements, walley.transactions, walley.issues),
        (2, 9, 4),
        "{walley:?}"
    );
    assert!(
        walley.error.is_empty() && walley.failed.is_empty(),
        "{walley:?}"
    );
    // Imported once: nothing new the second time.
    let again = import(&server).await;
    assert!(
        again.iter().all(|i| i.settlements == 0 && i.issues == 0),
        "{again:?}"
    );

    let settlements = settlements_of(&server, "walley").await;
    assert_eq!(settlements.len(), 2);
    // Listed by date, then id: found by the partner's reference.
    let by_reference = |settlements: &[proto::Settlement], reference: &str| {
        settlements
            .iter()
            .find(|s| s.reference == reference)
            .cloned()
            .unwrap()
    };
    let (messy, clean) = (
        &by_reference(&settlements, "1"),
        &by_reference(&settlements, "2"),
    );
    // Captured: A once (its duplicate is not counted) + B − the negative
    // purchase, as the partner paid out; the fee in fees and the net.
    assert_eq!(
        (
            messy.captured,
            messy.refunded,
            messy.fees,
            messy.adjustments,
            messy.chargebacks
        ),
        (10_000 + 5_000 - 10_000, 0, 500, -1_000, 5_000)
    );
    assert_eq!(messy.net, 5_000 - 500 - 1_000 - 5_000);
    assert_eq!((messy.transaction_count, messy.issue_count), (8, 3));
    assert_eq!(
        (clean.captured, clean.transaction_count, clean.issue_count),
        (3_000, 1, 0)
    );

    let mut admin = settlements_as(&server, ADMIN_KEY);
    let lines = lines_of(&mut admin, &messy.id).await;
    let status = |pick: &dyn Fn(&proto::SettlementTransaction) -> bool| {
        let found: Vec<_> = lines.iter().filter(|l| pick(l)).collect();
        assert_eq!(found.len(), 1, "{lines:?}");
        (found[0].reconciliation(), found[0].operation_id.clone())
    };
    use proto::ReconciliationStatus as S;
    // A's capture: the first line matches, the second is the duplicate.
    let a_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.action_reference == key_of(&a_capture) && l.signed_amount > 0)
        .map(|l| l.reconciliation())
        .collect();
    assert_eq!(a_lines, [S::Matched, S::Duplicate]);
    assert_eq!(
        status(&|l| l.signed_amount == -10_000),
        (S::KindMismatch, a_capture.id.clone())
    );
    // B's line without an action reference matched the right operation on
    // its order id, kind and amount.
    assert_eq!(
        status(&|l| l.action_reference.is_empty()
            && l.kind() == proto::SettlementEntryKind::Capture
            && l.signed_amount == 5_000),
        (S::Matched, b_capture.id.clone())
    );
    assert_eq!(
        status(&|l| l.kind() == proto::SettlementEntryKind::Fee),
        (S::Matched, String::new())
    );
    assert_eq!(
        status(&|l| l.kind() == proto::SettlementEntryKind::Chargeback).0,
        S::Matched
    );
    // The chargeback opened a dispute on B (one per chargeback line: the
    // settlement and line are its reference): its money is not refundable.
    let chargeback = lines
        .iter()
        .find(|l| l.kind() == proto::SettlementEntryKind::Chargeback)
        .unwrap();
    assert_eq!(chargeback.payment_id, b.id);
    let b_now = payment_now(&server, &b.id).await;
    let disputes: Vec<_> = b_now
        .disputes
        .iter()
        .map(|d| {
            (
                d.partner.clone(),
                d.partner_reference.clone(),
                d.amount,
                d.status(),
            )
        })
        .collect();
    let expected = (
        "walley".to_owned(),
        format!("1:{}", chargeback.index),
        5_000,
        proto::DisputeStatus::Open,
    );
    assert_eq!(disputes, [expected]);

    let held = amounts(&b_now);
    assert_eq!((held.total_disputed, held.available_to_refund), (5_000, 0));
    let unreadable = lines.iter().find(|l| !l.raw.is_empty()).unwrap();
    assert_eq!(unreadable.reconciliation(), S::UnreadableLine);
    assert!(unreadable.raw.contains("a hundred"), "kept as sent");

    let issues = issues_of(&mut admin).await;
    assert_eq!(
        kinds(&issues),
        [
            S::KindMismatch,
            S::Duplicate,
            S::TotalsMismatch,
            S::UnreadableLine
        ]
    );
    let totals = issues
        .iter()
        .find(|i| i.kind() == S::TotalsMismatch)
        .unwrap();
    assert_eq!(totals.settlement_id, messy.id);
    assert!(
        totals.description.contains("99999") && totals.description.contains("15000"),
        "{}",
        totals.description
    );
    // A's capture again, in a settlement of its own: a duplicate of the
    // line that settled it before, not counted.
    partners
        .walley
        .settle(
            json!({ "lines": [{ "type": "Purchase", "amount": "100.00", "orderId": order_a,
                                "actionReference": key_of(&a_capture) }] }),
        )
        .await;
    let walley = import_of(&server, "walley").await;
    assert_eq!((walley.settlements, walley.issues), (1, 1), "{walley:?}");
    let repeated = by_reference(&settlements_of(&server, "walley").await, "3");
    assert_eq!((repeated.captured, repeated.issue_count), (0, 1));
    let repeat = issues_of(&mut admin)
        .await
        .into_iter()
        .find(|i| i.settlement_id == repeated.id)
        .unwrap();
    assert_eq!(
        (repeat.kind(), repeat.operation_id.as_str()),
        (S::Duplicate, a_capture.id.as_str())
    );

    // Each real capture counted once, and none is missing later.
    server.resolve_after(Duration::from_secs(3 * 86_400)).await;
    let later = issues_of(&mut admin).await;
    assert_eq!(later.len(), issues.len() + 1, "nothing missing: {later:?}");
    let _ = c_capture;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_that_cannot_be_read_is_kept_and_retried_while_the_next_one_is_imported() {
    let (partners, server) = Partners::serving().await;
    walley_captured(&partners, &server, 1_000).await;
    // The first settlement's lines are refused once.
    partners.walley.settle(json!({ "refuseLines": 1 })).await;
    walley_captured(&partners, &server, 2_000).await;
    partners.walley.settle(json!({})).await;

    let walley = import_of(&server, "walley").await;
    assert_eq!(walley.settlements, 1, "the later one went on: {walley:?}");
    assert_eq!(walley.failed.len(), 1, "{walley:?}");
    let failed = &walley.failed[0];
    assert_eq!((failed.reference.as_str(), failed.attempts), ("1", 1));
    assert!(failed.error.contains("422"), "{failed:?}");
    let listed = settlements_of(&server, "walley").await;
    assert_eq!(
        listed.iter().map(|s| s.captured).collect::<Vec<_>>(),
        [2_000]
    );

    // The next import reads it, and nothing is kept any more.
    let walley = import_of(&server, "walley").await;
    let read = (walley.settlements, walley.failed.len());
    assert_eq!(read, (1, 0), "{walley:?}");
    let listed = settlements_of(&server, "walley").await;
    let mut captured: Vec<i64> = listed.iter().map(|s| s.captured).collect();
    captured.sort_unstable();
    assert_eq!(captured, [1_000, 2_000]);
    assert!(
        issues_of(&mut settlements_as(&server, ADMIN_KEY))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_header_that_does_not_read_is_reported_and_the_others_are_imported() {
    let (partners, server) = Partners::serving().await;
    walley_captured(&partners, &server, 1_000).await;
    partners
        .walley
        .settle(json!({ "brokenHeader": true }))
        .await;
    walley_captured(&partners, &server, 2_000).await;
    partners.walley.settle(json!({})).await;

    let walley = import_of(&server, "walley").await;
    assert_eq!(walley.settlements, 1, "{walley:?}");
    assert!(
        walley.error.contains("settlement 1's header does not read"),
        "{walley:?}"
    );
    let listed = settlements_of(&server, "walley").await;
    assert_eq!(
        listed.iter().map(|s| s.captured).collect::<Vec<_>>(),
        [2_000]
    );
}

#[tokio::test]
async fn a_missing_capture_is_resolved_when_a_later_settlement_holds_it_and_a_person_resolves_another_with_a_note()
 {
    let server = TestServer::start().await;
    let payment = authorized(&server, vec![card(3_000, "tok")]).await;
    let dropped = captured(&server, capture(&payment, None)).await.operation;
    let altered_payment = authorized(&server, vec![card(5_000, "tok")]).await;
    let altered = captured(&server, capture(&altered_payment, None))
        .await
        .operation;
    let ingenico = server.sandbox("ingenico");
    ingenico.prepare(Discrepancy::Drop(key_of(&dropped)));
    ingenico.prepare(Discrepancy::Alter(
        key_of(&altered),
        payment_orchestrator::domain::money::Amount::from_minor(4_000).unwrap(),
    ));
    import(&server).await;
    // Three days on, the dropped capture is missing.
    server.resolve_after(Duration::from_secs(3 * 86_400)).await;
    let mut demo = settlements_as(&server, DEMO_KEY);
    let open = |client: &mut Settlements| {
        let mut client = client.clone();
        async move {
            client
                .list_reconciliation_issues(proto::ListReconciliationIssuesRequest {
                    open_only: true,
                    ..Default::default()
                })
                .await
                .answer()
                .issues
        }
    };
    use proto::ReconciliationStatus as S;
    assert_eq!(
        kinds(&open(&mut demo).await),
        [S::AmountMismatch, S::MissingFromSettlement]
    );

    // A later settlement holds it after all.
    ingenico.prepare(Discrepancy::Unknown(SettlementEntry {
        kind: EntryKind::Capture,
        amount: 3_000,
        currency: Currency::parse("EUR").unwrap(),
        order_reference: String::new(),
        partner_reference: "late".into(),
        action_reference: key_of(&dropped),
        transaction_date: Day::from_days(20_000),
        vat: vec![],
    }));
    let late = import_of(&server, "ingenico").await;
    assert_eq!((late.settlements, late.issues), (1, 0), "{late:?}");
    assert_eq!(kinds(&open(&mut demo).await), [S::AmountMismatch]);
    let all = issues_of(&mut demo).await;
    let missing = all
        .iter()
        .find(|i| i.kind() == S::MissingFromSettlement)
        .unwrap();
    assert!(missing.resolved_at.is_some());
    assert!(
        missing.resolution.contains("ingenico-S000002"),
        "names the settlement: {}",
        missing.resolution
    );

    // A person resolves the mismatch with a note; another merchant cannot.
    let mismatch = all.iter().find(|i| i.kind() == S::AmountMismatch).unwrap();
    let resolve = |key: &str, note: &str| {
        let mut client = settlements_as(&server, key);
        let request = proto::ResolveReconciliationIssueRequest {
            issue_id: mismatch.id.clone(),
            note: note.into(),
        };
        async move { client.resolve_reconciliation_issue(request).await }
    };
    let refused = resolve(OTHER_KEY, "not mine").await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let invalid = resolve(DEMO_KEY, "  ").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let resolved = resolve(DEMO_KEY, "the partner kept 10.00 as agreed")
        .await
        .answer();
    assert_eq!(resolved.resolution, "the partner kept 10.00 as agreed");
    assert!(resolved.resolved_at.is_some());
    let kept = resolve(ADMIN_KEY, "a second note").await.answer();
    assert_eq!(kept, resolved, "resolved once: the note is kept");
    assert!(open(&mut demo).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchants_issue_listing_reads_only_its_own_records() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(&["--redis-url", &redis.url()]).await;
    let ingenico = server.sandbox("ingenico");
    // Another merchant's twenty mismatches, ten lines nobody knows, and one
    // mismatch of the demo merchant.
    for _ in 0..20 {
        let payment = authorized_as_other(&server, 1_000, "tok-other").await;
        let done = server
            .payments_as(Some(OTHER_KEY))
            .captured(capture(&payment, None))
            .await;
        ingenico.prepare(Discrepancy::Alter(
            key_of(&done.operation),
            payment_orchestrator::domain::money::Amount::from_minor(900).unwrap(),
        ));
    }
    for n in 0..10 {
        ingenico.prepare(Discrepancy::Unknown(SettlementEntry {
            kind: EntryKind::Capture,
            amount: 100 + n,
            currency: Currency::parse("EUR").unwrap(),
            order_reference: String::new(),
            partner_reference: format!("stranger-{n}"),
            action_reference: format!("not-ours-{n}"),
            transaction_date: Day::from_days(20_000),
            vat: vec![],
        }));
    }
    let payment = authorized(&server, vec![card(2_000, "tok")]).await;
    let done = captured(&server, capture(&payment, None)).await.operation;
    ingenico.prepare(Discrepancy::Alter(
        key_of(&done),
        payment_orchestrator::domain::money::Amount::from_minor(1_900).unwrap(),
    ));
    import(&server).await;

    let mut demo = settlements_as(&server, DEMO_KEY);
    // Warm: the first merchant listing checks that every issue is indexed
    // per merchant.
    assert_eq!(issues_of(&mut demo).await.len(), 1);
    let commands = commands_during(redis.port, async || {
        let own = issues_of(&mut demo).await;
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].payment_id, payment.id);
    })
    .await;
    assert_eq!(commands, ["ZRANGE", "GET"], "{commands:?}");
    assert_eq!(
        issues_of(&mut settlements_as(&server, OTHER_KEY))
            .await
            .len(),
        20
    );
    assert_eq!(
        issues_of(&mut settlements_as(&server, ADMIN_KEY))
            .await
            .len(),
        31
    );

    // Issues an earlier release recorded were in the global index only: a
    // replica of this one puts them in their merchants' indexes first.
    for key in ["po:{m:demo}:issues", "po:{rec}:merchant-indexes"] {
        redis_cli(redis.port, &["DEL", key]).unwrap();
    }
    let upgraded = TestServer::start_with(&["--redis-url", &redis.url()]).await;
    let own = issues_of(&mut settlements_as(&upgraded, DEMO_KEY)).await;
    assert_eq!(own.len(), 1);
}

/// A line naming a capture's leg we never sent (handed back before its
/// call, its step not replicated) is not ours: the capture is not settled from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_naming_a_leg_never_sent_is_unknown_to_us_and_settles_nothing() {
    let redis = RedisServer::start();
    let partners = Partners::start().await;
    let url = redis.url();
    let server = TestServer::start_configured(&partners.config, &["--redis-url", &url]).await;
    let (order, payment) = partners.walley_payment(&server, 2_000, json!({})).await;
    // A replica that waits for a Redis replica there is none of: its
    // capture opens on the master, then its leg is handed back unsent.
    let waiting = &[
        "--redis-url",
        &url,
        "--redis-wait-replicas",
        "1",
        "--redis-wait-timeout",
        "300ms",
    ];
    let waiting = TestServer::start_configured(&partners.config, waiting).await;
    let aborted = waiting
        .payments()
        .capture(capture(&payment, None))
        .await
        .refusal();
    assert_eq!(aborted.code(), Code::Aborted, "{aborted:?}");
    let opened = server.payments().payment(&payment.id).await.captures[0].clone();
    assert_eq!(partners.walley.requests("/captures").await, 0, "never sent");

    let line = json!({ "type": "Purchase", "amount": "20.00", "orderId": order,
                       "actionReference": key_of(&opened), "currency": "EUR" });
    partners.walley.settle(json!({ "lines": [line] })).await;
    assert_eq!(import_of(&server, "walley").await.settlements, 1);
    let settled = settlements_of(&server, "walley").await;
    let lines = lines_of(&mut settlements_as(&server, ADMIN_KEY), &settled[0].id).await;
    assert_eq!(
        lines[0].reconciliation(),
        proto::ReconciliationStatus::UnknownToUs,
        "{lines:?}"
    );
    let now = operation_now(&server, &opened.id).await;
    assert_ne!(now.status(), proto::OperationStatus::Success);
}

/// A partner that ignores `page` and always says more follow: the import
/// stops at the repeated page instead of reading for ever, and the
/// settlement is kept to be read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_whose_pages_never_end_stops_the_import_with_a_reason() {
    let partners = Partners::start().await;
    let server = TestServer::start_configured(&partners.config, &[]).await;
    walley_captured(&partners, &server, 2_000).await;
    partners.walley.settle(json!({ "endless": true })).await;

    let walley = tokio::time::timeout(Duration::from_secs(30), import_of(&server, "walley"))
        .await
        .expect("the import ends");
    assert_eq!(walley.settlements, 0, "{walley:?}");
    assert_eq!(walley.failed.len(), 1, "{walley:?}");
    assert!(walley.failed[0].error.contains("repeats"), "{walley:?}");
    assert!(settlements_of(&server, "walley").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_a_settlement_never_stored_gives_way_and_issues_found_again_are_listed_once() {
    let redis = RedisServer::start();
    let partners = Partners::start().await;
    let server =
        TestServer::start_configured(&partners.config, &["--redis-url", &redis.url()]).await;
    let (order, x) = partners.walley_payment(&server, 1_000, json!({})).await;
    let x_capture = captured(&server, capture(&x, None)).await.operation;
    walley_captured(&partners, &server, 2_000).await;
    // Settlement 1 holds X and Y on its first page, with 5 000 lines nobody
    // sent us; its second page is refused once: it claims both, then fails.
    partners
        .walley
        .settle(json!({ "synthetic": 5_000, "refusePage": 2 }))
        .await;
    // Settlement 2 holds X too.
    partners
        .walley
        .settle(
            json!({ "lines": [{ "type": "Purchase", "amount": "10.00", "orderId": order,
                                "actionReference": key_of(&x_capture), "currency": "EUR" }] }),
        )
        .await;

    let walley = import_of(&server, "walley").await;
    let read = (walley.settlements, walley.failed.len());
    assert_eq!(read, (1, 1), "{walley:?}");
    // The claim of settlement 1, never stored, gave way: 2 settled X.
    let settled = settlements_of(&server, "walley").await;
    let seen: Vec<_> = settled
        .iter()
        .map(|s| (s.reference.as_str(), s.captured, s.issue_count))
        .collect();
    assert_eq!(seen, [("2", 1_000, 0)]);

    // Three days on, Y is held by settlement 1, which is kept to be read
    // again: not missing, looked at again later. Then settlement 1 is read:
    // its X line is now the duplicate, and its 5 000 unknown lines' issues,
    // raised again at another time, are listed once each.
    server
        .resolve_after(Duration::from_secs(3 * 86_400 + 60))
        .await;
    let walley = import_of(&server, "walley").await;
    let read = (walley.settlements, walley.failed.len());
    assert_eq!(read, (1, 0), "{walley:?}");
    // Y's check, looked at again, finds it settled: still nothing missing.
    server.resolve_after(Duration::from_secs(2 * 3_600)).await;
    let mut admin = settlements_as(&server, ADMIN_KEY);
    let mut counted = std::collections::BTreeMap::<i32, usize>::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_reconciliation_issues(proto::ListReconciliationIssuesRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .answer();
        for issue in &page.issues {
            *counted.entry(issue.kind).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    use proto::ReconciliationStatus as S;
    let expected: std::collections::BTreeMap<i32, usize> =
        [(S::UnknownToUs as i32, 5_000), (S::Duplicate as i32, 1)].into();
    assert_eq!(counted, expected);
}
