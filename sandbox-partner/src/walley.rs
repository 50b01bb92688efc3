//! A simulation of Walley's order management API, as the connector in
//! `partners::walley` uses it.
//!
//! - `POST /oauth2/v2.0/token` (form, client credentials) issues bearer tokens;
//!   every other call needs one (`401` otherwise).
//! - Orders are placed with `POST /_sim/orders` (as the shopper's checkout
//!   would): `{"id"?, "reference"?, "amount", "currency", "invisible_for_ms"?,
//!   "processing_ms"?, "expires_in_seconds"?, "faults"?}`. An order is not
//!   visible (`404`) for `invisible_for_ms` after it was placed: eventual
//!   consistency.
//! - `GET /manage/orders/{id}` reads an order with its captures, refunds and
//!   cancellation.
//! - `POST /manage/orders/{id}/captures` and `/refunds` (`amount`,
//!   `actionReference`, `items`) and `/cancel` are accepted with `202` and
//!   processed `processing_ms` later (`Pending`, then `Completed`). A request
//!   repeating an `X-Idempotency` key gets the first answer again; a second
//!   action with an `actionReference` already seen executes nothing.
//! - Cancel releases what is not captured: the whole order before any
//!   capture, the remainder after a partial one.
//! - An order not activated by `expires_in_seconds` (simulation time) reads
//!   `Expired`.
//!
//! - Settlements: `POST /_sim/settlements` closes every completed capture and
//!   refund not settled yet into one settlement per currency
//!   (`{"date"?, "drop"?: [actionReference], "alter"?: {actionReference:
//!   "amount"}, "unknown"?: [{"amount", "actionReference", "type"?}],
//!   "synthetic"?: n}`: leave lines out, settle another amount, add lines
//!   nobody sent, add `n` generated purchases of 1.00). The report API serves
//!   them: `GET /reports/settlements` (`query=startDate:>=YYYY-MM-DD`, `page`,
//!   `perPage` up to 1 000) and `GET /reports/settlements/{id}/transactions`
//!   (`perPage` up to 25 000; `Accept: text/csv` for CSV), with `data`,
//!   `links` and `metaData`; `422` for a malformed query.
//!
//! Amounts are validated against the currency: more decimals than it has is
//! `400 INVALID_AMOUNT`; item lines (unit price with VAT × quantity) that do
//! not add up to the amount are `400 ITEMS_MISMATCH`; more than is left is
//! `422`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use crate::simulation::{
    self, Common, Effect, Executed, Fault, HANG, Received, Shared, Simulation, answer,
};
use payment_orchestrator::{
    domain::{
        money::{Amount, Currency},
        settlement::Day,
    },
    partners::walley::wire::{
        self, ActionRequest, Link, Links, MetaData, OrderEnvelope, ReportPage, SettlementLine,
        SettlementSummary, TokenRequest, TokenResponse, VatPerRate,
    },
};

/// The credentials the simulation accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug)]
pub struct Walley {
    common: Common,
    credentials: Credentials,
    tokens: HashSet<String>,
    orders: BTreeMap<String, Order>,
    /// Answers by `X-Idempotency` key.
    answered: HashMap<String, (u16, serde_json::Value)>,
    next_order: u64,
    settlements: Vec<ClosedSettlement>,
    /// Captures and refunds (`kind:actionReference`) already settled.
    settled: HashSet<String>,
}

#[derive(Debug)]
struct ClosedSettlement {
    summary: SettlementSummary,
    lines: Vec<SettlementLine>,
}

impl Simulation for Walley {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[derive(Debug)]
struct Order {
    id: String,
    reference: String,
    currency: Currency,
    total: Amount,
    visible_at: Instant,
    processing: Duration,
    expires_at: Option<SystemTime>,
    captures: Vec<Action>,
    refunds: Vec<Action>,
    cancellation: Option<Action>,
    faults: Vec<Fault>,
}

#[derive(Debug, Clone)]
struct Action {
    reference: String,
    amount: Amount,
    ready_at: Instant,
    /// VAT per rate of its items (major units).
    vat: Vec<(Decimal, Decimal)>,
}

impl Action {
    fn completed(&self, now: Instant) -> bool {
        now >= self.ready_at
    }
}

fn sum<'a>(actions: impl IntoIterator<Item = &'a Action>) -> Amount {
    actions.into_iter().fold(Amount::ZERO, |total, a| {
        total.checked_add(a.amount).unwrap_or(total)
    })
}

