//! A simulation of Walley's order management API, as the connector in
//! `partners::walley` uses it.
//!
//! - `POST /oauth2/v2.0/token` (form, client credentials) issues bearer tokens;
//!   every other call needs one (`401` otherwise).
//! - Orders are placed with `POST /_sim/orders` (as the shopper's checkout
//!   would): `{"id"?, "amount", "currency", "invisible_for_ms"?,
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
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::{Common, Effect, Executed, Fault, HANG, Received, Shared, Simulation, answer};
use crate::{
    domain::money::{Amount, Currency},
    partners::walley::wire::{self, ActionRequest, OrderEnvelope, TokenRequest, TokenResponse},
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
}

impl Simulation for Walley {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[derive(Debug)]
struct Order {
    id: String,
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
            reference: String::new(),
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
    });
    Router::new()
        .route("/oauth2/v2.0/token", post(token))
        .route("/manage/orders/{id}", get(read_order))
        .route("/manage/orders/{id}/{action}", post(act))
        .route("/_sim/orders", post(place_order))
        .route("/_sim/clock", post(super::advance_clock::<Walley>))
        .route("/_sim/fail", post(super::fail_next::<Walley>))
        .route("/_sim/ledger", get(super::ledger::<Walley>))
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
    let Some(total) = super::minor_units(place.amount, currency) else {
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
    let effect = super::take_fault(&mut order.faults, kind);
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
        Some(Effect::Timeout) | None => {}
    }
    let (status, answer_body, executed) = execute(order, kind, body, sim_now);
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
    let Some(amount) = super::minor_units(request.amount, order.currency) else {
        return refuse(400, "INVALID_AMOUNT", "more decimals than the currency has");
    };
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
    };
    match kind {
        "capture" => order.captures.push(action),
        _ => order.refunds.push(action),
    }
    let executed = Executed {
        on: order.id.clone(),
        kind: kind.into(),
        amount: request.amount.to_string(),
        reference: request.action_reference,
    };
    (202, json!({ "status": "Pending" }), Some(executed))
}
