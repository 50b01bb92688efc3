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
//!   `reference_id` (and `state`).
//! - Request bodies are read with the simulation's own structs ([`wire`],
//!   from WePay's reference): an argument WePay does not define is `400`.
//! - A checkout still `new` 30 minutes after its creation is `expired`; one
//!   reserved and not captured for 14 days is `cancelled` (simulation time).
//! - `POST /_sim/charge_back` `{"checkout_id", "amount"?}` has the card
//!   holder's bank take back a captured checkout's amount (all of it by
//!   default): the checkout reads `charged back` with `amount_charged_back`;
//!   `"amount": "0"` gives it back (the dispute won: `captured` again).
//!
//! The files: [`wire`] (the bodies), `checkouts` (the state and how each
//! call changes it) and this one (the routes and what every call shares).

mod checkouts;
pub mod wire;

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;

use crate::simulation::{self, Effect, Fault, HANG, Received, Shared, answer};
pub use checkouts::Wepay;
use checkouts::{Card, Change};
use wire::{CheckoutLookup, CreateCheckout, ErrorBody, FindCheckouts};

/// The account the simulation serves.
#[derive(Debug, Clone)]
pub struct Account {
    pub account_id: i64,
    pub access_token: String,
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
    let state = Shared::new(Wepay::new(account));
    Router::new()
        .route("/checkout", post(call))
        .route("/checkout/{call}", post(call))
        .route("/_sim/credit_cards", post(tokenize))
        .route("/_sim/checkouts/{id}/complete", post(complete_hosted))
        .route("/_sim/charge_back", post(charge_back))
        .route("/_sim/clock", post(simulation::advance_clock::<Wepay>))
        .route("/_sim/fail", post(simulation::fail_next::<Wepay>))
        .route("/_sim/ledger", get(simulation::ledger::<Wepay>))
        .with_state(state)
}

fn error(status: u16, code: i64, description: &str) -> Response {
    answer(
        status,
        &ErrorBody {
            error: "invalid_request",
            error_description: description.to_owned(),
            error_code: code,
        },
    )
}

/// `POST /_sim/checkouts/{id}/complete`: the shopper pays a hosted
/// checkout on WePay's page; WePay then posts its IPN (`checkout_id=<id>`,
/// a form) to the checkout's `callback_uri` before this answers, unless
/// `{"notify": false}`.
async fn complete_hosted(
    State(state): State<Shared<Wepay>>,
    Path(id): Path<i64>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    let notify = body.is_none_or(|Json(body)| body["notify"] != false);
    let callback = match checkouts::complete_hosted(&mut state.lock(), id) {
        Ok(callback) => callback.filter(|_| notify),
        Err((status, why)) => return error(status, 1008, why),
    };
    let notified = match callback {
        Some(uri) => reqwest::Client::new()
            .post(&uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("checkout_id={id}"))
            .send()
            .await
            .map_or(serde_json::json!("unreachable"), |r| {
                serde_json::json!(r.status().as_u16())
            }),
        None => serde_json::Value::Null,
    };
    answer(
        200,
        &serde_json::json!({ "checkout_id": id, "state": "authorized", "notified": notified }),
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
    answer(201, &serde_json::json!({ "credit_card_id": id }))
}

/// `POST /_sim/charge_back`: `{"checkout_id", "amount"?}` (a decimal
/// string; all of it by default; `"0"` gives it back).
#[derive(Debug, serde::Deserialize)]
struct ChargeBack {
    checkout_id: i64,
    #[serde(default)]
    amount: Option<rust_decimal::Decimal>,
}

async fn charge_back(
    State(state): State<Shared<Wepay>>,
    Json(request): Json<ChargeBack>,
) -> Response {
    let mut sim = state.lock();
    let account = sim.account.account_id;
    let Some(checkout) = sim.checkouts.get_mut(&request.checkout_id) else {
        return error(404, 1008, "no such checkout");
    };
    match checkout.charge_back(request.amount) {
        Ok(()) => answer(200, &checkout.wire(account)),
        Err(why) => error(400, 1004, why),
    }
}

/// What a call decided while the state was locked.
enum Outcome {
    Now(Response),
    Hang(Response),
    /// Executed (then answered) after a while: a slow partner.
    Later(Duration, Change),
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
            match checkouts::apply_change(&mut sim, change, None) {
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
        "" => match serde_json::from_slice::<CheckoutLookup>(body) {
            Ok(read) => Outcome::Now(checkouts::read_checkout(sim, read.checkout_id)),
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
                    .filter(|c| {
                        find.reference_id
                            .as_ref()
                            .is_none_or(|r| c.reference_id == *r)
                    })
                    .filter(|c| find.state.as_ref().is_none_or(|s| c.state == s.as_str()))
                    .map(|c| c.wire(sim.account.account_id))
                    .collect();
                Outcome::Now(answer(200, &found))
            }
            Err(_) => bad_body(),
        },
        "create" => match serde_json::from_slice::<CreateCheckout>(body) {
            Ok(create) => checkouts::create_checkout(sim, create, sim_now),
            Err(_) => bad_body(),
        },
        "capture" | "cancel" | "refund" => checkouts::change(sim, call, body),
        _ => Outcome::Now(error(404, 1004, "no such call")),
    }
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