impl Order {
    fn captured(&self, now: Instant) -> Amount {
        sum(self.captures.iter().filter(|a| a.completed(now)))
    }

    /// What may still be captured: not captured, not being captured, not
    /// released.
    fn capturable(&self) -> Amount {
        if self.cancellation.is_some() {
            return Amount::ZERO;
        }
        self.total.saturating_sub(sum(&self.captures))
    }

    fn refundable(&self, now: Instant) -> Amount {
        self.captured(now).saturating_sub(sum(&self.refunds))
    }

    fn status(&self, now: Instant, sim_now: SystemTime) -> &'static str {
        let captured = self.captured(now);
        let refunded = sum(self.refunds.iter().filter(|a| a.completed(now)));
        if !refunded.is_zero() {
            return if refunded == captured {
                "Returned"
            } else {
                "PartReturned"
            };
        }
        if captured.is_zero() {
            if self.cancellation.as_ref().is_some_and(|c| c.completed(now)) {
                return "Cancelled";
            }
            if self.expires_at.is_some_and(|at| sim_now >= at) {
                return "Expired";
            }
            return "NotActivated";
        }
        if captured == self.total {
            "Activated"
        } else {
            "PartActivated"
        }
    }

    fn wire(&self, now: Instant, sim_now: SystemTime) -> wire::Order {
        let action = |a: &Action| wire::Action {
            action_reference: Some(a.reference.clone()),
            amount: a.amount.to_major(self.currency),
            status: if a.completed(now) {
                "Completed"
            } else {
                "Pending"
            }
            .into(),
            failure_reason: None,
        };
        wire::Order {
            id: self.id.clone(),
            reference: self.reference.clone(),
            status: self.status(now, sim_now).into(),
            total_amount: self.total.to_major(self.currency),
            currency: self.currency.code().into(),
            captures: self.captures.iter().map(action).collect(),
            refunds: self.refunds.iter().map(action).collect(),
            cancellation: self.cancellation.as_ref().map(action),
        }
    }
}

