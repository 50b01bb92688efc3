//! Walley Checkout, as the simulation serves it: `POST /checkouts` opens a
//! checkout (its `privateId` and the iframe's `publicToken`), `GET
//! /checkouts/{privateId}` reads it, and `POST
//! /_sim/checkouts/{privateId}/complete` is the shopper completing it: the
//! order is placed (under the checkout's reference, for its cart's total)
//! and the `notificationUri` is called before the answer.

use std::time::{Duration, SystemTime};

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::{
    orders::{Checkout, PlaceOrder, Walley},
    routes::{admit, problem},
    wire::InitCheckout,
};
use crate::simulation::{self, Fault, Received, Shared, answer};
use payment_orchestrator::domain::money::Currency;

/// A checkout not completed by then is `Expired` (simulation time).
const CHECKOUT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The currency of a store's country.
fn currency_of(country: &str) -> Option<Currency> {
    let code = match country {
        "SE" => "SEK",
        "NO" => "NOK",
        "DK" => "DKK",
        "FI" | "DE" => "EUR",
        _ => return None,
    };
    Currency::parse(code).ok()
}

fn rfc3339(time: SystemTime) -> String {
    prost_types::Timestamp::from(time).to_string()
}

fn received(method: &str, path: String, body: &[u8]) -> Received {
    Received {
        method: method.into(),
        path,
        idempotency: None,
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

pub(super) async fn open(
    State(state): State<Shared<Walley>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let mut sim = state.lock();
    if let Some(refused) = admit(
        &mut sim,
        received("POST", "/checkouts".into(), &body),
        &headers,
    ) {
        return refused;
    }
    // A body that is not the documented one (a misspelt or extra field).
    let Ok(init) = serde_json::from_slice::<InitCheckout>(&body) else {
        return problem(
            400,
            "VALIDATION_ERROR",
            "the body is not an Initialize Checkout",
        );
    };
    let Some(currency) = currency_of(&init.country_code) else {
        return problem(400, "INVALID_COUNTRY", "unknown countryCode");
    };
    if init.cart.items.is_empty() {
        return problem(400, "EMPTY_CART", "the cart has no items");
    }
    let total: Decimal = init
        .cart
        .items
        .iter()
        .map(|item| item.unit_price * Decimal::from(item.quantity))
        .sum();
    if simulation::minor_units(total, currency).is_none_or(|t| t.is_zero()) {
        return problem(
            400,
            "INVALID_AMOUNT",
            "the cart's total does not fit the currency",
        );
    }
    let private_id = uuid::Uuid::now_v7().to_string();
    let public_token = format!(
        "public-{}-{}",
        init.country_code,
        uuid::Uuid::now_v7().simple()
    );
    let expires_at = sim.common.now() + CHECKOUT_LIFETIME;
    sim.checkouts.insert(
        private_id.clone(),
        Checkout {
            reference: init.reference.unwrap_or_default(),
            country_code: init.country_code,
            currency,
            total,
            notification_uri: init.notification_uri,
            expires_at,
            order_id: None,
        },
    );
    answer(
        200,
        &json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "data": {
                "privateId": private_id,
                "publicToken": public_token,
                "expiresAt": rfc3339(expires_at),
            },
            "error": null,
        }),
    )
}

pub(super) async fn read(
    State(state): State<Shared<Walley>>,
    Path(private_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut sim = state.lock();
    let path = format!("/checkouts/{private_id}");
    if let Some(refused) = admit(&mut sim, received("GET", path, b""), &headers) {
        return refused;
    }
    let now = sim.common.now();
    let Some(checkout) = sim.checkouts.get(&private_id) else {
        return problem(404, "NOT_FOUND", "no such checkout");
    };
    let status = match &checkout.order_id {
        Some(_) => "PurchaseCompleted",
        None if now >= checkout.expires_at => "Expired",
        None => "Initialized",
    };
    answer(
        200,
        &json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "data": {
                "status": status,
                "reference": checkout.reference,
                "countryCode": checkout.country_code,
                "order": checkout.order_id.as_ref().map(|id| json!({
                    "orderId": id,
                    "totalAmount": checkout.total,
                    "currency": checkout.currency.code(),
                })),
            },
            "error": null,
        }),
    )
}

/// What the shopper's completion may set up: how long the order stays
/// invisible, and the order's faults.
#[derive(Debug, Default, Deserialize)]
pub struct Completion {
    #[serde(default)]
    invisible_for_ms: u64,
    #[serde(default)]
    processing_ms: u64,
    /// `false`: Walley never calls the `notificationUri`.
    #[serde(default = "yes")]
    notify: bool,
    #[serde(default)]
    faults: Vec<Fault>,
}

fn yes() -> bool {
    true
}

pub(super) async fn complete(
    State(state): State<Shared<Walley>>,
    Path(private_id): Path<String>,
    completion: Option<Json<Completion>>,
) -> Response {
    let completion = completion.map(|Json(c)| c).unwrap_or(Completion {
        notify: true,
        ..Completion::default()
    });
    let (order_id, notify) = {
        let mut sim = state.lock();
        let now = sim.common.now();
        let Some(checkout) = sim.checkouts.get(&private_id).cloned() else {
            return problem(404, "NOT_FOUND", "no such checkout");
        };
        if let Some(order_id) = &checkout.order_id {
            return answer(200, &json!({ "orderId": order_id, "notified": null }));
        }
        if now >= checkout.expires_at {
            return problem(422, "CHECKOUT_EXPIRED", "the checkout has expired");
        }
        let order_id = format!("wo-{}", sim.next_order + 1);
        sim.next_order += 1;
        let place = PlaceOrder {
            id: Some(order_id.clone()),
            reference: checkout.reference.clone(),
            amount: checkout.total,
            currency: checkout.currency.code().to_owned(),
            invisible_for_ms: completion.invisible_for_ms,
            processing_ms: completion.processing_ms,
            expires_in_seconds: None,
            faults: completion.faults,
        };
        let total = simulation::minor_units(checkout.total, checkout.currency)
            .unwrap_or(payment_orchestrator::domain::money::Amount::ZERO);
        let order = place.into_order(order_id.clone(), checkout.currency, total, now);
        sim.orders.insert(order_id.clone(), order);
        if let Some(kept) = sim.checkouts.get_mut(&private_id) {
            kept.order_id = Some(order_id.clone());
        }
        let notify = checkout
            .notification_uri
            .filter(|_| completion.notify)
            .map(|uri| uri.replace("{checkout.id}", &private_id));
        (order_id, notify)
    };
    // Walley calls the notification URI (a GET) as the purchase completes.
    let notified = match notify {
        Some(uri) => reqwest::Client::new()
            .get(&uri)
            .send()
            .await
            .map_or(json!("unreachable"), |r| json!(r.status().as_u16())),
        None => serde_json::Value::Null,
    };
    answer(200, &json!({ "orderId": order_id, "notified": notified }))
}
