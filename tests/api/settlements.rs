//! Settlements and reconciliation over real gRPC: the sandbox partners settle
//! what they executed, the importer stores each settlement once, and every
//! line is matched with our books.

use std::{collections::BTreeMap, time::Duration};

use payment_orchestrator::{
    api::proto::{
        self, admin_service_client::AdminServiceClient,
        settlement_service_client::SettlementServiceClient,
    },
    domain::{
        money::{Amount, Currency},
        settlement::{Day, EntryKind, SettlementEntry},
    },
    partners::sandbox::Discrepancy,
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::harness::*;

const ADMIN_KEY: &str = "sk_test_admin";

type Settlements = SettlementServiceClient<InterceptedService<Channel, Bearer>>;

fn settlements_as(server: &TestServer, key: &str) -> Settlements {
    SettlementServiceClient::with_interceptor(server.channel(), Bearer::new(key))
}

async fn import(server: &TestServer) -> Vec<proto::PartnerImport> {
    AdminServiceClient::with_interceptor(server.channel(), Bearer::new(ADMIN_KEY))
        .import_settlements(proto::ImportSettlementsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .partners
}

fn line(sku: &str, quantity: i64, unit_price: i64, rate: &str) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: sku.into(),
        name: sku.into(),
        quantity,
        unit_price,
        tax_rate: rate.into(),
        ..Default::default()
    }
}

/// A card-only payment of `amount`, captured in full; its capture's partner
/// idempotency key (what the settlement line carries).
async fn captured(
    server: &TestServer,
    amount: i64,
    token: &str,
    items: Vec<proto::ItemLine>,
    webhook: Option<String>,
) -> (proto::Payment, proto::Operation) {
    let mut request = create_request(amount, proto::CaptureMode::Manual);
    request.webhook = webhook.map(|url| proto::Webhook {
        url,
        headers: BTreeMap::new(),
    });
    let session = server
        .sessions()
        .create_session(request)
        .await
        .unwrap()
        .into_inner();
    let payment = submit(server, &session.id, vec![card(amount, token)])
        .await
        .unwrap();
    let mut request = capture(&payment, Some(amount));
    request.items = items;
    let capture = server
        .payments()
        .capture(request)
        .await
        .unwrap()
        .into_inner()
        .operation
        .unwrap();
    (payment, capture)
}

fn key_of(operation: &proto::Operation) -> String {
    format!("{}:0", operation.id)
}