/// `POST /_sim/orders`.
#[derive(Debug, Deserialize)]
pub struct PlaceOrder {
    pub id: Option<String>,
    /// The merchant's reference of the order (the checkout's `reference`).
    #[serde(default)]
    pub reference: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub currency: String,
    #[serde(default)]
    pub invisible_for_ms: u64,
    #[serde(default)]
    pub processing_ms: u64,
    pub expires_in_seconds: Option<u64>,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// The simulation's routes.
pub fn router(credentials: Credentials) -> Router {
    let state = Shared::new(Walley {
        common: Common::default(),
        credentials,
        tokens: HashSet::new(),
        orders: BTreeMap::new(),
        answered: HashMap::new(),
        next_order: 1,
        settlements: Vec::new(),
        settled: HashSet::new(),
    });
    Router::new()
        .route("/oauth2/v2.0/token", post(token))
        .route("/manage/orders/{id}", get(read_order))
        .route("/manage/orders/{id}/{action}", post(act))
        .route("/_sim/orders", post(place_order))
        .route("/_sim/settlements", post(close_settlements))
        .route("/reports/settlements", get(list_settlements))
        .route(
            "/reports/settlements/{id}/transactions",
            get(settlement_lines),
        )
        .route("/_sim/clock", post(simulation::advance_clock::<Walley>))
        .route("/_sim/fail", post(simulation::fail_next::<Walley>))
        .route("/_sim/ledger", get(simulation::ledger::<Walley>))
        .with_state(state)
}

fn problem(status: u16, code: &str, title: &str) -> Response {
    answer(status, &json!({ "code": code, "title": title }))
}

async fn token(State(state): State<Shared<Walley>>, Form(form): Form<TokenRequest>) -> Response {
    let mut sim = state.lock();
    if form.grant_type != "client_credentials"
        || form.client_id != sim.credentials.client_id
        || form.client_secret != sim.credentials.client_secret
    {
        return answer(401, &json!({ "error": "invalid_client" }));
    }
    let token = uuid::Uuid::now_v7().simple().to_string();
    sim.tokens.insert(token.clone());
    answer(
        200,
        &TokenResponse {
            access_token: token,
            expires_in: 3600,
        },
    )
}

async fn place_order(
    State(state): State<Shared<Walley>>,
    Json(place): Json<PlaceOrder>,
) -> Response {
    let mut sim = state.lock();
    let Ok(currency) = Currency::parse(&place.currency) else {
        return problem(400, "INVALID_CURRENCY", "unknown currency");
    };
    let Some(total) = simulation::minor_units(place.amount, currency) else {
        return problem(
            400,
            "INVALID_AMOUNT",
            "the amount does not fit the currency",
        );
    };
    let id = place.id.unwrap_or_else(|| {
        sim.next_order += 1;
        format!("wo-{}", sim.next_order)
    });
    if sim.orders.contains_key(&id) {
        return problem(409, "ORDER_EXISTS", "an order with this id exists");
    }
    let now = sim.common.now();
    let order = Order {
        id: id.clone(),
        reference: place.reference,
        currency,
        total,
        visible_at: Instant::now() + Duration::from_millis(place.invisible_for_ms),
        processing: Duration::from_millis(place.processing_ms),
        expires_at: place
            .expires_in_seconds
            .map(|seconds| now + Duration::from_secs(seconds)),
        captures: Vec::new(),
        refunds: Vec::new(),
        cancellation: None,
        faults: place.faults,
    };
    sim.orders.insert(id.clone(), order);
    answer(201, &json!({ "id": id }))
}

/// Records the request and answers what comes before the order is looked
/// at: an injected failure or missing credentials.
fn admit(sim: &mut Walley, received: Received, headers: &HeaderMap) -> Option<Response> {
    sim.common.ledger.requests.push(received);
    if let Some(status) = sim.common.take_failure() {
        return Some(problem(status, "SIMULATED", "injected failure"));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| sim.tokens.contains(t)) {
        return Some(problem(401, "UNAUTHORIZED", "no valid access token"));
    }
    None
}

fn visible<'a>(sim: &'a mut Walley, id: &str) -> Option<&'a mut Order> {
    sim.orders
        .get_mut(id)
        .filter(|order| Instant::now() >= order.visible_at)
}

async fn read_order(
    State(state): State<Shared<Walley>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let received = Received {
        method: "GET".into(),
        path: format!("/manage/orders/{id}"),
        idempotency: None,
        body: String::new(),
    };
    let mut sim = state.lock();
    if let Some(refused) = admit(&mut sim, received, &headers) {
        return refused;
    }
    let sim_now = sim.common.now();
    match visible(&mut sim, &id) {
        Some(order) => answer(
            200,
            &OrderEnvelope {
                data: order.wire(Instant::now(), sim_now),
            },
        ),
        None => problem(404, "ORDER_NOT_FOUND", "no such order"),
    }
}

/// What a POST decided while the state was locked.
enum Outcome {
    Now(Response),
    /// Answered after [`HANG`]: the client has given up by then.
    Hang(Response),
}

async fn act(
    State(state): State<Shared<Walley>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let outcome = {
        let mut sim = state.lock();
        decide(&mut sim, &id, &action, &headers, &body)
    };
    match outcome {
        Outcome::Now(response) => response,
        Outcome::Hang(response) => {
            tokio::time::sleep(HANG).await;
            response
        }
    }
}

