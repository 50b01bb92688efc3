//! The partner port: what the orchestrator needs from a payment partner, and
//! how a partner's failures are classified.
//!
//! - [`PartnerError::Declined`]: a definitive no. Nothing moved.
//! - [`PartnerError::Unavailable`]: nothing happened; safe to retry.
//! - [`PartnerError::Unknown`]: it may have happened (timeout, reset, 5xx
//!   after send). The transaction becomes UNCERTAIN and keeps its reservation.
//! - [`PartnerError::Contradiction`]: the partner answered about something
//!   other than what was asked (another amount, currency or account). The
//!   transaction stays UNCERTAIN with its reservation and the operation goes
//!   to review with both figures: never booked at our amount.
//!
//! A partner either deduplicates an operation by the partner idempotency
//! key ([`Partner::resends_safely`]), or it does not: then a leg is sent at
//! most once (no re-send, no retry after a 429 either) and only looked up
//! after that.
//!
//! Each adapter maps its partner's answers (HTTP statuses, gRPC outcomes)
//! onto these three and documents the mapping. [`Partners`] holds the
//! configured partners and applies each one's settings: the timeout of one
//! attempt, and the window within which unavailable answers are retried with
//! exponential backoff (a REST partner answers `404` for a while after an
//! order is placed).

#[cfg(test)]
mod documented;
pub mod grpc;
pub mod health;
pub mod http;
pub mod sandbox;
pub mod walley;
pub mod wepay;

use std::{borrow::Cow, collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use health::{CircuitSettings, Health};

use crate::clock::Clock;

use crate::domain::{
    capabilities::Capabilities,
    checkout::CheckoutState,
    dispute::DisputeSeen,
    items::ItemLine,
    money::{Amount, Currency},
    operation::OperationKind,
    payment::PaymentToken,
    settlement::{Day, Line},
};

/// One call to a partner: everything an adapter may need to send it, or to
/// find out later what became of it. `idempotency_key` is derived from the
/// operation and the leg, so a re-send can never execute twice.
#[derive(Debug, Clone)]
pub struct PartnerRequest {
    pub kind: OperationKind,
    pub idempotency_key: String,
    pub amount: Amount,
    /// The amount's currency; its exponent converts to major units.
    pub currency: Currency,
    pub method: String,
    /// The shopper's token (what the leg was submitted with).
    pub token: PaymentToken,
    /// The partner's reference of the leg's authorization (captures, refunds
    /// and voids).
    pub authorization_reference: Option<String>,
    /// The payment's order reference (the session's).
    pub order_reference: String,
    /// The merchant's reference of the operation; empty for authorizations
    /// and SYSTEM operations.
    pub merchant_reference: String,
    /// Why (refunds and voids); may be empty.
    pub reason: String,
    /// The operation's order lines when this leg carries all of the
    /// operation's amount; empty when the amount is split over legs (lines
    /// cannot be divided between partners without inventing prices).
    pub items: Vec<ItemLine>,
    /// What our books say the leg had refunded before this request (settled
    /// refunds). A partner without idempotency for refunds compares its own
    /// refunded total with it to tell whether a refund was executed.
    pub refunded_before: Amount,
}

/// How a partner's payment token (the shopper's instrument) may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentUse {
    /// It backs one payment (a Walley order); the same session may retry
    /// with it after a declined leg.
    SingleUse,
    /// It belongs to the first merchant that used it (a tokenized card),
    /// which may reuse it for any number of payments.
    Reusable,
}

/// A credential (an API secret, an access token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a partner-hosted checkout is opened with.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    /// The session's order reference.
    pub order_reference: String,
    /// What the partner is asked to hold the checkout under: a reference
    /// of ours no merchant chooses (see [`crate::payments`]' checkouts).
    pub reference: String,
    pub amount: Amount,
    pub currency: Currency,
    pub items: Vec<ItemLine>,
    /// Where the partner tells us the checkout changed (`None`: no callback
    /// listener; the resolver's lookups find out).
    pub notification_url: Option<String>,
}

