//! Bounded fuzzing (property tests with random inputs): proto decoding of
//! every request type, request validation over real gRPC, the sandbox token
//! parser and the configuration parser. Nothing panics; a rejected request
//! is INVALID_ARGUMENT (or what the stored state explains: NOT_FOUND,
//! FAILED_PRECONDITION) and stores nothing. Each property prints how many
//! cases it ran (`cargo test --test api fuzz -- --nocapture`); the case
//! counts are fixed so CI runs the same amount every time.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use payment_orchestrator::{
    api::proto, config::Config, partners::grpc::proto as partner_proto, partners::sandbox::Scenario,
};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, TestRunner},
};
use prost::Message;

use super::support::harness::*;

const CASES: u32 = 512;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn report(name: &str, cases: usize) {
    eprintln!("fuzz: {name}: {cases} cases, 0 panics");
}

/// Arbitrary bytes, and truncations and bit flips of a valid message.
fn wire(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (0..len).prop_map({
            let valid = valid.clone();
            move |cut| valid[..cut.min(valid.len())].to_vec()
        }),
        (0..len, any::<u8>()).prop_map(move |(at, flip)| {
            let mut bytes = valid.clone();
            if let Some(byte) = bytes.get_mut(at) {
                *byte ^= flip | 1;
            }
            bytes
        }),
    ]
}

macro_rules! decode_every {
    ($($ty:ty),* $(,)?) => {{
        let mut total = 0;
        $(
            let valid = <$ty>::default().encode_to_vec();
            let count = AtomicUsize::new(0);
            runner(CASES)
                .run(&wire(valid), |bytes| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = <$ty>::decode(bytes.as_slice());
                    Ok(())
                })
                .unwrap();
            total += count.into_inner();
        )*
        total
    }};
}

#[test]
fn every_request_type_decodes_arbitrary_bytes_without_panicking() {
    let cases = decode_every!(
        proto::CreateSessionRequest,
        proto::GetSessionRequest,
        proto::SubmitSessionRequest,
        proto::CancelSessionRequest,
        proto::UpdateSessionRequest,
        proto::ListSessionsRequest,
        proto::ListPaymentMethodsRequest,
        proto::GetPaymentRequest,
        proto::ListPaymentsRequest,
        proto::ListOperationsRequest,
        proto::CaptureRequest,
        proto::RefundRequest,
        proto::VoidRequest,
        proto::GetOperationRequest,
        proto::WaitOperationRequest,
        proto::SyncOperationRequest,
        proto::ResolveOperationRequest,
        proto::ImportSettlementsRequest,
        proto::ListFailedWebhooksRequest,
        proto::RedeliverWebhookRequest,
        proto::NotifyPartnerEventRequest,
        proto::ListSettlementsRequest,
        proto::GetSettlementRequest,
        proto::ListSettlementTransactionsRequest,
        proto::ExportSettlementTransactionsRequest,
        proto::ListReconciliationIssuesRequest,
        partner_proto::AuthorizeRequest,
        partner_proto::CaptureRequest,
        partner_proto::RefundRequest,
        partner_proto::VoidRequest,
        partner_proto::LookupOperationRequest,
        partner_proto::ListSettlementsRequest,
        partner_proto::ListSettlementLinesRequest,
        sandbox_partner::proto::PrepareSettlementRequest,
        sandbox_partner::proto::GetLedgerRequest,
        sandbox_partner::proto::ReceivedRequest,
    );
    report("proto decoding, 36 request types", cases);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9_.:/-]{0,40}",
        any::<String>(),
        "\\PC{250,300}",
    ]
}