fn decide(sim: &mut Walley, id: &str, action: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let key = headers
        .get("x-idempotency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let received = Received {
        method: "POST".into(),
        path: format!("/manage/orders/{id}/{action}"),
        idempotency: key.clone(),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    if let Some(refused) = admit(sim, received, headers) {
        return Outcome::Now(refused);
    }
    let Some(key) = key else {
        return Outcome::Now(problem(
            400,
            "MISSING_IDEMPOTENCY",
            "X-Idempotency is required",
        ));
    };
    if let Some((status, body)) = sim.answered.get(&key) {
        return Outcome::Now(answer(*status, body));
    }
    let kind = match action {
        "captures" => "capture",
        "refunds" => "refund",
        "cancel" => "cancel",
        _ => return Outcome::Now(problem(404, "NOT_FOUND", "no such action")),
    };
    let sim_now = sim.common.now();
    let Some(order) = visible(sim, id) else {
        return Outcome::Now(problem(404, "ORDER_NOT_FOUND", "no such order"));
    };
    let effect = simulation::take_fault(&mut order.faults, kind);
    match effect {
        Some(Effect::Lost) => {
            return Outcome::Hang(problem(504, "LOST", "never processed"));
        }
        Some(Effect::Status(status)) => {
            return Outcome::Now(problem(status, "SIMULATED", "injected failure"));
        }
        Some(Effect::Decline) => {
            let declined = (
                422,
                json!({ "code": "DECLINED", "title": "declined by the simulation" }),
            );
            sim.answered.insert(key, declined.clone());
            return Outcome::Now(answer(declined.0, &declined.1));
        }
        // A slow Walley answers 202 at once and processes later.
        Some(Effect::Timeout | Effect::Alter | Effect::Slow(_)) | None => {}
    }
    let alter = effect == Some(Effect::Alter);
    let (status, answer_body, executed) = execute(order, kind, body, sim_now, alter);
    if let Some(executed) = executed {
        sim.common.ledger.executed.push(executed);
    }
    // Answers that executed or refused something are final for the key.
    if status < 500 {
        sim.answered.insert(key, (status, answer_body.clone()));
    }
    let response = answer(status, &answer_body);
    match effect {
        Some(Effect::Timeout) => Outcome::Hang(response),
        _ => Outcome::Now(response),
    }
}

/// Validates and books one action on the order.
fn execute(
    order: &mut Order,
    kind: &str,
    body: &[u8],
    sim_now: SystemTime,
    alter: bool,
) -> (u16, serde_json::Value, Option<Executed>) {
    let refuse = |status: u16, code: &str, title: &str| {
        (status, json!({ "code": code, "title": title }), None)
    };
    let now = Instant::now();
    if order.status(now, sim_now) == "Expired" {
        return refuse(422, "ORDER_EXPIRED", "the order expired");
    }
    let ready_at = now + order.processing;
    if kind == "cancel" {
        if order.cancellation.is_some() {
            return refuse(422, "ALREADY_CANCELLED", "the order is cancelled");
        }
        let remainder = order.capturable();
        if remainder.is_zero() {
            return refuse(422, "NOTHING_TO_CANCEL", "everything is captured");
        }
        order.cancellation = Some(Action {
            reference: String::new(),
            amount: remainder,
            ready_at,
            vat: Vec::new(),
        });
        let executed = Executed {
            on: order.id.clone(),
            kind: "cancel".into(),
            amount: remainder.to_major(order.currency).to_string(),
            reference: String::new(),
        };
        return (202, json!({ "status": "Pending" }), Some(executed));
    }
    let Ok(request) = serde_json::from_slice::<ActionRequest>(body) else {
        return refuse(400, "INVALID_REQUEST", "the body is not an action");
    };
    let Some(mut amount) = simulation::minor_units(request.amount, order.currency) else {
        return refuse(400, "INVALID_AMOUNT", "more decimals than the currency has");
    };
    if alter {
        // A partner that books another amount than it was asked.
        amount = Amount::from_minor(amount.minor() - 1)
            .ok()
            .filter(|a| !a.is_zero())
            .unwrap_or(amount);
    }
    if amount.is_zero() {
        return refuse(400, "INVALID_AMOUNT", "the amount must be positive");
    }
    if !request.items.is_empty() {
        let lines: Option<Decimal> = request.items.iter().try_fold(Decimal::ZERO, |total, item| {
            total.checked_add(item.unit_price.checked_mul(Decimal::from(item.quantity))?)
        });
        if lines != Some(request.amount) {
            return refuse(
                400,
                "ITEMS_MISMATCH",
                "the items do not add up to the amount",
            );
        }
    }
    let actions = if kind == "capture" {
        &order.captures
    } else {
        &order.refunds
    };
    // The same actionReference again executes nothing.
    if actions
        .iter()
        .any(|a| a.reference == request.action_reference)
    {
        return (202, json!({ "status": "Pending" }), None);
    }
    let left = match kind {
        "capture" => order.capturable(),
        _ => order.refundable(now),
    };
    if amount > left {
        return refuse(422, "AMOUNT_EXCEEDS_REMAINING", "more than is left");
    }
    let action = Action {
        reference: request.action_reference.clone(),
        amount,
        ready_at,
        vat: vat_per_rate(&request.items, order.currency),
    };
    match kind {
        "capture" => order.captures.push(action),
        _ => order.refunds.push(action),
    }
    let executed = Executed {
        on: order.id.clone(),
        kind: kind.into(),
        amount: amount.to_major(order.currency).to_string(),
        reference: request.action_reference,
    };
    (202, json!({ "status": "Pending" }), Some(executed))
}

/// VAT per rate of items priced with VAT: `gross × rate / (100 + rate)`,
/// rounded half away from zero to the currency's decimals.
fn vat_per_rate(items: &[wire::Item], currency: Currency) -> Vec<(Decimal, Decimal)> {
    let mut by_rate: BTreeMap<Decimal, Decimal> = BTreeMap::new();
    for item in items {
        let gross = item.unit_price * Decimal::from(item.quantity);
        let vat = (gross * item.vat / (Decimal::ONE_HUNDRED + item.vat)).round_dp_with_strategy(
            currency.exponent(),
            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
        );
        *by_rate.entry(item.vat.normalize()).or_default() += vat;
    }
    by_rate.into_iter().collect()
}

/// `POST /_sim/settlements`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CloseSettlements {
    /// `YYYY-MM-DD`; today by default.
    pub date: Option<String>,
    pub drop: Vec<String>,
    pub alter: BTreeMap<String, Decimal>,
    pub unknown: Vec<UnknownLine>,
    pub synthetic: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnknownLine {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub action_reference: String,
    #[serde(default = "purchase")]
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub currency: Option<String>,
}

fn purchase() -> String {
    "Purchase".into()
}

fn line(
    kind: &str,
    amount: Decimal,
    currency: Currency,
    order: &str,
    reference: &str,
    day: Day,
    vat: &[(Decimal, Decimal)],
) -> SettlementLine {
    let sign = if kind == "Return" {
        -Decimal::ONE
    } else {
        Decimal::ONE
    };
    SettlementLine {
        customer_number: String::new(),
        amount: amount * sign,
        purchase_date: Some(day.to_string()),
        transaction_date: Some(day.to_string()),
        invoice_number: format!("inv-{order}"),
        order_number: order.to_owned(),
        kind: kind.to_owned(),
        total_vat_amount_per_rate: vat
            .iter()
            .map(|(rate, amount)| VatPerRate {
                vat_rate: *rate,
                amount: *amount * sign,
            })
            .collect(),
        currency: currency.code().to_owned(),
        settlement_date: Some(day.to_string()),
        payout_reference: None,
        action_reference: Some(reference.to_owned()),
        order_id: Some(order.to_owned()),
    }
}

async fn close_settlements(
    State(state): State<Shared<Walley>>,
    Json(close): Json<CloseSettlements>,
) -> Response {
    let mut sim = state.lock();
    let sim_now = sim.common.now();
    let day = match close.date.as_deref() {
        Some(text) => match text.parse::<Day>() {
            Ok(day) => day,
            Err(_) => return problem(400, "INVALID_DATE", "date must be YYYY-MM-DD"),
        },
        None => Day::of(sim_now),
    };
    let now = Instant::now();
    let mut lines: Vec<SettlementLine> = Vec::new();
    let mut newly_settled = Vec::new();
    for order in sim.orders.values() {
        for (kind, actions) in [("Purchase", &order.captures), ("Return", &order.refunds)] {
            for action in actions.iter().filter(|a| a.completed(now)) {
                let key = format!("{kind}:{}", action.reference);
                if sim.settled.contains(&key) {
                    continue;
                }
                newly_settled.push(key);
                if close.drop.contains(&action.reference) {
                    continue;
                }
                let amount = close
                    .alter
                    .get(&action.reference)
                    .copied()
                    .unwrap_or_else(|| action.amount.to_major(order.currency));
                lines.push(line(
                    kind,
                    amount,
                    order.currency,
                    &order.id,
                    &action.reference,
                    day,
                    &action.vat,
                ));
            }
        }
    }
    sim.settled.extend(newly_settled);
    for unknown in &close.unknown {
        let currency = unknown
            .currency
            .as_deref()
            .and_then(|c| Currency::parse(c).ok())
            .or_else(|| {
                lines
                    .first()
                    .and_then(|l| Currency::parse(&l.currency).ok())
            })
            .unwrap_or_else(|| Currency::parse("SEK").unwrap_or_else(|_| unreachable!()));
        lines.push(line(
            &unknown.kind,
            unknown.amount,
            currency,
            "unknown-order",
            &unknown.action_reference,
            day,
            &[],
        ));
    }
    let synthetic_currency = lines
        .first()
        .and_then(|l| Currency::parse(&l.currency).ok())
        .or_else(|| Currency::parse("SEK").ok());
    if let Some(currency) = synthetic_currency {
        for n in 0..close.synthetic {
            lines.push(line(
                "Purchase",
                Decimal::ONE,
                currency,
                &format!("synthetic-order-{n}"),
                &format!("synthetic-{}-{n}", sim.settlements.len()),
                day,
                &[(Decimal::from(25), Decimal::new(20, 2))],
            ));
        }
    }
    let mut by_currency: BTreeMap<String, Vec<SettlementLine>> = BTreeMap::new();
    for line in lines {
        by_currency
            .entry(line.currency.clone())
            .or_default()
            .push(line);
    }
    let mut ids = Vec::new();
    for (currency, lines) in by_currency {
        let id = (sim.settlements.len() + 1).to_string();
        let captured: Decimal = lines
            .iter()
            .filter(|l| l.kind == "Purchase")
            .map(|l| l.amount)
            .sum();
        let refunded: Decimal = lines
            .iter()
            .filter(|l| l.kind == "Return")
            .map(|l| l.amount)
            .sum();
        let date = format!("{day}T00:00:00");
        sim.settlements.push(ClosedSettlement {
            summary: SettlementSummary {
                id: id.clone(),
                start_date: date.clone(),
                end_date: date,
                store_id: 1,
                currency,
                total_amount: captured + refunded,
                captured,
                refunded,
                reference: format!("PAYOUT-{id}"),
                paid_out_at: None,
            },
            lines,
        });
        ids.push(id);
    }
    answer(201, &json!({ "settlements": ids }))
}

/// `page` and `perPage` as Walley reads them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    page: Option<String>,
    per_page: Option<String>,
    query: Option<String>,
}

