//! Starts the real server on 127.0.0.1:0 with a manual clock and gives the
//! tests authenticated gRPC clients and the sandbox ledgers.

use std::{sync::Arc, time::SystemTime};

use payment_orchestrator::{
    api::{ApiKeys, proto},
    app::App,
    clock::ManualClock,
    config::Config,
    partners::sandbox::{AuthorizationTotals, Sandbox},
    store::Store,
    workers::deliveries::DeliveryWorker,
    workers::resolver::Resolver,
};
use proto::{
    admin_service_client::AdminServiceClient, payment_service_client::PaymentServiceClient,
    session_service_client::SessionServiceClient,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub use super::{
    verbs::{
        Answer, Done, PaymentCalls, SessionCalls, answered, answered_or_in_progress, concurrently,
    },
    waits::eventually,
};

pub const DEMO_KEY: &str = "sk_test_demo";
/// The operators' key (the embedded default).
pub const ADMIN_KEY: &str = "sk_test_admin";
/// The order reference of the harness's sessions.
pub const ORDER_REFERENCE: &str = "order-1001";
pub const OTHER_KEY: &str = "sk_test_other";

/// Adds `authorization: Bearer <key>` to every call (or nothing for `None`).
#[derive(Clone)]
pub struct Bearer(Option<String>);

impl Bearer {
    pub fn new(key: &str) -> Self {
        Bearer(Some(key.to_owned()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii key");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub type Sessions = SessionServiceClient<InterceptedService<Channel, Bearer>>;
pub type Payments = PaymentServiceClient<InterceptedService<Channel, Bearer>>;
pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

pub struct TestServer {
    pub clock: ManualClock,
    pub resolver: Resolver,
    pub deliveries: DeliveryWorker,
    pub address: std::net::SocketAddr,
    /// The partner callback listener's address.
    pub callbacks: Option<std::net::SocketAddr>,
    channel: Channel,
    sandboxes: Vec<(String, Sandbox)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// The embedded configuration plus a second merchant (`other`) and a
    /// third sandbox partner (`clover`, gift cards).
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// With extra command-line settings.
    pub async fn start_with(extra: &[&str]) -> TestServer {
        TestServer::start_on(extra, ManualClock::new(SystemTime::now()), None).await
    }

    /// With the configuration file `toml` (see [`config_file`]) and extra
    /// command-line settings.
    pub async fn start_configured(toml: &str, extra: &[&str]) -> TestServer {
        let flags = config_file(toml);
        let flags: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        TestServer::start_with(&flags).await
    }

    /// On the store given (built on `clock`, the server's clock), or the one
    /// the settings choose.
    pub async fn start_on(
        extra: &[&str],
        clock: ManualClock,
        store: Option<Arc<dyn Store>>,
    ) -> TestServer {
        let keys = format!(
            "demo:{},other:{}",
            ApiKeys::hash(DEMO_KEY),
            ApiKeys::hash(OTHER_KEY)
        );
        let config = Config::load_from(
            [
                "payment-orchestrator",
                "--listen",
                "127.0.0.1:0",
                "--api-keys",
                &keys,
                "--partners",
                "ingenico=creditcard,illicado=giftcard,clover=giftcard",
                // The tests step the resolver themselves, at the time they choose.
                "--resolver-interval",
                "0s",
                // And import settlements when they ask.
                "--settlement-import-interval",
                "0s",
                // The demo keys also on Redis.
                "--demo",
                // Partner callbacks on a port of their own.
                "--callback-listen",
                "127.0.0.1:0",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .map(Into::into)
            .collect(),
        )
        .expect("valid settings");
        let app = match store {
            Some(store) => App::build_with_store(config, Arc::new(clock.clone()), store).await,
            None => App::build_with_clock(config, Arc::new(clock.clone())).await,
        }
        .expect("app builds");
        let address = app.local_addr().expect("bound");
        let callbacks = app.callback_addr();
        let resolver = app.resolver();
        let deliveries = app.deliveries();
        let sandboxes = ["ingenico", "illicado", "clover"]
            .into_iter()
            .map(|name| (name.to_owned(), app.sandbox(name).expect("configured")))
            .collect();
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(app.serve(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect()
            .await
            .expect("connects");
        TestServer {
            clock,
            resolver,
            deliveries,
            address,
            callbacks,
            channel,
            sandboxes,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn sessions(&self) -> Sessions {
        self.sessions_as(Some(DEMO_KEY))
    }

    pub fn payments(&self) -> Payments {
        self.payments_as(Some(DEMO_KEY))
    }

    pub fn sessions_as(&self, key: Option<&str>) -> Sessions {
        SessionServiceClient::with_interceptor(self.channel.clone(), Bearer(key.map(Into::into)))
    }

    pub fn payments_as(&self, key: Option<&str>) -> Payments {
        PaymentServiceClient::with_interceptor(self.channel.clone(), Bearer(key.map(Into::into)))
    }

    /// The admin service as an operator.
    pub fn admin(&self) -> Admin {
        self.admin_as(ADMIN_KEY)
    }

    pub fn admin_as(&self, key: &str) -> Admin {
        AdminServiceClient::with_interceptor(self.channel.clone(), Bearer::new(key))
    }

    /// Moves the clock by `by`, then runs one resolver step and one
    /// delivery step at that time.
    pub async fn resolve_after(&self, by: std::time::Duration) -> Report {
        self.clock.advance(by);
        let now = self.clock.now_time();
        let resolved = self.resolver.resolve_due(now).await;
        let delivered = self.deliveries.deliver_due(now).await;
        Report {
            claimed: resolved.claimed + delivered.claimed,
            finalized: resolved.finalized,
            still_open: resolved.still_open,
            flagged: resolved.flagged,
            deferred: resolved.deferred,
            delivered: delivered.delivered,
            retrying: delivered.retrying,
            given_up: delivered.given_up,
            purged: delivered.purged,
            errors: resolved.errors + delivered.errors,
        }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn sandbox(&self, name: &str) -> &Sandbox {
        &self
            .sandboxes
            .iter()
            .find(|(n, _)| n == name)
            .expect("known sandbox")
            .1
    }

    /// How many requests of `kind` the sandbox partner `name` received.
    pub fn sent(
        &self,
        name: &str,
        kind: payment_orchestrator::domain::operation::OperationKind,
    ) -> usize {
        self.sandbox(name).received_count(kind)
    }

    /// Stops the server, draining in-flight calls.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// What one resolver step and one delivery step did together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub claimed: usize,
    pub finalized: usize,
    pub still_open: usize,
    pub flagged: usize,
    /// Claimed by the resolver but not started before its lease ended.
    pub deferred: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub given_up: usize,
    /// Given-up deliveries deleted (retention, per-merchant cap).
    pub purged: u64,
    pub errors: usize,
}

// ---- request builders ----

pub fn leg(partner: &str, method: &str, amount: i64, token: &str) -> proto::SplitLeg {
    proto::SplitLeg {
        partner: partner.into(),
        method: method.into(),
        amount,
        payment_token: token.into(),
        ..Default::default()
    }
}

pub fn card(amount: i64, token: &str) -> proto::SplitLeg {
    leg("ingenico", "creditcard", amount, token)
}

pub fn gift(amount: i64, token: &str) -> proto::SplitLeg {
    leg("illicado", "giftcard", amount, token)
}

pub fn rule(partner: &str, method: &str) -> proto::PriorityRule {
    proto::PriorityRule {
        partner: partner.into(),
        method: method.into(),
    }
}

pub fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn create_request(amount: i64, mode: proto::CaptureMode) -> proto::CreateSessionRequest {
    proto::CreateSessionRequest {
        idempotency_key: new_key(),
        order_reference: ORDER_REFERENCE.into(),
        amount,
        currency: "EUR".into(),
        capture_mode: mode.into(),
        ..Default::default()
    }
}

pub async fn open_session(
    server: &TestServer,
    amount: i64,
    mode: proto::CaptureMode,
) -> proto::Session {
    server.sessions().opened(create_request(amount, mode)).await
}

/// A webhook endpoint that answers 200 to every POST and keeps what it
/// received.
pub async fn webhook_receiver() -> wiremock::MockServer {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    receiver
}

/// What the sandbox partner ingenico tells of `operation`'s first leg (a
/// capture), as event `event_id`.
pub fn ingenico_capture_event(
    operation: &proto::Operation,
    event_id: &str,
    outcome: proto::PartnerEventOutcome,
) -> proto::NotifyPartnerEventRequest {
    proto::NotifyPartnerEventRequest {
        partner: "ingenico".into(),
        event_id: event_id.into(),
        idempotency_key: format!("{}:0", operation.id),
        outcome: outcome.into(),
        partner_reference: "ingenico-cap-1".into(),
        partner_status: "CAPTURED".into(),
        description: String::new(),
    }
}

/// A partner's word that leg `leg` of `operation` succeeded, under
/// `reference`.
pub fn succeeded_event(
    partner: &str,
    event_id: &str,
    operation: &str,
    leg: usize,
    reference: &str,
) -> proto::NotifyPartnerEventRequest {
    proto::NotifyPartnerEventRequest {
        partner: partner.into(),
        event_id: event_id.into(),
        idempotency_key: format!("{operation}:{leg}"),
        outcome: proto::PartnerEventOutcome::Succeeded.into(),
        partner_reference: reference.into(),
        partner_status: "SUCCEEDED".into(),
        description: String::new(),
    }
}

/// The events of `kind` the receiver got, oldest first.
pub async fn webhook_events(receiver: &wiremock::MockServer, kind: &str) -> Vec<serde_json::Value> {
    let received = receiver
        .received_requests()
        .await
        .expect("requests recorded");
    let events = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"));
    events
        .filter(|e: &serde_json::Value| e["type"] == kind)
        .collect()
}

/// A MANUAL session of `amount` EUR whose payment's events go to the
/// webhook at `url` (none when `None`).
pub async fn open_session_with_webhook(
    server: &TestServer,
    amount: i64,
    url: Option<String>,
) -> proto::Session {
    let mut request = create_request(amount, proto::CaptureMode::Manual);
    request.webhook = url.map(|url| proto::Webhook {
        url,
        headers: Default::default(),
    });
    server.sessions().opened(request).await
}

/// A MANUAL session in `currency`.
pub async fn open_session_in(server: &TestServer, amount: i64, currency: &str) -> proto::Session {
    let mut request = create_request(amount, proto::CaptureMode::Manual);
    request.currency = currency.into();
    server.sessions().opened(request).await
}

pub async fn submit(
    server: &TestServer,
    session: &str,
    split: Vec<proto::SplitLeg>,
) -> Result<proto::Payment, Status> {
    server.sessions().try_submit(session, split).await
}

/// A session of `amount` in `mode` and its payment of `split`, as
/// submitted.
pub async fn submitted(
    server: &TestServer,
    mode: proto::CaptureMode,
    split: Vec<proto::SplitLeg>,
) -> (proto::Session, proto::Payment) {
    let total = split.iter().map(|l| l.amount).sum();
    let session = open_session(server, total, mode).await;
    let payment = submit(server, &session.id, split).await.expect("submitted");
    (session, payment)
}

/// A MANUAL payment of the split's total, authorized.
pub async fn authorized(server: &TestServer, split: Vec<proto::SplitLeg>) -> proto::Payment {
    authorized_in(server, "EUR", split).await
}

/// A MANUAL payment of the split's total in `currency`, authorized.
pub async fn authorized_in(
    server: &TestServer,
    currency: &str,
    split: Vec<proto::SplitLeg>,
) -> proto::Payment {
    let total = split.iter().map(|l| l.amount).sum();
    let session = open_session_in(server, total, currency).await;
    let payment = submit(server, &session.id, split).await.expect("submitted");
    assert_eq!(
        payment.state(),
        proto::PaymentState::Authorized,
        "{payment:#?}"
    );
    payment
}

/// A MANUAL payment of the merchant with API key `key`, `amount` on a card
/// with `token`, as submitted.
pub async fn submitted_as(
    server: &TestServer,
    key: &str,
    amount: i64,
    token: &str,
) -> proto::Payment {
    let mut sessions = server.sessions_as(Some(key));
    let session = sessions
        .opened(create_request(amount, proto::CaptureMode::Manual))
        .await;
    sessions
        .submitted(&session.id, vec![card(amount, token)])
        .await
}

/// A MANUAL payment of the merchant `other`, `amount` on a card with
/// `token`, as submitted.
pub async fn authorized_as_other(server: &TestServer, amount: i64, token: &str) -> proto::Payment {
    submitted_as(server, OTHER_KEY, amount, token).await
}

/// The walkthrough's split: 100.00 on a card, 20.00 on a gift card.
pub async fn card_and_gift(
    server: &TestServer,
    card_token: &str,
    gift_token: &str,
) -> proto::Payment {
    authorized(
        server,
        vec![card(10000, card_token), gift(2000, gift_token)],
    )
    .await
}

/// A capture of `amount` from the card first, as the demo merchant.
pub async fn card_capture(server: &TestServer, payment: &proto::Payment, amount: i64) -> Done {
    let mut request = capture(payment, Some(amount));
    request.priority = vec![rule("*", "creditcard")];
    captured(server, request).await
}

/// Captures as the demo merchant; what it came to.
pub async fn captured(server: &TestServer, request: proto::CaptureRequest) -> Done {
    server.payments().captured(request).await
}

/// Refunds as the demo merchant; what it came to.
pub async fn refunded(server: &TestServer, request: proto::RefundRequest) -> Done {
    server.payments().refunded(request).await
}

/// Voids as the demo merchant; what it came to.
pub async fn voided(server: &TestServer, request: proto::VoidRequest) -> Done {
    server.payments().voided(request).await
}

pub fn capture(payment: &proto::Payment, amount: Option<i64>) -> proto::CaptureRequest {
    proto::CaptureRequest {
        payment_id: payment.id.clone(),
        idempotency_key: new_key(),
        amount,
        ..Default::default()
    }
}

pub fn refund(payment: &proto::Payment, amount: Option<i64>) -> proto::RefundRequest {
    proto::RefundRequest {
        payment_id: payment.id.clone(),
        idempotency_key: new_key(),
        amount,
        ..Default::default()
    }
}

pub fn void(payment: &proto::Payment, amount: Option<i64>) -> proto::VoidRequest {
    proto::VoidRequest {
        payment_id: payment.id.clone(),
        idempotency_key: new_key(),
        amount,
        ..Default::default()
    }
}

/// `(partner, amount, status)` of each partner transaction, in order.
pub fn legs_of(operation: &proto::Operation) -> Vec<(String, i64, proto::OperationStatus)> {
    operation
        .partner_transactions
        .iter()
        .map(|tx| (tx.partner.clone(), tx.amount, tx.status()))
        .collect()
}

/// The `(partner, amount)` legs given, each a SUCCESS: what [`legs_of`]
/// answers for an operation that went through.
pub fn succeeded(legs: &[(&str, i64)]) -> Vec<(String, i64, proto::OperationStatus)> {
    legs.iter()
        .map(|(partner, amount)| {
            (
                (*partner).to_owned(),
                *amount,
                proto::OperationStatus::Success,
            )
        })
        .collect()
}

/// The totals of every authorization at the sandbox partner `partner`.
pub fn ledger(server: &TestServer, partner: &str) -> Vec<AuthorizationTotals> {
    server
        .sandbox(partner)
        .authorizations()
        .into_values()
        .collect()
}

/// The ids of the demo merchant's payments `request` lists (one page).
pub async fn listed_payments(
    server: &TestServer,
    request: proto::ListPaymentsRequest,
) -> Vec<String> {
    let listed = server.payments().list_payments(request).await.answer();
    listed.payments.into_iter().map(|p| p.id).collect()
}

/// The payment as the service has it now.
pub async fn payment_now(server: &TestServer, id: &str) -> proto::Payment {
    server.payments().payment(id).await
}

/// The operation as the service has it now.
pub async fn operation_now(server: &TestServer, id: &str) -> proto::Operation {
    server.payments().operation(id).await
}

/// The session's status as the service reports it now.
pub async fn session_status(server: &TestServer, id: &str) -> proto::SessionStatus {
    server.sessions().session(id).await.status()
}

pub fn amounts(payment: &proto::Payment) -> proto::Amounts {
    payment.amounts.expect("amounts")
}

/// `(total_captured, capture_pending, available_to_capture)`.
pub fn capture_totals(payment: &proto::Payment) -> (i64, i64, i64) {
    let a = amounts(payment);
    (a.total_captured, a.capture_pending, a.available_to_capture)
}

/// The field violations of an INVALID_ARGUMENT, as (field, description).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// Writes a configuration file (kept in the temporary directory) and its
/// `--config` flag.
pub fn config_file(toml: &str) -> [String; 2] {
    let path = std::env::temp_dir().join(format!("po-config-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, toml).expect("config written");
    ["--config".into(), path.display().to_string()]
}
