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

use super::support::harness::*;

pub(super) type Settlements = SettlementServiceClient<InterceptedService<Channel, Bearer>>;

pub(super) fn settlements_as(server: &TestServer, key: &str) -> Settlements {
    SettlementServiceClient::with_interceptor(server.channel(), Bearer::new(key))
}

pub(super) async fn import(server: &TestServer) -> Vec<proto::PartnerImport> {
    imported(&mut server.admin()).await
}

/// What an import on demand read of `partner`.
pub(super) async fn import_of(server: &TestServer, partner: &str) -> proto::PartnerImport {
    let imports = import(server).await;
    let found = imports.into_iter().find(|i| i.partner == partner);
    found.expect("the partner was imported")
}

/// What an import on demand through `admin` read, partner by partner.
pub(super) async fn imported(admin: &mut Admin) -> Vec<proto::PartnerImport> {
    let request = proto::ImportSettlementsRequest::default();
    answered(admin.import_settlements(request).await, "import").partners
}

/// The settlements `client` lists for `request`.
pub(super) async fn listed(
    client: &mut Settlements,
    request: proto::ListSettlementsRequest,
) -> Vec<proto::Settlement> {
    answered(client.list_settlements(request).await, "list").settlements
}

/// The reconciliation issues `client` is shown.
pub(super) async fn issues_of(client: &mut Settlements) -> Vec<proto::ReconciliationIssue> {
    let request = proto::ListReconciliationIssuesRequest::default();
    answered(client.list_reconciliation_issues(request).await, "list").issues
}