impl Paging {
    /// `(page, perPage)`, or `None` for a malformed query.
    fn numbers(&self, max_per_page: u64) -> Option<(u64, u64)> {
        let page = self.page.as_deref().map_or(Some(1), |p| p.parse().ok())?;
        let per_page = self
            .per_page
            .as_deref()
            .map_or(Some(10), |p| p.parse().ok())?;
        (page >= 1 && (1..=max_per_page).contains(&per_page)).then_some((page, per_page))
    }
}

fn paged<T: Clone + serde::Serialize>(
    all: &[T],
    page: u64,
    per_page: u64,
    path: &str,
) -> ReportPage<T> {
    let total = all.len() as u64;
    let pages = total.div_ceil(per_page).max(1);
    let from = (page - 1).saturating_mul(per_page);
    let data: Vec<T> = all
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let link = |page: u64| {
        let query = format!("page={page}&perPage={per_page}");
        Link {
            method: "GET".into(),
            href: format!("{path}?{query}"),
            query,
        }
    };
    ReportPage {
        links: Links {
            this: Some(link(page)),
            next: (page < pages).then(|| link(page + 1)),
        },
        meta_data: MetaData {
            total_number_of_records: total,
            number_of_pages: u32::try_from(pages).unwrap_or(u32::MAX),
            current_page: u32::try_from(page).unwrap_or(u32::MAX),
            range: wire::Range {
                from: (from + 1).min(total),
                to: from + data.len() as u64,
            },
        },
        data,
    }
}

