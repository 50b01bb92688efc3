//! The partners' HTTP edge: callbacks in the partners' own shapes, on a
//! listener of its own (`--callback-listen`), meant to sit behind the
//! ingress.
//!
//! | partner | call | the checkout it names |
//! |---|---|---|
//! | Walley | `GET` (or `POST`) `/callbacks/{partner}/{session}?privateId=…` | the checkout's private id |
//! | WePay | `POST /callbacks/{partner}/{session}`, form `checkout_id=…` (the IPN) | the checkout id |
//! | sandbox | `GET` or `POST /callbacks/{partner}/{session}?checkout_id=…` | the checkout id |
//!
//! A callback is never trusted: it must name a checkout this service opened
//! for that session at that partner (otherwise `404`, nothing done), and all
//! it does is have the session's authorization looked up at the partner now
//! (see `payments::checkouts`), in a task of its own (a partner that stops
//! waiting does not cut it short), at most 64 at once. A malformed one is
//! `400`; a store that cannot be reached, or too many at once, is `503`, so
//! the partner calls again.
//!
//! The in-process sandbox partners' hosted checkout pages are served here
//! too: `GET /sandbox/{partner}/checkouts/{id}` shows one, and `POST
//! /sandbox/{partner}/checkouts/{id}/complete?token=…` completes it as the
//! shopper (with a sandbox token; default `tok_visa_4242`) and then calls its
//! callback, as a partner would.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    partners::sandbox::Sandbox,
    payments::{Callback, PaymentError, Payments},
};

/// Callbacks handled at once; beyond them a callback is answered `503`
/// (the partner calls again).
const MAX_IN_FLIGHT: usize = 64;

/// How long the sandbox's own callback may take.
const SANDBOX_CALLBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the callback handlers share.
#[derive(Debug, Clone)]
pub struct Callbacks {
    payments: Payments,
    sandboxes: Arc<BTreeMap<String, Sandbox>>,
    client: reqwest::Client,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Callbacks {
    pub fn new(payments: Payments, sandboxes: BTreeMap<String, Sandbox>) -> Self {
        Callbacks {
            payments,
            sandboxes: Arc::new(sandboxes),
            client: reqwest::Client::new(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/callbacks/{partner}/{session}",
                get(callback).post(callback),
            )
            .route("/sandbox/{partner}/checkouts/{id}", get(sandbox_page))
            .route(
                "/sandbox/{partner}/checkouts/{id}/complete",
                post(sandbox_complete),
            )
            .with_state(self)
    }
}

/// The ids a callback may carry in its query string.
#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    #[serde(rename = "privateId")]
    private_id: Option<String>,
    checkout_id: Option<String>,
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

async fn callback(
    State(callbacks): State<Callbacks>,
    Path((partner, session)): Path<(String, String)>,
    Query(query): Query<CallbackQuery>,
    body: Bytes,
) -> Response {
    let Some(kind) = callbacks.payments.partners().get(&partner).map(|p| p.kind) else {
        return plain(StatusCode::NOT_FOUND, "no such partner");
    };
    let Ok(session) = Uuid::try_parse(&session) else {
        return plain(StatusCode::BAD_REQUEST, "the session is not a UUID");
    };
    let id = match kind {
        "walley" => query.private_id,
        "wepay" => ipn_checkout(&body).or(query.checkout_id),
        _ => query.checkout_id,
    };
    let Some(id) = id.filter(|id| !id.is_empty() && id.len() <= 256) else {
        return plain(StatusCode::BAD_REQUEST, "the callback names no checkout");
    };
    let Ok(permit) = callbacks.in_flight.clone().try_acquire_owned() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "busy; call again");
    };
    // Its own task: a partner that stops waiting for the answer does not
    // cut the lookup short.
    let payments = callbacks.payments.clone();
    let (name, checkout) = (partner.clone(), id);
    let handled = tokio::spawn(async move {
        let _permit = permit;
        payments.checkout_callback(&name, session, &checkout).await
    })
    .await
    .unwrap_or_else(|join| Err(PaymentError::Internal(Box::new(join))));
    match handled {
        Ok(Callback::Unknown) => plain(StatusCode::NOT_FOUND, "no such checkout"),
        Ok(Callback::LookedUp | Callback::Noted) => plain(StatusCode::OK, "ok"),
        Err(error) => {
            tracing::warn!(%error, %partner, %session, "a partner callback could not be handled");
            let status = match error {
                PaymentError::Unavailable(_) | PaymentError::RequestInProgress => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            plain(status, "not handled; call again")
        }
    }
}

/// `checkout_id` of a WePay IPN body (`application/x-www-form-urlencoded`).
fn ipn_checkout(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "checkout_id")
        .map(|(_, value)| value.into_owned())
}

async fn sandbox_page(
    State(callbacks): State<Callbacks>,
    Path((partner, id)): Path<(String, String)>,
) -> Response {
    let page = callbacks
        .sandboxes
        .get(&partner)
        .and_then(|sandbox| sandbox.hosted_page(&id));
    match page {
        Some(page) => Json(json!({
            "id": id,
            "amount": page.amount.minor(),
            "currency": page.currency.code(),
            "completed": page.completed,
            "complete": format!("POST /sandbox/{partner}/checkouts/{id}/complete?token=tok_visa_4242"),
        }))
        .into_response(),
        None => plain(StatusCode::NOT_FOUND, "no such checkout"),
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    token: Option<String>,
}

async fn sandbox_complete(
    State(callbacks): State<Callbacks>,
    Path((partner, id)): Path<(String, String)>,
    Query(completion): Query<Completion>,
) -> Response {
    let Some(sandbox) = callbacks.sandboxes.get(&partner) else {
        return plain(StatusCode::NOT_FOUND, "no such sandbox partner");
    };
    let token = completion.token.as_deref().unwrap_or("tok_visa_4242");
    let notify = match sandbox.complete_checkout(&id, token) {
        Ok(notify) => notify,
        Err(why) => return plain(StatusCode::BAD_REQUEST, &why),
    };
    // As a partner would: the callback, answered before this page is.
    let notified = match notify {
        Some(url) => callbacks
            .client
            .get(format!("{url}?checkout_id={id}"))
            // A callback address that never answers does not hold the page.
            .timeout(SANDBOX_CALLBACK_TIMEOUT)
            .send()
            .await
            .map(|answer| answer.status().as_u16())
            .unwrap_or(0),
        None => 0,
    };
    Json(json!({ "id": id, "completed": true, "callback_status": notified })).into_response()
}