/// One page of a settlement's lines.
pub(super) async fn lines_page(
    client: &mut Settlements,
    id: &str,
    page_size: i32,
    page_token: String,
) -> proto::ListSettlementTransactionsResponse {
    client
        .list_settlement_transactions(proto::ListSettlementTransactionsRequest {
            settlement_id: id.into(),
            page_size,
            page_token,
        })
        .await
        .answer()
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
async fn card_paid(
    server: &TestServer,
    amount: i64,
    token: &str,
    items: Vec<proto::ItemLine>,
    webhook: Option<String>,
) -> (proto::Payment, proto::Operation) {
    let session = open_session_with_webhook(server, amount, webhook).await;
    let payment = submit(server, &session.id, vec![card(amount, token)])
        .await
        .unwrap();
    let request = proto::CaptureRequest {
        items,
        ..capture(&payment, Some(amount))
    };
    (payment, captured(server, request).await.operation)
}

/// A settlement's VAT, `(rate, amount)` per rate.
fn vat(settlement: &proto::Settlement) -> Vec<(&str, i64)> {
    settlement
        .vat_per_rate
        .iter()
        .map(|v| (v.rate.as_str(), v.amount))
        .collect()
}

pub(super) fn key_of(operation: &proto::Operation) -> String {
    format!("{}:0", operation.id)
}

/// Every CSV row of an export, as columns.
pub(super) async fn export(client: &mut Settlements, id: &str) -> Vec<Vec<String>> {
    let mut stream = client
        .export_settlement_transactions(proto::ExportSettlementTransactionsRequest {
            settlement_id: id.into(),
        })
        .await
        .answer();
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
    let receiver = webhook_receiver().await;
    let server = TestServer::start().await;

    // Captured with VAT lines (2 × 50.00 at 25 %), then partly refunded.
    let (paid, _) = card_paid(
        &server,
        12_500,
        "tok",
        vec![line("shoe", 2, 5_000, "25")],
        None,
    )
    .await;
    let mut refund = refund(&paid, Some(2_500));
    refund.items = vec![line("shoe-part", 1, 2_000, "25")];
    refunded(&server, refund).await;
    // The partner will settle this one for 40.00 instead of 50.00 …
    let (altered, altered_capture) = card_paid(
        &server,
        5_000,
        "tok",
        vec![],
        Some(format!("{}/hooks", receiver.uri())),
    )
    .await;
    // … leave this one out …
    let (_, dropped_capture) = card_paid(&server, 3_000, "tok", vec![], None).await;
    // … and settle this one, whose answer was lost and whose status cannot
    // be looked up.
    let (_, uncertain) =
        card_paid(&server, 1_000, "capture=timeout,lookup=error", vec![], None).await;
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
        amount: 777,
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
    let ingenico = proto::ListSettlementsRequest {
        partner: "ingenico".into(),
        ..Default::default()
    };
    let listed = listed(&mut admin, ingenico).await;
    assert_eq!(listed.len(), 1);
    let settlement = admin
        .get_settlement(proto::GetSettlementRequest {
            settlement_id: listed[0].id.clone(),
        })
        .await
        .answer();
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
    assert_eq!(vat(&settlement), [("25", 2_000)]);
    assert_eq!(
        (settlement.transaction_count, settlement.issue_count),
        (5, 2)
    );

    // Lines in two pages of three; the CSV has the same rows.
    let first = lines_page(&mut admin, &settlement.id, 3, String::new()).await;
    assert_eq!((first.transactions.len(), first.total_size), (3, 5));
    let token = first.next_page_token.clone();
    let second = lines_page(&mut admin, &settlement.id, 3, token).await;
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
        async move { issues_of(&mut client).await }
    };
    // Three days on, the capture no settlement showed is missing from them;
    // nothing else is (the others were in the settlement).
    server.resolve_after(Duration::from_secs(3 * 86_400)).await;
    let all = issues(ADMIN_KEY).await;
    let mut kinds: Vec<_> = all
        .iter()
        .map(|i| (i.kind(), i.operation_id.clone()))
        .collect();
    kinds.sort();
    let mut expected = vec![
        (
            proto::ReconciliationStatus::AmountMismatch,
            altered_capture.id.clone(),
        ),
        (proto::ReconciliationStatus::UnknownToUs, String::new()),
        (
            proto::ReconciliationStatus::MissingFromSettlement,
            dropped_capture.id.clone(),
        ),
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    let own = issues(DEMO_KEY).await;
    assert_eq!(own.len(), 2, "the merchant's two, not the unknown line");
    let mismatch = own
        .iter()
        .find(|i| i.kind() == proto::ReconciliationStatus::AmountMismatch)
        .unwrap();
    assert_eq!(
        (
            mismatch.payment_id.as_str(),
            mismatch.expected,
            mismatch.settled
        ),
        (altered.id.as_str(), 5_000, 4_000)
    );
    assert!(issues(OTHER_KEY).await.is_empty());
    // A partner account serving every merchant settles for operators only.
    let merchant_view = settlements_as(&server, DEMO_KEY)
        .get_settlement(proto::GetSettlementRequest {
            settlement_id: settlement.id.clone(),
        })
        .await
        .refusal();
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
    let events = webhook_events(&receiver, "reconciliation.issue").await;
    assert_eq!(
        events.len(),
        1,
        "only the altered payment has a webhook: {events:?}"
    );
    let issue = &events[0]["data"]["issue"];
    assert_eq!(issue["kind"], "RECONCILIATION_STATUS_AMOUNT_MISMATCH");
    assert_eq!(issue["settled"], "4000", "int64 in the proto3 JSON mapping");
}

/// Walley through its report API, the simulation run as a real process.
mod walley {
    use serde_json::json;

    use super::*;
    use crate::api::support::simulator::Partners;

    async fn all_lines(
        client: &mut Settlements,
        id: &str,
        page_size: i32,
    ) -> (usize, Vec<proto::SettlementTransaction>) {
        let mut lines = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = lines_page(client, id, page_size, token).await;
            pages += 1;
            assert_eq!(page.total_size, 12_000);
            lines.extend(page.transactions);
            if page.next_page_token.is_empty() {
                return (pages, lines);
            }
            token = page.next_page_token;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twelve_thousand_lines_are_read_and_listed_in_pages_of_five_thousand_and_exported_alike()
     {
        let (partners, server) = Partners::serving().await;
        let (_, payment) = partners.walley_payment(&server, 12_500, json!({})).await;
        let mut request = capture(&payment, Some(12_500));
        request.items = vec![line("shoe", 2, 5_000, "25")];
        captured(&server, request).await;
        // Accepted (202): succeeded once the order shows it processed.
        server.resolve_after(Duration::from_secs(2)).await;
        let mut request = refund(&payment, Some(2_500));
        request.items = vec![line("shoe-part", 1, 2_000, "25")];
        refunded(&server, request).await;
        server.resolve_after(Duration::from_secs(2)).await;
        // Walley settles them with 11 998 purchases of 1.00 nobody sent us.
        partners.walley.settle(json!({ "synthetic": 11_998 })).await;
        // Twice "a request with this key is in progress", then the answer.
        partners.walley.fail_next(409, 2).await;

        let imports = import(&server).await;
        let walley = imports.iter().find(|i| i.partner == "walley").unwrap();
        assert_eq!(
            (
                walley.settlements,
                walley.transactions,
                walley.issues,
                walley.error.as_str()
            ),
            (1, 12_000, 11_998, ""),
            "{imports:?}"
        );
        assert_eq!(
            partners.walley.requests("/reports/settlements").await,
            3,
            "409, 409, 200"
        );
        assert_eq!(
            partners.walley.requests("/transactions").await,
            3,
            "12 000 lines in pages of 5 000"
        );

        let mut admin = settlements_as(&server, ADMIN_KEY);
        let walley = proto::ListSettlementsRequest {
            partner: "walley".into(),
            ..Default::default()
        };
        let settlement = listed(&mut admin, walley).await.remove(0);
        // 125.00 + 11 998 × 1.00 captured, 25.00 refunded; VAT 25.00 − 5.00 +
        // 11 998 × 0.20 at 25 %.
        assert_eq!(
            (settlement.captured, settlement.refunded, settlement.net),
            (1_212_300, 2_500, 1_209_800)
        );
        assert_eq!(vat(&settlement), [("25", 241_960)]);
        assert_eq!(
            (settlement.transaction_count, settlement.issue_count),
            (12_000, 11_998)
        );

        // Page sizes above 5 000 are lowered to it: three pages.
        let (pages, lines) = all_lines(&mut admin, &settlement.id, 100_000).await;
        assert_eq!((pages, lines.len()), (3, 12_000));
        let matched: Vec<_> = lines
            .iter()
            .filter(|l| l.reconciliation() == proto::ReconciliationStatus::Matched)
            .map(|l| (l.kind(), l.amount))
            .collect();
        assert_eq!(
            matched,
            [
                (proto::SettlementEntryKind::Capture, 12_500),
                (proto::SettlementEntryKind::Refund, 2_500)
            ]
        );
        let rows = export(&mut admin, &settlement.id).await;
        assert_eq!(rows.len(), 12_001);
        for (row, line) in rows[1..].iter().zip(&lines) {
            let vat = line
                .vat
                .iter()
                .map(|v| format!("{}:{}", v.rate, v.amount))
                .collect::<Vec<_>>()
                .join("|");
            assert_eq!(
                [
                    &row[0], &row[2], &row[3], &row[5], &row[6], &row[7], &row[8]
                ],
                [
                    &line.index.to_string(),
                    &line.amount.to_string(),
                    &line.currency,
                    &line.partner_reference,
                    &line.action_reference,
                    &line.transaction_date,
                    &vat
                ]
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_report_query_is_surfaced_and_the_next_import_succeeds() {
        let (partners, server) = Partners::serving().await;
        let (_, payment) = partners.walley_payment(&server, 1_000, json!({})).await;
        captured(&server, capture(&payment, None)).await;
        server.resolve_after(Duration::from_secs(2)).await;
        partners.walley.settle(json!({})).await;

        partners.walley.fail_next(422, 1).await;
        let imports = import(&server).await;
        let walley = imports.iter().find(|i| i.partner == "walley").unwrap();
        assert_eq!(walley.settlements, 0);
        assert!(
            walley.error.contains("422"),
            "the error says what Walley answered: {:?}",
            walley.error
        );
        assert_eq!(
            partners.walley.requests("/reports/settlements").await,
            1,
            "not retried"
        );

        let imports = import(&server).await;
        let walley = imports.iter().find(|i| i.partner == "walley").unwrap();
        assert_eq!(
            (walley.settlements, walley.transactions, walley.issues),
            (1, 1, 0)
        );
    }
}

/// Three replicas on one Redis, two Walley accounts: every replica imports
/// on its schedule and on demand, each settlement is read and stored once.
mod replicas {
    use serde_json::json;

    use super::*;
    use crate::api::support::{
        deployment::Deployment, redis_server::RedisServer, simulator::Simulator,
    };

    struct Day2 {
        simulators: [Simulator; 2],
        deployment: Deployment,
    }

    async fn start() -> Day2 {
        let (se, no) = tokio::join!(Simulator::start("walley"), Simulator::start("walley"));
        let secret =
            std::env::temp_dir().join(format!("po-walley-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&secret, "demo-secret\n").unwrap();
        let partner = |name: &str, method: &str, url: &str| {
            format!(
                "[partners.{name}]\nkind = \"walley\"\nmethods = [\"{method}\"]\nbase_url = \"{url}\"\n\
                 client_id = \"demo-client\"\nclient_secret_file = \"{}\"\ntimeout = \"2s\"\n",
                secret.display()
            )
        };
        let config = format!(
            "{}\n{}",
            partner("walley_se", "invoice", &se.url),
            partner("walley_no", "installments", &no.url)
        );
        let path = std::env::temp_dir().join(format!("po-config-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, config).unwrap();
        let path = path.display().to_string();
        let deployment = Deployment::start_with(
            crate::api::support::deployment::Redis::Single(RedisServer::start()),
            3,
            &[
                ("PAYMENT_ORCHESTRATOR_CONFIG", path.as_str()),
                ("PAYMENT_ORCHESTRATOR_SETTLEMENT_IMPORT_INTERVAL", "300ms"),
            ],
        )
        .await;
        Day2 {
            simulators: [se, no],
            deployment,
        }
    }

    /// A captured (and maybe partly refunded) Walley payment through
    /// `replica`, waited for until final.
    async fn paid(
        day: &Day2,
        replica: usize,
        (partner, method): (&str, &str),
        simulator: &Simulator,
        amount: i64,
        refunded: Option<i64>,
        items: Vec<proto::ItemLine>,
    ) -> proto::Operation {
        let major = format!("{}.{:02}", amount / 100, amount % 100);
        let order = simulator
            .order(json!({ "amount": major.parse::<f64>().unwrap(), "currency": "SEK" }))
            .await;
        let mut sessions = day.deployment.sessions(replica);
        let mut request = create_request(amount, proto::CaptureMode::Manual);
        request.currency = "SEK".into();
        let session = sessions.opened(request).await;
        let split = vec![leg(partner, method, amount, &order)];
        let payment = sessions.submitted(&session.id, split).await;
        let mut payments = day.deployment.payments(replica + 1);
        let request = proto::CaptureRequest {
            items,
            ..capture(&payment, Some(amount))
        };
        let captured = payments.captured(request).await.operation;
        let wait = |id: String| {
            let mut payments = day.deployment.payments(replica + 2);
            async move { payments.waited(&id, Duration::from_secs(20)).await }
        };
        let captured = wait(captured.id).await;
        assert_eq!(captured.status(), proto::OperationStatus::Success);
        if let Some(refunded) = refunded {
            let request = refund(&payment, Some(refunded));
            let refund = payments.refunded(request).await.operation;
            assert_eq!(
                wait(refund.id).await.status(),
                proto::OperationStatus::Success
            );
        }
        captured
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_on_two_partners_is_imported_once_by_three_replicas_with_exact_totals() {
        let day = start().await;
        let se = ("walley_se", "invoice");
        let no = ("walley_no", "installments");
        let [sim_se, sim_no] = &day.simulators;
        let shoes = vec![line("shoe", 2, 5_000, "25")];
        let books = vec![line("book", 4, 2_500, "6")];
        paid(&day, 0, se, sim_se, 12_500, Some(2_000), shoes).await;
        let altered = paid(&day, 1, se, sim_se, 3_000, None, vec![]).await;
        paid(&day, 2, no, sim_no, 10_600, Some(600), books).await;
        paid(&day, 0, no, sim_no, 700, None, vec![]).await;
        sim_se
            .settle(json!({ "alter": { format!("{}:0", altered.id): "29.00" } }))
            .await;
        sim_no.settle(json!({})).await;

        // Every replica imports at once, on top of their schedules.
        let imports = futures_util::future::join_all((0..3).map(|replica| {
            let mut admin = AdminServiceClient::with_interceptor(
                day.deployment.channel(replica),
                Bearer::new(ADMIN_KEY),
            );
            async move { imported(&mut admin).await }
        }))
        .await;
        // Time passing is the point: a second of the replicas' 300 ms
        // schedules, which must read nothing again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            imports.iter().flatten().all(|p| p.error.is_empty()),
            "{imports:?}"
        );
        for simulator in &day.simulators {
            assert_eq!(
                simulator.requests("/transactions").await,
                1,
                "each settlement's lines are read once: {imports:?}"
            );
        }

        let mut admin = SettlementServiceClient::with_interceptor(
            day.deployment.channel(2),
            Bearer::new(ADMIN_KEY),
        );
        let mut listed = listed(&mut admin, proto::ListSettlementsRequest::default()).await;
        listed.sort_by(|a, b| a.partner.cmp(&b.partner));
        let totals: Vec<_> = listed
            .iter()
            .map(|s| {
                (
                    s.partner.as_str(),
                    s.currency.as_str(),
                    s.captured,
                    s.refunded,
                    s.net,
                    s.transaction_count,
                    s.issue_count,
                    s.vat_per_rate
                        .iter()
                        .map(|v| (v.rate.clone(), v.amount))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        // SE: 125.00 (VAT 25.00 at 25 %) and 30.00 settled as 29.00, 20.00
        // refunded (no lines: no VAT). NO: 106.00 (VAT 6.00 at 6 %) and 7.00,
        // 6.00 refunded.
        assert_eq!(
            totals,
            [
                (
                    "walley_no",
                    "SEK",
                    11_300,
                    600,
                    10_700,
                    3,
                    0,
                    vec![("6".to_owned(), 600)]
                ),
                (
                    "walley_se",
                    "SEK",
                    15_400,
                    2_000,
                    13_400,
                    3,
                    1,
                    vec![("25".to_owned(), 2_500)]
                ),
            ]
        );

        // The mismatch is counted once, by the replica that found it.
        let mut counted = 0.0;
        for replica in &day.deployment.replicas {
            let metrics =
                reqwest::get(format!("http://127.0.0.1:{}/metrics", replica.metrics_port))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
            counted += metrics
                .lines()
                .filter(|l| {
                    l.starts_with("payment_orchestrator_reconciliation_issues_total")
                        && l.contains("kind=\"amount_mismatch\"")
                        && l.contains("partner=\"walley_se\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        assert_eq!(counted, 1.0);
    }
}

/// The sandbox partner server settles its shared ledger, over the gateway
/// contract, for every replica.
mod gateway {

    use sandbox_partner::proto::PrepareSettlementRequest;

    use super::*;
    use crate::api::support::{
        deployment::{Deployment, Redis},
        redis_server::RedisServer,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_partner_settles_what_any_replica_did_and_discrepancies_show() {
        let deployment = Deployment::start(Redis::Single(RedisServer::start()), 2).await;
        let split = vec![card(10_000, "tok"), gift(2_000, "tok")];
        let payment = deployment.authorized(0, split).await;
        // 20.00 from the gift card, 30.00 from the card, through the other
        // replica.
        let captured = deployment
            .payments(1)
            .captured(capture(&payment, Some(5_000)))
            .await
            .operation;
        let card_key = format!("{}:0", captured.id);
        deployment
            .sandbox()
            .prepare_settlement(PrepareSettlementRequest {
                partner: "ingenico".into(),
                alter: BTreeMap::from([(card_key.clone(), 2_900)]),
                ..Default::default()
            })
            .await
            .unwrap();

        let mut admin =
            AdminServiceClient::with_interceptor(deployment.channel(0), Bearer::new(ADMIN_KEY));
        let imports = imported(&mut admin).await;
        let summary: Vec<_> = imports
            .iter()
            .map(|i| (i.partner.as_str(), i.settlements, i.transactions, i.issues))
            .collect();
        assert_eq!(summary, [("illicado", 1, 1, 0), ("ingenico", 1, 1, 1)]);

        let mut admin = SettlementServiceClient::with_interceptor(
            deployment.channel(1),
            Bearer::new(ADMIN_KEY),
        );
        let issues = issues_of(&mut admin).await;
        assert_eq!(issues.len(), 1);
        assert_eq!(
            (
                issues[0].kind(),
                issues[0].reference.as_str(),
                issues[0].expected,
                issues[0].settled
            ),
            (
                proto::ReconciliationStatus::AmountMismatch,
                card_key.as_str(),
                3_000,
                2_900
            )
        );
    }
}