async fn list_settlements(
    State(state): State<Shared<Walley>>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    let received = Received {
        method: "GET".into(),
        path: "/reports/settlements".into(),
        idempotency: None,
        body: String::new(),
    };
    let mut sim = state.lock();
    if let Some(refused) = admit(&mut sim, received, &headers) {
        return refused;
    }
    let since = match paging.query.as_deref() {
        None => None,
        Some(query) => match query
            .strip_prefix("startDate:>=")
            .and_then(|day| day.parse::<Day>().ok())
        {
            Some(day) => Some(day),
            None => return problem(422, "INVALID_QUERY", "Query with incorrect format"),
        },
    };
    let Some((page, per_page)) = paging.numbers(1000) else {
        return problem(422, "INVALID_QUERY", "Query with incorrect format");
    };
    let listed: Vec<SettlementSummary> = sim
        .settlements
        .iter()
        .map(|s| s.summary.clone())
        .filter(|s| {
            since.is_none_or(|since| wire::report_day(&s.start_date).is_some_and(|d| d >= since))
        })
        .collect();
    answer(200, &paged(&listed, page, per_page, "/reports/settlements"))
}

async fn settlement_lines(
    State(state): State<Shared<Walley>>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/reports/settlements/{id}/transactions");
    let received = Received {
        method: "GET".into(),
        path: path.clone(),
        idempotency: None,
        body: String::new(),
    };
    let mut sim = state.lock();
    if let Some(refused) = admit(&mut sim, received, &headers) {
        return refused;
    }
    let Some((page, per_page)) = paging.numbers(25_000) else {
        return problem(422, "INVALID_QUERY", "Query with incorrect format");
    };
    let Some(settlement) = sim.settlements.iter().find(|s| s.summary.id == id) else {
        return problem(404, "NOT_FOUND", "Transactions not found");
    };
    let listed = paged(&settlement.lines, page, per_page, &path);
    let csv = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if csv {
        return ([("content-type", "text/csv")], report_csv(&listed.data)).into_response();
    }
    answer(200, &listed)
}

/// Lines as CSV: the JSON fields as columns, VAT as `rate:amount` pairs
/// joined by `|`.
pub fn report_csv(lines: &[SettlementLine]) -> String {
    let mut csv = String::from(
        "orderNumber,orderId,type,amount,currency,transactionDate,actionReference,totalVatAmountPerRate\n",
    );
    for line in lines {
        let vat: Vec<String> = line
            .total_vat_amount_per_rate
            .iter()
            .map(|v| format!("{}:{}", v.vat_rate, v.amount))
            .collect();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            line.order_number,
            line.order_id.as_deref().unwrap_or(""),
            line.kind,
            line.amount,
            line.currency,
            line.transaction_date.as_deref().unwrap_or(""),
            line.action_reference.as_deref().unwrap_or(""),
            vat.join("|"),
        ));
    }
    csv
}
