//! A simulation of WePay's checkout API (v2), as the connector in
//! `partners::wepay` uses it.
//!
//! - Every call needs `Authorization: Bearer <access token>` (`401`
//!   otherwise) and, where the body names one, the simulation's account
//!   (`403`).
//! - Cards are tokenized with `POST /_sim/credit_cards` (as the shopper's
//!   browser would): `{"processing_ms"?, "faults"?}` → `{"credit_card_id"}`.
//!   Any other card id of digits is a card that works.
//! - `/checkout/create` with `auto_capture=false` reserves the amount
//!   (`authorized`; `new` for `processing_ms` first). A second create with
//!   the same `unique_id` answers the first checkout and creates nothing.
//! - `/checkout/capture` captures the whole checkout, once; `/checkout/cancel`
//!   releases an uncaptured one; `/checkout/refund` refunds an amount (all
//!   that is left when absent). WePay has no idempotency key for these: a
//!   refund sent twice is executed twice.
//! - `/checkout` reads a checkout, `/checkout/find` finds checkouts by
//!   `reference_id`.
//! - A checkout still `new` 30 minutes after its creation is `expired`; one
//!   reserved and not captured for 14 days is `cancelled` (simulation time).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use crate::simulation::{
    self, Common, Effect, Executed, Fault, HANG, Received, Shared, Simulation, answer,
};
use payment_orchestrator::{
    domain::money::{Amount, Currency},
    partners::wepay::wire::{
        self, CancelCheckout, CheckoutId, CreateCheckout, FindCheckouts, RefundCheckout,
        StateAnswer,
    },
};

/// A checkout still `new` after this expires.
const NEW_EXPIRES_AFTER: Duration = Duration::from_secs(30 * 60);
/// A reserved checkout not captured after this is cancelled.
const RESERVED_CANCELLED_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

/// The account the simulation serves.
#[derive(Debug, Clone)]
pub struct Account {
    pub account_id: i64,
    pub access_token: String,
}

#[derive(Debug)]
pub struct Wepay {
    common: Common,
    account: Account,
    cards: HashMap<i64, Card>,
    checkouts: BTreeMap<i64, Checkout>,
    by_unique_id: HashMap<String, i64>,
    next_card: i64,
    next_checkout: i64,
}

impl Simulation for Wepay {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[derive(Debug, Default)]
struct Card {
    processing: Duration,
    faults: Vec<Fault>,
}

#[derive(Debug)]
struct Checkout {
    id: i64,
    card: i64,
    currency: Currency,
    amount: Amount,
    refunded: Amount,
    reference_id: String,
    /// `new`, `authorized`, `captured`, `cancelled`, `refunded`, `expired`.
    state: &'static str,
    decided_at: Instant,
    created_at: SystemTime,
}

impl Checkout {
    /// Moves the state on with time.
    fn age(&mut self, sim_now: SystemTime) {
        let age = sim_now
            .duration_since(self.created_at)
            .unwrap_or(Duration::ZERO);
        if self.state == "new" {
            if Instant::now() >= self.decided_at {
                self.state = "authorized";
            } else if age >= NEW_EXPIRES_AFTER {
                self.state = "expired";
            }
        }
        if self.state == "authorized" && age >= RESERVED_CANCELLED_AFTER {
            self.state = "cancelled";
        }
    }