/// A partner-hosted checkout as the partner opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCheckout {
    pub id: String,
    pub public_token: String,
    pub redirect_url: String,
    /// When the partner ends it; `None`: the partner does not say.
    pub expires_at: Option<std::time::SystemTime>,
}

/// A partner's accepted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerAnswer {
    /// `false` when the partner accepted the request but decides later.
    pub settled: bool,
    pub reference: String,
    pub partner_status: String,
    pub description: String,
    /// A reusable instrument an authorization yielded (the partner's own
    /// reference for the shopper's card), where the partner issues one.
    pub instrument: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerError {
    #[error("declined by the partner ({code})")]
    Declined { code: String, description: String },
    #[error("partner unavailable, nothing happened")]
    Unavailable { description: String },
    #[error("partner outcome unknown")]
    Unknown { description: String },
    /// The answer is about another amount, currency or account than asked.
    #[error("the partner's answer contradicts the request")]
    Contradiction { description: String },
}

/// What a partner knows of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The partner never received it: safe to re-send with the same key.
    NotFound,
    Found(Result<PartnerAnswer, PartnerError>),
}

#[async_trait]
pub trait Partner: Send + Sync + std::fmt::Debug {
    /// Checks a token's form before anything is claimed or sent. Local: it
    /// runs on every submit, replays included, so it never calls out. The
    /// message is shown to the caller: never echo the token.
    fn check_token(&self, _token: &str) -> Result<(), String> {
        Ok(())
    }

    /// The one spelling of the instrument `token` names: two tokens the
    /// partner reads as the same instrument give the same text, so that one
    /// claim covers every spelling. By default a token is its own.
    fn instrument_of<'t>(&self, token: &'t str) -> Cow<'t, str> {
        Cow::Borrowed(token)
    }

    /// Whether a request of `kind` sent again with the same partner
    /// idempotency key is answered rather than executed again (the partner
    /// deduplicates it, or its state makes a second execution impossible).
    /// Otherwise a leg is sent at most once.
    fn resends_safely(&self, _kind: OperationKind) -> bool {
        true
    }

    /// How the leg's token may be used across payments and merchants.
    fn instrument_use(&self) -> InstrumentUse {
        InstrumentUse::Reusable
    }

    /// Opens a partner-hosted checkout where the shopper completes the
    /// payment; a partner without one declines.
    async fn open_checkout(
        &self,
        _request: &CheckoutRequest,
    ) -> Result<OpenedCheckout, PartnerError> {
        Err(PartnerError::Declined {
            code: "NO_HOSTED_CHECKOUT".into(),
            description: "the partner has no hosted checkout".into(),
        })
    }

    /// Where a hosted checkout this service opened stands, by the partner's
    /// own state (a read: changes nothing).
    async fn checkout_state(&self, _id: &str) -> Result<CheckoutState, PartnerError> {
        Err(PartnerError::Declined {
            code: "NO_HOSTED_CHECKOUT".into(),
            description: "the partner has no hosted checkout".into(),
        })
    }

    /// Sends one leg's operation, of `request.kind`. An authorization goes
    /// with the leg's token or, for a leg paid through a hosted checkout
    /// ([`PaymentToken::checkout`]), by what the shopper completed there
    /// (PENDING until then); a capture, refund or void moves what the leg
    /// holds.
    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError>;

    /// What the partner knows of `request`, which was (or may have been)
    /// sent: by `reference`, the partner's own id from an earlier answer
    /// when there was one, else by what the request carries (its
    /// idempotency key, its order). `NotFound` only when the partner is sure
    /// it never executed it.
    async fn lookup(
        &self,
        request: &PartnerRequest,
        reference: Option<&str>,
    ) -> Result<Lookup, PartnerError>;

    /// Whether the partner reports settlements: then a successful capture
    /// or refund that no settlement shows in time is an issue.
    fn settles(&self) -> bool {
        false
    }

    /// How long after a capture a chargeback can still come that only a
    /// lookup of the leg shows (`None`: the partner reports chargebacks
    /// otherwise, in its settlements, or not at all).
    fn dispute_window(&self) -> Option<Duration> {
        None
    }

    /// Whether a captured leg is disputed now, by the partner's own state.
    async fn dispute(
        &self,
        _request: &PartnerRequest,
    ) -> Result<Option<DisputeSeen>, PartnerError> {
        Ok(None)
    }

    /// The settlements the partner closed on or after `since`, oldest
    /// first; a settlement whose header does not read is listed as why (the
    /// others are read all the same). A partner without settlement reports
    /// has none.
    async fn settlements(&self, _since: Day) -> Result<Vec<Listed>, PartnerError> {
        Ok(Vec::new())
    }

    /// One page (from 1) of a settlement's lines, at most `per_page` of
    /// them. A line that cannot be read is kept raw; only a page that
    /// cannot be read at all is an error.
    async fn settlement_page(
        &self,
        _report: &SettlementReport,
        _page: u32,
        _per_page: u32,
    ) -> Result<SettlementPage, PartnerError> {
        Err(PartnerError::Unavailable {
            description: "the partner has no settlement reports".into(),
        })
    }
}