/// Every CSV row of an export, as columns.
async fn export(client: &mut Settlements, id: &str) -> Vec<Vec<String>> {
    let mut stream = client
        .export_settlement_transactions(proto::ExportSettlementTransactionsRequest {
            settlement_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut csv = String::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.push_str(&chunk.csv);
    }
    csv.lines()
        .map(|row| row.split(',').map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn a_settlement_is_imported_once_with_exact_totals_and_every_discrepancy_flagged() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let server = TestServer::start().await;

    // Captured with VAT lines (2 × 50.00 at 25 %), then partly refunded.
    let (paid, _) = captured(
        &server,
        12_500,
        "tok",
        vec![line("shoe", 2, 5_000, "25")],
        None,
    )
    .await;
    let mut refund = refund(&paid, Some(2_500));
    refund.items = vec![line("shoe-part", 1, 2_000, "25")];
    server.payments().refund(refund).await.unwrap();
    // The partner will settle this one for 40.00 instead of 50.00 …
    let (altered, altered_capture) = captured(
        &server,
        5_000,
        "tok",
        vec![],
        Some(format!("{}/hooks", receiver.uri())),
    )
    .await;
    // … leave this one out …
    let (_, dropped_capture) = captured(&server, 3_000, "tok", vec![], None).await;
    // … and settle this one, whose answer was lost and whose status cannot
    // be looked up.
    let (_, uncertain) =
        captured(&server, 1_000, "capture=timeout,lookup=error", vec![], None).await;
    assert_eq!(uncertain.status(), proto::OperationStatus::Uncertain);
    let report = server.resolve_after(Duration::from_secs(5)).await;
    assert_eq!(
        operation_now(&server, &uncertain.id).await.status(),
        proto::OperationStatus::Uncertain,
        "{report:?}"
    );

    let ingenico = server.sandbox("ingenico");
    ingenico.prepare(Discrepancy::Alter(
        key_of(&altered_capture),
        Amount::from_minor(4_000).unwrap(),
    ));
    ingenico.prepare(Discrepancy::Drop(key_of(&dropped_capture)));
    ingenico.prepare(Discrepancy::Unknown(SettlementEntry {
        kind: EntryKind::Capture,
        amount: Amount::from_minor(777).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        order_reference: "somebody-else".into(),
        partner_reference: "ingenico-999999".into(),
        action_reference: "not-ours".into(),
        transaction_date: Day::from_days(20_000),
        vat: vec![],
    }));

    let imports = import(&server).await;
    let ingenico_import = imports.iter().find(|i| i.partner == "ingenico").unwrap();
    assert_eq!(
        (
            ingenico_import.settlements,
            ingenico_import.transactions,
            ingenico_import.issues
        ),
        (1, 5, 2),
        "{imports:?}"
    );
    // Imported once: the next import finds nothing new.
    assert!(import(&server).await.iter().all(|i| i.settlements == 0));

    let mut admin = settlements_as(&server, ADMIN_KEY);
    let listed = admin
        .list_settlements(proto::ListSettlementsRequest {
            partner: "ingenico".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .settlements;
    assert_eq!(listed.len(), 1);
    let settlement = admin
        .get_settlement(proto::GetSettlementRequest {
            settlement_id: listed[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // 125.00 + 40.00 (as settled) + 7.77 (unknown) + 10.00 captured, 25.00
    // refunded; VAT 25.00 on the capture less 5.00 on the refund.
    assert_eq!(
        (
            settlement.captured,
            settlement.refunded,
            settlement.fees,
            settlement.net
        ),
        (18_277, 2_500, 0, 15_777)
    );
    assert_eq!(
        settlement
            .vat_per_rate
            .iter()
            .map(|v| (v.rate.as_str(), v.amount))
            .collect::<Vec<_>>(),
        [("25", 2_000)]
    );
    assert_eq!(
        (settlement.transaction_count, settlement.issue_count),
        (5, 2)
    );

    // Lines in two pages of three; the CSV has the same rows.
    let first = admin
        .list_settlement_transactions(proto::ListSettlementTransactionsRequest {
            settlement_id: settlement.id.clone(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.transactions.len(), first.total_size), (3, 5));
    let second = admin
        .list_settlement_transactions(proto::ListSettlementTransactionsRequest {
            settlement_id: settlement.id.clone(),
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.transactions.len(), 2);
    assert!(second.next_page_token.is_empty());
    let lines: Vec<proto::SettlementTransaction> = first
        .transactions
        .into_iter()
        .chain(second.transactions)
        .collect();
    let rows = export(&mut admin, &settlement.id).await;
    assert_eq!(rows[0][0], "index");
    assert_eq!(rows.len(), lines.len() + 1);
    for (row, line) in rows[1..].iter().zip(&lines) {
        assert_eq!(row[0], line.index.to_string());
        assert_eq!(row[2], line.amount.to_string());
        assert_eq!(row[6], line.action_reference);
        assert_eq!(
            format!("RECONCILIATION_STATUS_{}", row[9]),
            line.reconciliation().as_str_name()
        );
        assert_eq!(row[11], line.operation_id);
    }
    let status_of = |reference: &str| {
        lines
            .iter()
            .find(|l| l.action_reference == reference)
            .map(|l| l.reconciliation())
    };
    assert_eq!(
        status_of(&key_of(&altered_capture)),
        Some(proto::ReconciliationStatus::AmountMismatch)
    );
    assert_eq!(
        status_of("not-ours"),
        Some(proto::ReconciliationStatus::UnknownToUs)
    );
    assert_eq!(status_of(&key_of(&dropped_capture)), None);
    assert_eq!(
        status_of(&key_of(&uncertain)),
        Some(proto::ReconciliationStatus::Matched)
    );

    // The issues: an operator sees both, the merchant its own, another
    // merchant nothing.
    let issues = |key: &'static str| {
        let mut client = settlements_as(&server, key);
        async move {
            client
                .list_reconciliation_issues(proto::ListReconciliationIssuesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .issues
        }
    };
    let all = issues(ADMIN_KEY).await;
    let mut kinds: Vec<_> = all.iter().map(|i| i.kind()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            proto::ReconciliationStatus::AmountMismatch,
            proto::ReconciliationStatus::UnknownToUs
        ]
    );
    let own = issues(DEMO_KEY).await;
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].payment_id.as_str(), own[0].expected, own[0].settled),
        (altered.id.as_str(), 5_000, 4_000)
    );
    assert!(issues(OTHER_KEY).await.is_empty());
    // A partner account serving every merchant settles for operators only.
    let merchant_view = settlements_as(&server, DEMO_KEY)
        .get_settlement(proto::GetSettlementRequest {
            settlement_id: settlement.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(merchant_view.code(), Code::NotFound);

    // The uncertain capture was settled from the report.
    let settled = operation_now(&server, &uncertain.id).await;
    assert_eq!(settled.status(), proto::OperationStatus::Success);
    assert!(
        settled
            .history
            .iter()
            .any(|h| h.note.contains(&settlement.reference)),
        "{:?}",
        settled.history
    );
    let payment = payment_now(&server, &settled.payment_id).await;
    assert_eq!(amounts(&payment).total_captured, 1_000);

    // The mismatch is announced to the payment's webhook.
    server.resolve_after(Duration::ZERO).await;
    let events: Vec<serde_json::Value> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .filter(|e: &serde_json::Value| e["type"] == "reconciliation.issue")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["issue"]["kind"], "AMOUNT_MISMATCH");
    assert_eq!(events[0]["issue"]["settled"], 4_000);
}