fn create_request_strategy() -> impl Strategy<Value = proto::CreateSessionRequest> {
    let webhook = (
        prop_oneof![text(), Just("https://hooks.example.com/x".to_owned())],
        prop::collection::btree_map(text(), text(), 0..3),
    )
        .prop_map(|(url, headers)| proto::Webhook { url, headers });
    (
        text(),
        text(),
        prop_oneof![any::<i64>(), 1..100_000i64],
        prop_oneof![text(), Just("EUR".to_owned())],
        any::<i32>(),
        prop::option::of(webhook),
        prop::collection::btree_map(text(), text(), 0..3),
        prop::option::of((any::<i64>(), any::<i32>())),
    )
        .prop_map(
            |(key, reference, amount, currency, mode, webhook, metadata, expires)| {
                proto::CreateSessionRequest {
                    idempotency_key: key,
                    order_reference: reference,
                    amount,
                    currency,
                    capture_mode: mode,
                    webhook,
                    metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                    expires_in: expires
                        .map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
                    ..Default::default()
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_are_accepted_or_invalid_and_a_refusal_stores_nothing() {
    let server = TestServer::start().await;
    let payment = authorized(&server, vec![card(10_000, "tok"), gift(2_000, "tok")]).await;
    let sessions = server.sessions();
    let payments = server.payments();
    let handle = tokio::runtime::Handle::current();

    let accepted = AtomicUsize::new(0);
    let cases = AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        runner(256)
            .run(&create_request_strategy(), |request| {
                cases.fetch_add(1, Ordering::Relaxed);
                match handle.block_on(sessions.clone().create_session(request)) {
                    Ok(_) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{:?}", status)
                    }
                }
                Ok(())
            })
            .unwrap();
    });
    // What was refused left nothing behind: the sessions listed are the
    // accepted ones (and the one the payment came from).
    let listed = sessions
        .clone()
        .list_sessions(proto::ListSessionsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .answer()
        .sessions
        .len();
    assert_eq!(listed, accepted.load(Ordering::Relaxed) + 1);
    report("CreateSession over gRPC", cases.load(Ordering::Relaxed));

    let capture_cases = AtomicUsize::new(0);
    let operations_before = payment_now(&server, &payment.id).await.captures.len();
    let strategy = (
        prop_oneof![Just(payment.id.clone()), text()],
        text(),
        prop::option::of(any::<i64>()),
        prop::collection::vec((text(), text()), 0..3),
        text(),
    );
    let took = AtomicUsize::new(0);
    tokio::task::block_in_place(|| {
        runner(256)
            .run(&strategy, |(id, key, amount, rules, reference)| {
                capture_cases.fetch_add(1, Ordering::Relaxed);
                let request = proto::CaptureRequest {
                    payment_id: id,
                    idempotency_key: key,
                    amount,
                    priority: rules
                        .into_iter()
                        .map(|(partner, method)| proto::PriorityRule { partner, method })
                        .collect(),
                    merchant_reference: reference,
                    ..Default::default()
                };
                match handle.block_on(payments.clone().capture(request)) {
                    Ok(_) => {
                        took.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => prop_assert!(
                        matches!(
                            status.code(),
                            tonic::Code::InvalidArgument
                                | tonic::Code::NotFound
                                | tonic::Code::FailedPrecondition
                        ),
                        "{:?}",
                        status
                    ),
                }
                Ok(())
            })
            .unwrap();
    });
    let operations_after = payment_now(&server, &payment.id).await.captures.len();
    assert_eq!(
        operations_after,
        operations_before + took.load(Ordering::Relaxed),
        "only accepted captures became operations"
    );
    report("Capture over gRPC", capture_cases.load(Ordering::Relaxed));
}

#[test]
fn sandbox_tokens_parse_without_panicking() {
    let count = AtomicUsize::new(0);
    let pair = (
        prop_oneof![
            Just("authorize"),
            Just("capture"),
            Just("refund"),
            Just("void"),
            Just("latency"),
            Just("lookup"),
            Just("pending_lookups"),
            Just("x"),
        ],
        prop_oneof![
            text(),
            Just("pending".to_owned()),
            Just("3s".to_owned()),
            Just("99999999999999999999ms".to_owned()),
        ],
    )
        .prop_map(|(key, value)| format!("{key}={value}"));
    let token = prop_oneof![
        any::<String>(),
        prop::collection::vec(pair, 0..5).prop_map(|pairs| pairs.join(",")),
    ];
    runner(CASES * 4)
        .run(&token, |token| {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = Scenario::parse(&token);
            Ok(())
        })
        .unwrap();
    report("sandbox token parser", count.into_inner());
}

#[test]
fn the_configuration_parses_without_panicking() {
    let flags: Vec<String> = Config::command_flags();
    let count = AtomicUsize::new(0);
    let args = prop::collection::vec(
        (
            prop::sample::select(flags),
            prop_oneof![text(), Just("1s".to_owned())],
        ),
        0..4,
    );
    runner(CASES)
        .run(&args, |args| {
            count.fetch_add(1, Ordering::Relaxed);
            let mut argv: Vec<std::ffi::OsString> = vec!["payment-orchestrator".into()];
            for (flag, value) in args {
                argv.push(format!("--{flag}").into());
                argv.push(value.into());
            }
            let _ = Config::load_from(argv);
            Ok(())
        })
        .unwrap();
    // And configuration files of arbitrary text.
    let dir = std::env::temp_dir().join(format!("po-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    let toml = prop_oneof![
        any::<String>(),
        ("[a-z_-]{1,20}", text()).prop_map(|(k, v)| format!("{k} = {v:?}\n")),
        ("[a-z_-]{1,20}", text(), text())
            .prop_map(|(t, k, v)| format!("[partners.{t}]\n{k:?} = {v:?}\n")),
    ];
    runner(CASES)
        .run(&toml, |text| {
            count.fetch_add(1, Ordering::Relaxed);
            std::fs::write(&file, text).unwrap();
            let _ = Config::load_from(vec![
                "payment-orchestrator".into(),
                "--config".into(),
                file.clone().into(),
            ]);
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    report("configuration (flags and files)", count.into_inner());
}
