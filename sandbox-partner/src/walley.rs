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
//! - Walley Checkout: `POST /checkouts` (`storeId`?, `countryCode`,
//!   `reference`, `notificationUri`?, `cart.items`; the country decides the
//!   currency: SE SEK, NO NOK, DK DKK, FI and DE EUR) answers `data.privateId`,
//!   `data.publicToken` and `data.expiresAt`; `GET /checkouts/{privateId}`
//!   reads `data.status` (`Initialized`, `PurchaseCompleted` with
//!   `data.order.orderId`, `Expired` after 7 days). `POST
//!   /_sim/checkouts/{privateId}/complete` is the shopper completing it
//!   (`{"invisible_for_ms"?, "processing_ms"?, "notify"?, "faults"?}`): the
//!   order is placed under the checkout's reference for the cart's total,
//!   and the `notificationUri` (`{checkout.id}` replaced by the private id)
//!   is called with a `GET` before the answer, unless `notify` is false.
//! - `GET /manage/orders/{id}` reads an order with its captures, refunds and
//!   cancellation.
//! - `POST /orders/{id}/captures` and `/refunds` (the form this project's
//!   partner documentation shows; Walley's public order-management pages
//!   show `POST /manage/orders/{id}/capture` and `/refund`, also served)
//!   with `amount`, `actionReference`, `description`, `items`, and
//!   `POST /manage/orders/{id}/cancel`
//!   (optionally `{"actionReference"}`) are accepted with `202`, no body and
//!   a `Location`, and processed `processing_ms` later (`Pending`, then
//!   `Completed`). A body with a field Walley does not document is `400`. A
//!   request repeating an `X-Idempotency` key gets the first answer again; a
//!   second action with an `actionReference` already seen executes nothing.
//! - Cancel releases what is not captured: the whole order before any
//!   capture, the remainder after a partial one.
//! - An order not activated by `expires_in_seconds` (simulation time) reads
//!   `Expired`.
//!
//! - Settlements: `POST /_sim/settlements` closes every completed capture and
//!   refund not settled yet into one settlement per currency
//!   (`{"date"?, "drop"?: [actionReference], "alter"?: {actionReference:
//!   "amount"}, "unknown"?: [{"amount", "actionReference", "type"?}],
//!   "synthetic"?: n, "duplicate"?: [actionReference], "withoutReference"?:
//!   [actionReference], "lines"?: [{"type", "amount", "orderId"?,
//!   "actionReference"?, "currency"?}], "raw"?: [line], "header"?:
//!   {"captured"?, "refunded"?}, "refuseLines"?: n, "refusePage"?: p,
//!   "brokenHeader"?: true, "endless"?: true}` (`brokenHeader`: the header
//!   names currency `XXX`; `endless`: every page of the lines serves the
//!   first one and says more follow):
//!   leave lines out, settle another amount,
//!   add lines nobody sent, add `n` generated purchases of 1.00, report a
//!   line twice, leave a line's `actionReference` out, add lines of any
//!   type and sign (fees, `PurchaseAmountAdjustment`, chargebacks), serve
//!   lines exactly as given, state header totals that differ from the
//!   lines, refuse the first `n` reads of the lines, or the first read of
//!   page `p`, with `422`). The
//!   report API serves
//!   them: `GET /reports/settlements` (`query=startDate:>=YYYY-MM-DD`, `page`,
//!   `perPage` up to 1 000) and `GET /reports/settlements/{id}/transactions`
//!   (`perPage` up to 25 000; `Accept: text/csv` for CSV), with `data`,
//!   `links` and `metaData`; `422` for a malformed query.
//!
//! Amounts are validated against the currency: more decimals than it has is
//! `400 INVALID_AMOUNT`; item lines (unit price with VAT × quantity) that do
//! not add up to the amount are `400 ITEMS_MISMATCH`; more than is left is
//! `422`.
//!
//! The files: [`wire`] (the simulation's own request and response bodies,
//! from Walley's documentation), `orders` (the state and how an action is
//! booked), `routes` (the order management handlers) and `reports`
//! (settlements and the report API).

mod checkouts;
mod orders;
mod reports;
mod routes;
pub mod wire;

use axum::{
    Router,
    routing::{get, post},
};

use crate::simulation::{self, Shared};
pub use orders::{PlaceOrder, Walley};
pub use reports::{CloseSettlements, ExtraLine, HeaderOverride, UnknownLine, report_csv};

/// The credentials the simulation accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

/// The simulation's routes.
pub fn router(credentials: Credentials) -> Router {
    let state = Shared::new(Walley::new(credentials));
    Router::new()
        .route("/oauth2/v2.0/token", post(routes::token))
        .route("/manage/orders/{id}", get(routes::read_order))
        .route("/manage/orders/{id}/{action}", post(routes::act_managed))
        .route("/orders/{id}/{action}", post(routes::act_on_order))
        .route("/_sim/orders", post(routes::place_order))
        .route("/checkouts", post(checkouts::open))
        .route("/checkouts/{private_id}", get(checkouts::read))
        .route(
            "/_sim/checkouts/{private_id}/complete",
            post(checkouts::complete),
        )
        .route("/_sim/settlements", post(reports::close_settlements))
        .route("/reports/settlements", get(reports::list_settlements))
        .route(
            "/reports/settlements/{id}/transactions",
            get(reports::settlement_lines),
        )
        .route("/_sim/clock", post(simulation::advance_clock::<Walley>))
        .route("/_sim/fail", post(simulation::fail_next::<Walley>))
        .route("/_sim/ledger", get(simulation::ledger::<Walley>))
        .with_state(state)
}