    fn wire(&self, account_id: i64) -> wire::Checkout {
        wire::Checkout {
            checkout_id: self.id,
            account_id,
            state: self.state.into(),
            amount: self.amount.to_major(self.currency),
            currency: self.currency.code().into(),
            reference_id: self.reference_id.clone(),
            amount_refunded: self.refunded.to_major(self.currency),
        }
    }
}

/// `POST /_sim/credit_cards`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenizeCard {
    #[serde(default)]
    pub processing_ms: u64,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// The simulation's routes.
pub fn router(account: Account) -> Router {
    let state = Shared::new(Wepay {
        common: Common::default(),
        account,
        cards: HashMap::new(),
        checkouts: BTreeMap::new(),
        by_unique_id: HashMap::new(),
        next_card: 4_000_000_000,
        next_checkout: 1_000_000,
    });
    Router::new()
        .route("/checkout", post(call))
        .route("/checkout/{call}", post(call))
        .route("/_sim/credit_cards", post(tokenize))
        .route("/_sim/clock", post(simulation::advance_clock::<Wepay>))
        .route("/_sim/fail", post(simulation::fail_next::<Wepay>))
        .route("/_sim/ledger", get(simulation::ledger::<Wepay>))
        .with_state(state)
}

fn error(status: u16, code: i64, description: &str) -> Response {
    answer(
        status,
        &json!({
            "error": "invalid_request",
            "error_description": description,
            "error_code": code,
        }),
    )
}

async fn tokenize(State(state): State<Shared<Wepay>>, Json(card): Json<TokenizeCard>) -> Response {
    let mut sim = state.lock();
    sim.next_card += 1;
    let id = sim.next_card;
    sim.cards.insert(
        id,
        Card {
            processing: Duration::from_millis(card.processing_ms),
            faults: card.faults,
        },
    );
    answer(201, &json!({ "credit_card_id": id }))
}

/// What a call decided while the state was locked.
enum Outcome {
    Now(Response),
    Hang(Response),
    /// Executed (then answered) after a while: a slow partner.
    Later(Duration, Change),
}

/// A capture, cancel or refund of one checkout, checked and ready to apply.
struct Change {
    id: i64,
    call: String,
    refund: Option<Option<Decimal>>,
}

async fn call(
    State(state): State<Shared<Wepay>>,
    path: Option<Path<String>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let call = path.map(|Path(call)| call).unwrap_or_default();
    let outcome = {
        let mut sim = state.lock();
        decide(&mut sim, &call, &headers, &body)
    };
    match outcome {
        Outcome::Now(response) => response,
        Outcome::Hang(response) => {
            tokio::time::sleep(HANG).await;
            response
        }
        Outcome::Later(after, change) => {
            tokio::time::sleep(after).await;
            let mut sim = state.lock();
            match apply_change(&mut sim, change, None) {
                Outcome::Now(response) | Outcome::Hang(response) => response,
                Outcome::Later(..) => error(500, 0, "a slow change stays slow"),
            }
        }
    }
}

fn decide(sim: &mut Wepay, call: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    sim.common.ledger.requests.push(Received {
        method: "POST".into(),
        path: if call.is_empty() {
            "/checkout".into()
        } else {
            format!("/checkout/{call}")
        },
        idempotency: None,
        body: String::from_utf8_lossy(body).into_owned(),
    });
    if let Some(status) = sim.common.take_failure() {
        return Outcome::Now(error(status, 0, "injected failure"));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(sim.account.access_token.as_str()) {
        return Outcome::Now(error(401, 1001, "invalid access token"));
    }
    let sim_now = sim.common.now();
    for checkout in sim.checkouts.values_mut() {
        checkout.age(sim_now);
    }
    let bad_body = || Outcome::Now(error(400, 1003, "the body does not parse"));
    match call {
        "" => match serde_json::from_slice::<CheckoutId>(body) {
            Ok(read) => Outcome::Now(read_checkout(sim, read.checkout_id)),
            Err(_) => bad_body(),
        },
        "find" => match serde_json::from_slice::<FindCheckouts>(body) {
            Ok(find) if find.account_id != sim.account.account_id => {
                Outcome::Now(error(403, 1002, "not your account"))
            }
            Ok(find) => {
                let found: Vec<wire::Checkout> = sim
                    .checkouts
                    .values()
                    .filter(|c| c.reference_id == find.reference_id)
                    .map(|c| c.wire(sim.account.account_id))
                    .collect();
                Outcome::Now(answer(200, &found))
            }
            Err(_) => bad_body(),
        },
        "create" => match serde_json::from_slice::<CreateCheckout>(body) {
            Ok(create) => create_checkout(sim, create, sim_now),
            Err(_) => bad_body(),
        },
        "capture" | "cancel" | "refund" => change(sim, call, body),
        _ => Outcome::Now(error(404, 1004, "no such call")),
    }
}

fn read_checkout(sim: &Wepay, id: i64) -> Response {
    match sim.checkouts.get(&id) {
        Some(checkout) => answer(200, &checkout.wire(sim.account.account_id)),
        None => error(404, 1008, "no such checkout"),
    }
}

/// Applies a card's fault for `call`: `Some` answers instead of executing
/// (or, for `timeout`, the caller executes and then hangs).
fn fault(sim: &mut Wepay, card: i64, call: &str) -> Option<Effect> {
    let card = sim.cards.get_mut(&card)?;
    simulation::take_fault(&mut card.faults, call)
}

fn refusal(effect: Option<Effect>) -> Option<Outcome> {
    match effect? {
        Effect::Lost => Some(Outcome::Hang(error(504, 0, "never processed"))),
        Effect::Status(status) => Some(Outcome::Now(error(status, 0, "injected failure"))),
        Effect::Decline => Some(Outcome::Now(error(402, 2004, "declined by the simulation"))),
        Effect::Timeout | Effect::Alter | Effect::Slow(_) => None,
    }
}

fn finish(effect: Option<Effect>, response: Response) -> Outcome {
    match effect {
        Some(Effect::Timeout) => Outcome::Hang(response),
        _ => Outcome::Now(response),
    }
}

fn create_checkout(sim: &mut Wepay, create: CreateCheckout, sim_now: SystemTime) -> Outcome {
    if create.account_id != sim.account.account_id {
        return Outcome::Now(error(403, 1002, "not your account"));
    }
    if let Some(id) = sim.by_unique_id.get(&create.unique_id) {
        return Outcome::Now(read_checkout(sim, *id));
    }
    let Ok(currency) = Currency::parse(&create.currency) else {
        return Outcome::Now(error(400, 1003, "unknown currency"));
    };
    let amount = simulation::minor_units(create.amount, currency).filter(|a| !a.is_zero());
    let Some(amount) = amount else {
        return Outcome::Now(error(400, 1003, "the amount does not fit the currency"));
    };
    if create.auto_capture {
        return Outcome::Now(error(400, 1003, "the simulation serves auto_capture=false"));
    }
    let card = create.payment_method.credit_card.id;
    let effect = fault(sim, card, "create");
    if let Some(outcome) = refusal(effect) {
        return outcome;
    }
    let processing = sim
        .cards
        .get(&card)
        .map_or(Duration::ZERO, |c| c.processing);
    sim.next_checkout += 1;
    let id = sim.next_checkout;
    // A partner that books another amount than it was asked.
    let amount = match effect {
        Some(Effect::Alter) => Amount::from_minor(amount.minor() - 1)
            .ok()
            .filter(|a| !a.is_zero())
            .unwrap_or(amount),
        _ => amount,
    };
    let checkout = Checkout {
        id,
        card,
        currency,
        amount,
        refunded: Amount::ZERO,
        reference_id: create.reference_id,
        state: if processing.is_zero() {
            "authorized"
        } else {
            "new"
        },
        decided_at: Instant::now() + processing,
        created_at: sim_now,
    };
    let response = answer(200, &checkout.wire(sim.account.account_id));
    sim.common.ledger.executed.push(Executed {
        on: id.to_string(),
        kind: "authorize".into(),
        amount: major_string(amount, currency),
        reference: create.unique_id.clone(),
    });
    sim.by_unique_id.insert(create.unique_id, id);
    sim.checkouts.insert(id, checkout);
    finish(effect, response)
}

/// Capture, cancel or refund of one checkout.
fn change(sim: &mut Wepay, call: &str, body: &[u8]) -> Outcome {
    let (id, refund) = match call {
        "refund" => match serde_json::from_slice::<RefundCheckout>(body) {
            Ok(refund) => (refund.checkout_id, Some(refund.amount)),
            Err(_) => return Outcome::Now(error(400, 1003, "the body does not parse")),
        },
        "cancel" => match serde_json::from_slice::<CancelCheckout>(body) {
            Ok(cancel) => (cancel.checkout_id, None),
            Err(_) => return Outcome::Now(error(400, 1003, "the body does not parse")),
        },
        _ => match serde_json::from_slice::<CheckoutId>(body) {
            Ok(capture) => (capture.checkout_id, None),
            Err(_) => return Outcome::Now(error(400, 1003, "the body does not parse")),
        },
    };
    let Some(card) = sim.checkouts.get(&id).map(|c| c.card) else {
        return Outcome::Now(error(404, 1008, "no such checkout"));
    };
    let effect = fault(sim, card, call);
    if let Some(outcome) = refusal(effect) {
        return outcome;
    }
    let change = Change {
        id,
        call: call.to_owned(),
        refund,
    };
    if let Some(Effect::Slow(ms)) = effect {
        return Outcome::Later(Duration::from_millis(ms), change);
    }
    apply_change(sim, change, effect)
}

/// Executes a checked capture, cancel or refund.
fn apply_change(sim: &mut Wepay, change: Change, effect: Option<Effect>) -> Outcome {
    let Change { id, call, refund } = change;
    let call = call.as_str();
    let Some(checkout) = sim.checkouts.get_mut(&id) else {
        return Outcome::Now(error(404, 1008, "no such checkout"));
    };
    let executed_amount = match (call, refund) {
        ("capture", _) if checkout.state == "authorized" => {
            checkout.state = "captured";
            checkout.amount
        }
        ("cancel", _) if checkout.state == "authorized" => {
            checkout.state = "cancelled";
            checkout.amount
        }
        ("refund", Some(amount)) if checkout.state == "captured" => {
            let left = checkout.amount.saturating_sub(checkout.refunded);
            let amount = match amount {
                None => Some(left),
                Some(major) => simulation::minor_units(major, checkout.currency),
            };
            let Some(amount) = amount.filter(|a| !a.is_zero() && *a <= left) else {
                return Outcome::Now(error(400, 4005, "the refund amount is not refundable"));
            };
            checkout.refunded = checkout.refunded.checked_add(amount).unwrap_or(left);
            if checkout.refunded == checkout.amount {
                checkout.state = "refunded";
            }
            amount
        }
        _ => {
            let message = format!("the checkout is {}", checkout.state);
            return Outcome::Now(error(400, 4004, &message));
        }
    };
    let executed = Executed {
        on: id.to_string(),
        kind: call.into(),
        amount: major_string(executed_amount, checkout.currency),
        reference: String::new(),
    };
    let response = answer(
        200,
        &StateAnswer {
            checkout_id: id,
            state: checkout.state.into(),
        },
    );
    sim.common.ledger.executed.push(executed);
    finish(effect, response)
}

fn major_string(amount: Amount, currency: Currency) -> String {
    let major: Decimal = amount.to_major(currency);
    major.to_string()
}