pub use crate::domain::settlement::SettlementReport;

/// A settlement as a partner lists it: its header, or why the header could
/// not be read.
pub type Listed = Result<SettlementReport, String>;

/// One page of a settlement's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPage {
    /// Each line read, or kept as it came where it could not be.
    pub lines: Vec<Line>,
    /// Lines in the whole settlement, if the partner says.
    pub total: Option<u64>,
    /// Pages at this page size, if the partner says; else pages are read
    /// until one comes back short.
    pub pages: Option<u32>,
}

/// How unavailable answers are retried: the first pause, doubling, for as
/// long as the window lasts (counted from the first attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_pause: Duration,
    pub window: Duration,
}

impl RetryPolicy {
    /// Four attempts in about 140 ms: a brief blip, not a propagation delay.
    pub const SHORT: RetryPolicy = RetryPolicy {
        first_pause: Duration::from_millis(20),
        window: Duration::from_millis(150),
    };
}

/// A configured partner: the adapter and what the orchestrator must know of
/// it to route and to wait for it.
#[derive(Debug, Clone)]
pub struct ConfiguredPartner {
    pub adapter: Arc<dyn Partner>,
    /// `sandbox`, `grpc`, `walley` or `wepay`.
    pub kind: &'static str,
    pub methods: Vec<String>,
    /// The currencies it takes; empty: any.
    pub currencies: Vec<Currency>,
    /// Deadline of one attempt. An attempt still unanswered then is Unknown.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// What it supports; routing offers its legs only what they can take.
    pub capabilities: Capabilities,
    /// After this, what an authorization still holds on its legs is voided.
    pub authorization_lifetime: Duration,
    /// The merchants that may use it; empty: every merchant.
    pub merchants: Vec<String>,
    /// Its settlements are imported, and our successful captures and refunds
    /// expected in them.
    pub settlement_reports: bool,
    /// When its circuit opens, and for how long.
    pub circuit: CircuitSettings,
}

