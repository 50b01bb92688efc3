//! The handlers of the order management API: tokens, orders placed by the
//! simulated checkout, reading an order, and its captures, refunds and
//! cancellation.

use std::time::Instant;

use axum::{
    Form, Json,
    extract::{Path, State, rejection::FormRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    orders::{self, Answer, Kind, Order, PathForm, PlaceOrder, Walley},
    wire::{Empty, OrderEnvelope, Problem, TokenRequest, TokenResponse},
};
use crate::simulation::{self, Effect, HANG, Received, Shared, answer};
use payment_orchestrator::domain::money::Currency;

pub(super) fn problem(status: u16, code: &str, title: &str) -> Response {
    answer(status, &Problem::new(code, title))
}

fn respond(reply: &Answer) -> Response {
    match reply {
        Answer::Accepted { location } => (
            axum::http::StatusCode::ACCEPTED,
            [(axum::http::header::LOCATION, location.clone())],
        )
            .into_response(),
        Answer::Refused(status, body) => answer(*status, body),
    }
}

pub(super) async fn token(
    State(state): State<Shared<Walley>>,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    // A form that is not the documented one (a misspelt or extra field).
    let Ok(Form(form)) = form else {
        return answer(400, &json!({ "error": "invalid_request" }));
    };
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
            token_type: "Bearer",
            expires_in: 3600,
        },
    )
}

pub(super) async fn place_order(
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
    let id = place.id.clone().unwrap_or_else(|| {
        sim.next_order += 1;
        format!("wo-{}", sim.next_order)
    });
    if sim.orders.contains_key(&id) {
        return problem(409, "ORDER_EXISTS", "an order with this id exists");
    }
    let now = sim.common.now();
    let order = place.into_order(id.clone(), currency, total, now);
    sim.orders.insert(id.clone(), order);
    answer(201, &json!({ "id": id }))
}

/// Records the request and answers what comes before the order is looked
/// at: an injected failure or missing credentials.
pub(super) fn admit(sim: &mut Walley, received: Received, headers: &HeaderMap) -> Option<Response> {
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

pub(super) async fn read_order(
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
                links: Empty {},
                meta_data: Empty {},
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

/// `POST /manage/orders/{id}/{capture|refund|cancel}`, as Walley's public
/// order-management pages show it.
pub(super) async fn act_managed(
    state: State<Shared<Walley>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    act(state, PathForm::Managed, id, action, headers, body).await
}

/// `POST /orders/{id}/{captures|refunds}`, as the partner documentation
/// this project follows shows it.
pub(super) async fn act_on_order(
    state: State<Shared<Walley>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    act(state, PathForm::Orders, id, action, headers, body).await
}

async fn act(
    State(state): State<Shared<Walley>>,
    form: PathForm,
    id: String,
    action: String,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let outcome = {
        let mut sim = state.lock();
        decide(&mut sim, form, &id, &action, &headers, &body)
    };
    match outcome {
        Outcome::Now(response) => response,
        Outcome::Hang(response) => {
            tokio::time::sleep(HANG).await;
            response
        }
    }
}

fn decide(
    sim: &mut Walley,
    form: PathForm,
    id: &str,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let key = headers
        .get("x-idempotency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let received = Received {
        method: "POST".into(),
        path: form.path(id, action),
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
    if let Some(reply) = sim.answered.get(&key) {
        return Outcome::Now(respond(reply));
    }
    let Some(kind) = Kind::of_path(form, action) else {
        return Outcome::Now(problem(404, "NOT_FOUND", "no such action"));
    };
    let sim_now = sim.common.now();
    let Some(order) = visible(sim, id) else {
        return Outcome::Now(problem(404, "ORDER_NOT_FOUND", "no such order"));
    };
    let effect = simulation::take_fault(&mut order.faults, kind.name());
    match effect {
        Some(Effect::Lost) => {
            return Outcome::Hang(problem(504, "LOST", "never processed"));
        }
        Some(Effect::Status(status)) => {
            return Outcome::Now(problem(status, "SIMULATED", "injected failure"));
        }
        Some(Effect::Decline) => {
            let declined = Answer::refused(422, "DECLINED", "declined by the simulation");
            let response = respond(&declined);
            sim.answered.insert(key, declined);
            return Outcome::Now(response);
        }
        // A slow Walley answers 202 at once and processes later.
        Some(Effect::Timeout | Effect::Alter | Effect::Slow(_)) | None => {}
    }
    let alter = effect == Some(Effect::Alter);
    let (reply, executed) = orders::execute(order, kind, body, sim_now, alter);
    if let Some(executed) = executed {
        sim.common.ledger.executed.push(executed);
    }
    // Answers that executed or refused something are final for the key.
    let response = respond(&reply);
    sim.answered.insert(key, reply);
    match effect {
        Some(Effect::Timeout) => Outcome::Hang(response),
        _ => Outcome::Now(response),
    }
}