impl ConfiguredPartner {
    /// A partner with the defaults of the embedded service.
    pub fn new(adapter: Arc<dyn Partner>, kind: &'static str, methods: Vec<String>) -> Self {
        let adapter_settles = adapter.settles();
        ConfiguredPartner {
            adapter,
            kind,
            methods,
            currencies: Vec::new(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::SHORT,
            capabilities: Capabilities::default(),
            authorization_lifetime: Duration::from_secs(7 * 86_400),
            merchants: Vec::new(),
            settlement_reports: adapter_settles,
            circuit: CircuitSettings::default(),
        }
    }

    pub fn takes(&self, currency: Currency) -> bool {
        self.currencies.is_empty() || self.currencies.contains(&currency)
    }

    pub fn serves(&self, merchant: &str) -> bool {
        self.merchants.is_empty() || self.merchants.iter().any(|m| m == merchant)
    }

    /// Why it cannot take a payment of `merchant` in `currency`, if it
    /// cannot.
    pub fn refuses(&self, merchant: &str, currency: Currency) -> Option<String> {
        if !self.serves(merchant) {
            Some("does not serve this merchant".to_owned())
        } else if !self.takes(currency) {
            Some(format!("does not take {}", currency.code()))
        } else {
            None
        }
    }
}

/// Every configured partner by name, with their health on this replica.
#[derive(Debug, Clone)]
pub struct Partners {
    by_name: BTreeMap<String, ConfiguredPartner>,
    health: Arc<Health>,
}

impl Partners {
    /// `clock`: the time of the partners' circuits.
    pub fn new(by_name: BTreeMap<String, ConfiguredPartner>, clock: Arc<dyn Clock>) -> Self {
        let health = Health::new(
            clock,
            by_name
                .iter()
                .map(|(name, partner)| (name.clone(), partner.circuit)),
        );
        Partners {
            by_name,
            health: Arc::new(health),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn health_handle(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The partners whose circuit is open and not due for a trial: an
    /// operation opened now walks their legs last.
    pub fn avoided<'a>(&self, partners: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        self.health.avoided(partners)
    }

    pub fn get(&self, name: &str) -> Option<&ConfiguredPartner> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ConfiguredPartner)> {
        self.by_name.iter().map(|(name, p)| (name.as_str(), p))
    }

    pub fn supports(&self, partner: &str, method: &str) -> bool {
        self.get(partner)
            .is_some_and(|p| p.methods.iter().any(|m| m == method))
    }

    /// Whether `partner` deduplicates requests of `kind` (see
    /// [`Partner::resends_safely`]); an unknown partner does not.
    pub fn resends_safely(&self, partner: &str, kind: OperationKind) -> bool {
        self.get(partner)
            .is_some_and(|p| p.adapter.resends_safely(kind))
    }

    pub fn knows_method(&self, method: &str) -> bool {
        self.by_name
            .values()
            .any(|p| p.methods.iter().any(|m| m == method))
    }

    /// Asks a partner what it knows of a request, each attempt within its
    /// deadline. Unavailable answers are asked again with backoff within
    /// the partner's retry window, as sends are: reading changes nothing,
    /// and a REST partner answers `404` for a while after an order is
    /// placed.
    pub async fn lookup(
        &self,
        partner: &str,
        request: &PartnerRequest,
        reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        let Some(configured) = self.get(partner) else {
            return Err(not_configured(partner));
        };
        let result = retried(configured.retry, true, move || async move {
            tokio::time::timeout(
                configured.timeout,
                configured.adapter.lookup(request, reference),
            )
            .await
            .unwrap_or_else(|_| {
                Err(PartnerError::Unknown {
                    description: "no answer to the status lookup in time".into(),
                })
            })
        })
        .await;
        let failed = matches!(
            result,
            Err(PartnerError::Unavailable { .. } | PartnerError::Unknown { .. })
        );
        self.health.record(partner, failed);
        result
    }

    /// Sends one request. Each attempt has the partner's timeout; an attempt
    /// that passes it with the request on the wire is `Unknown`. Unavailable
    /// answers are retried with exponential backoff within the partner's
    /// retry window, then returned (the leg fails, fallback applies).
    pub async fn send(
        &self,
        partner: &str,
        request: &PartnerRequest,
    ) -> Result<PartnerAnswer, PartnerError> {
        let Some(configured) = self.get(partner) else {
            return Err(not_configured(partner));
        };
        let started = std::time::Instant::now();
        let result = send_with_retries(configured, request).await;
        let failed = matches!(
            result,
            Err(PartnerError::Unavailable { .. } | PartnerError::Unknown { .. })
        );
        self.health.record(partner, failed);
        let outcome = match &result {
            Ok(answer) if answer.settled => "succeeded",
            Ok(_) => "pending",
            Err(PartnerError::Declined { .. }) => "declined",
            Err(PartnerError::Unavailable { .. }) => "unavailable",
            Err(PartnerError::Unknown { .. }) => "unknown",
            Err(PartnerError::Contradiction { .. }) => "contradiction",
        };
        metrics::histogram!(
            crate::telemetry::series::PARTNER_REQUEST_SECONDS,
            "partner" => partner.to_owned(),
            "kind" => request.kind.as_str(),
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }
}

impl Partners {
    /// The settlements a partner closed on or after `since`, within one
    /// attempt's deadline.
    pub async fn settlements(
        &self,
        partner: &str,
        since: Day,
    ) -> Result<Vec<Listed>, PartnerError> {
        let configured = self.get(partner).ok_or_else(|| not_configured(partner))?;
        within(configured.timeout, configured.adapter.settlements(since)).await
    }

    /// Whether a captured leg is disputed now, within one attempt's
    /// deadline.
    pub async fn dispute(
        &self,
        partner: &str,
        request: &PartnerRequest,
    ) -> Result<Option<DisputeSeen>, PartnerError> {
        let configured = self.get(partner).ok_or_else(|| not_configured(partner))?;
        within(configured.timeout, configured.adapter.dispute(request)).await
    }

    /// Opens a hosted checkout, within one attempt's deadline. A checkout
    /// opened whose answer is lost is never used: nobody learns its id.
    pub async fn open_checkout(
        &self,
        partner: &str,
        request: &CheckoutRequest,
    ) -> Result<OpenedCheckout, PartnerError> {
        let configured = self.get(partner).ok_or_else(|| not_configured(partner))?;
        within(
            configured.timeout,
            configured.adapter.open_checkout(request),
        )
        .await
    }

    /// Where a hosted checkout stands, within one attempt's deadline.
    pub async fn checkout_state(
        &self,
        partner: &str,
        id: &str,
    ) -> Result<CheckoutState, PartnerError> {
        let configured = self.get(partner).ok_or_else(|| not_configured(partner))?;
        within(configured.timeout, configured.adapter.checkout_state(id)).await
    }

    /// How long a partner's captures are watched for disputes.
    pub fn dispute_window(&self, partner: &str) -> Option<Duration> {
        self.get(partner)?.adapter.dispute_window()
    }

    /// One page of a settlement's lines, within one attempt's deadline.
    pub async fn settlement_page(
        &self,
        partner: &str,
        report: &SettlementReport,
        page: u32,
        per_page: u32,
    ) -> Result<SettlementPage, PartnerError> {
        let configured = self.get(partner).ok_or_else(|| not_configured(partner))?;
        within(
            configured.timeout,
            configured.adapter.settlement_page(report, page, per_page),
        )
        .await
    }
}

/// A read that takes too long is unavailable: reading changes nothing.
async fn within<T>(
    timeout: Duration,
    read: impl Future<Output = Result<T, PartnerError>>,
) -> Result<T, PartnerError> {
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(PartnerError::Unavailable {
                description: "no answer within the partner's timeout".into(),
            })
        })
}

fn not_configured(partner: &str) -> PartnerError {
    PartnerError::Unavailable {
        description: format!("partner {partner} is not configured"),
    }
}

async fn send_with_retries(
    configured: &ConfiguredPartner,
    request: &PartnerRequest,
) -> Result<PartnerAnswer, PartnerError> {
    let adapter = &configured.adapter;
    // A partner that does not deduplicate gets one send: a retry after a
    // 429 would be a second one.
    let retries = adapter.resends_safely(request.kind);
    retried(configured.retry, retries, move || async move {
        tokio::time::timeout(configured.timeout, adapter.send(request))
            .await
            .unwrap_or_else(|_| {
                Err(PartnerError::Unknown {
                    description: "no answer within the partner's timeout".into(),
                })
            })
    })
    .await
}

/// Runs `attempt` again while it answers Unavailable (when `retries`) and
/// the next pause — the first one, doubling — ends within the policy's
/// window, counted from the first attempt.
async fn retried<T, F: Future<Output = Result<T, PartnerError>>>(
    policy: RetryPolicy,
    retries: bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T, PartnerError> {
    let window_end = tokio::time::Instant::now() + policy.window;
    let mut pause = policy.first_pause;
    loop {
        match attempt().await {
            Err(PartnerError::Unavailable { .. })
                if retries && tokio::time::Instant::now() + pause < window_end =>
            {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests;
