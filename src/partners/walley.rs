//! Walley, through its order management API. The shopper completes the
//! order in Walley's checkout, so the leg's token is the order's id and the
//! authorization already happened there: ours verifies the order. Captures,
//! refunds and the cancel are asynchronous (`202 Accepted`) and resolved by
//! reading the order.
//!
//! | call | request | notes |
//! |---|---|---|
//! | authorize | `GET /manage/orders/{token}` | the order must be `NotActivated`, placed for the session's order reference, in the payment's currency, for the leg's amount |
//! | capture | `POST /orders/{id}/captures` | `amount`, `actionReference`, `description`, `items` |
//! | refund | `POST /orders/{id}/refunds` | as capture; `description` is the reason |
//! | void | `POST /manage/orders/{id}/cancel` | releases everything not captured: no partial void |
//!
//! Each path is a partner setting (`paths`); the table shows the defaults.
//! | lookup | `GET /manage/orders/{id}` | the capture or refund with our `actionReference` (for another amount: a contradiction, sent to review), or the cancellation |
//!
//! Every POST carries `X-Idempotency` and (captures, refunds) an
//! `actionReference`, both the partner idempotency key: a re-send is
//! answered, not executed again. Requests are authorized with an OAuth2
//! client-credentials token (`POST /oauth2/v2.0/token`), renewed before it
//! expires and once on a `401`.
//!
//! HTTP status → port:
//!
//! | status | meaning |
//! |---|---|
//! | 200, 201 | done |
//! | 202 | accepted: PENDING until the order shows the action processed |
//! | 409 | a request with this key is being processed: PENDING |
//! | 400, 422 | Declined (the request, or the order's state, refuses it) |
//! | 401 (after renewing the token) | Unavailable: credentials refused, nothing done |
//! | 403, 404 | Unavailable: an order just placed is not visible yet (retried within the window) |
//! | 429, 503 | Unavailable: refused before processing |
//! | 500, 502, 504, any other | Unknown |
//! | no connection | Unavailable; a timeout or reset after sending: Unknown |
//!
//! Settlements come from the report API: `GET /reports/settlements?query=
//! startDate:>=<day>` (pages of up to 1 000 settlements) and
//! `GET /reports/settlements/{id}/transactions?page=&perPage=` (up to 5 000
//! lines a page are asked for). Reading changes nothing, so every failure is
//! Unavailable (tried again later), except `422` (the query is malformed) and
//! `404` (no such settlement), which are Declined with Walley's words. A `409`
//! (a request with the same idempotency key is still in progress) is
//! Unavailable: try again later.

mod answers;
mod report_api;
pub mod wire;

use std::{
    borrow::Cow,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use reqwest::StatusCode;
use tokio::sync::Mutex;

use super::{
    CheckoutRequest, Lookup, OpenedCheckout, Partner, PartnerAnswer, PartnerError, PartnerRequest,
    Secret, SettlementPage, SettlementReport,
    http::{self, exchange_error, unreadable},
};
use crate::domain::{
    checkout::{CheckoutState, REFERENCE_PREFIX},
    operation::OperationKind,
    settlement::Day,
};
use answers::{Posted, action_answer, action_status, classify, refusal, unavailable};
use wire::{
    ActionKind, ActionRequest, Cart, CheckoutCreated, CheckoutEnvelope, CheckoutInformation,
    InitCheckout, Item, Order, OrderEnvelope, ReportPage, SettlementSummary, TokenResponse,
};

/// Settlements asked for per page of the settlement search (its maximum).
const SETTLEMENTS_PER_PAGE: u32 = 1000;

/// How to reach one Walley account.
#[derive(Clone)]
pub struct Settings {
    /// E.g. `https://api.walleypay.com`.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The OAuth2 scope of the management API.
    pub scope: String,
    /// A private CA the API's certificate chains to (tests, proxies).
    pub ca_pem: Option<Vec<u8>>,
    /// Where each call goes.
    pub paths: Paths,
    /// Hosted checkouts: the store they are opened for (`storeId`; Walley
    /// takes the account's default when absent) and its country.
    pub store_id: Option<i64>,
    pub country_code: String,
}

/// The path of each call, `{id}` standing for the order id. Walley's
/// documents do not agree on them (see `docs/decisions.md`): the defaults
/// are the form the partner documentation this project follows shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub order: String,
    pub capture: String,
    pub refund: String,
    pub cancel: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            order: "/manage/orders/{id}".into(),
            capture: "/orders/{id}/captures".into(),
            refund: "/orders/{id}/refunds".into(),
            cancel: "/manage/orders/{id}/cancel".into(),
        }
    }
}

impl Paths {
    /// Whether a template is a path with one `{id}` in it.
    pub fn check(template: &str) -> Result<(), String> {
        if template.starts_with('/') && template.matches("{id}").count() == 1 {
            Ok(())
        } else {
            Err("must be a path starting with / that holds {id} once".into())
        }
    }

    fn fill(template: &str, order: &str) -> String {
        template.replace("{id}", &path_segment(order))
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("walley::Settings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A token is renewed this long before Walley says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Walley {
    settings: Settings,
    client: reqwest::Client,
    token: Mutex<Option<(Secret, Instant)>>,
}

impl Walley {
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        let client = http::client(settings.ca_pem.as_deref())?;
        Ok(Walley {
            settings,
            client,
            token: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url)
    }

    /// A valid access token; a new one when `renew` (the last was refused).
    async fn access_token(&self, renew: bool) -> Result<Secret, PartnerError> {
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && !renew
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let form = wire::TokenRequest {
            grant_type: "client_credentials".into(),
            client_id: self.settings.client_id.clone(),
            client_secret: self.settings.client_secret.expose().to_owned(),
            scope: self.settings.scope.clone(),
        };
        let response = self
            .client
            .post(self.url("/oauth2/v2.0/token"))
            .form(&form)
            .send()
            .await
            // Only a token was asked for: nothing of the payment was sent.
            .map_err(|_| unavailable("the token endpoint could not be reached"))?;
        if !response.status().is_success() {
            *cached = None;
            return Err(unavailable(&format!(
                "the token endpoint refused the credentials ({})",
                response.status()
            )));
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|_| unavailable("the token endpoint answered an unreadable body"))?;
        let lifetime = Duration::from_secs(token.expires_in).saturating_sub(TOKEN_MARGIN);
        let token = Secret::new(token.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// Sends a request built by `build`, renewing the token once on a 401.
    async fn exchange(
        &self,
        build: impl Fn(&Secret) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), PartnerError> {
        let mut renew = false;
        loop {
            let token = self.access_token(renew).await?;
            let response = build(&token).send().await.map_err(|e| exchange_error(&e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renew {
                renew = true;
                continue;
            }
            let body = response.bytes().await.map_err(|e| exchange_error(&e))?;
            return Ok((status, body));
        }
    }

    async fn order(&self, id: &str) -> Result<Order, PartnerError> {
        let url = self.url(&Paths::fill(&self.settings.paths.order, id));
        let (status, body) = self
            .exchange(|token| self.client.get(&url).bearer_auth(token.expose()))
            .await?;
        match status {
            StatusCode::OK => serde_json::from_slice::<OrderEnvelope>(&body)
                .map(|envelope| envelope.data)
                .map_err(|_| unreadable(status)),
            // 404 and 403: not visible yet; 400: no such order.
            status => Err(match classify(status, &body) {
                Ok(_) => unreadable(status),
                Err(error) => error,
            }),
        }
    }

    async fn post(
        &self,
        request: &PartnerRequest,
        template: &str,
        body: Option<&ActionRequest>,
    ) -> Result<PartnerAnswer, PartnerError> {
        let order =
            request
                .authorization_reference
                .as_deref()
                .ok_or_else(|| PartnerError::Declined {
                    code: "NO_ORDER".into(),
                    description: "the leg has no authorized order".into(),
                })?;
        let url = self.url(&Paths::fill(template, order));
        let (status, answer) = self
            .exchange(|token| {
                let builder = self
                    .client
                    .post(&url)
                    .bearer_auth(token.expose())
                    .header("X-Idempotency", &request.idempotency_key);
                match body {
                    Some(body) => builder.json(body),
                    None => builder,
                }
            })
            .await?;
        let posted = classify(status, &answer)?;
        Ok(PartnerAnswer {
            settled: matches!(posted, Posted::Done),
            reference: request.idempotency_key.clone(),
            partner_status: status.as_u16().to_string(),
            description: match posted {
                Posted::Done => String::new(),
                Posted::Accepted => "accepted; processed asynchronously".into(),
            },
            instrument: None,
        })
    }

    /// Verifies the order a leg names: open (`NotActivated`), placed for
    /// this payment — through a hosted checkout of ours (`hosted`), or
    /// under the session's order reference, and then never one of those —
    /// in its currency, for the leg's amount.
    async fn verify_order(
        &self,
        id: &str,
        request: &PartnerRequest,
        hosted: bool,
    ) -> Result<PartnerAnswer, PartnerError> {
        let order = self.order(id).await?;
        let declined = |code: &str, description: String| PartnerError::Declined {
            code: code.into(),
            description,
        };
        if order.status != "NotActivated" {
            return Err(declined(
                "ORDER_NOT_OPEN",
                format!("the order is {}", order.status),
            ));
        }
        // The order must be the one this session placed: another order of
        // the merchant's (or of another merchant's) is not this payment's,
        // and one placed through a hosted checkout is its session's leg.
        let from_checkout = order.reference.starts_with(REFERENCE_PREFIX);
        if hosted != from_checkout {
            return Err(declined(
                "ORDER_FROM_HOSTED_CHECKOUT",
                "the order was placed through a hosted checkout: the leg names it by \
                 partner_checkout_id"
                    .into(),
            ));
        }
        if !hosted && order.reference != request.order_reference {
            return Err(declined(
                "ORDER_REFERENCE_MISMATCH",
                "the order's reference is not the session's order reference".into(),
            ));
        }
        if order.currency != request.currency.code() {
            return Err(declined(
                "CURRENCY_MISMATCH",
                format!("the order is in {}", order.currency),
            ));
        }
        if order.amount(request.currency)? != request.amount {
            return Err(declined(
                "AMOUNT_MISMATCH",
                format!("the order is for {} {}", order.total_amount, order.currency),
            ));
        }
        Ok(PartnerAnswer {
            settled: true,
            reference: order.id,
            partner_status: order.status,
            description: String::new(),
            instrument: None,
        })
    }

    fn action(&self, request: &PartnerRequest, description: &str) -> ActionRequest {
        ActionRequest {
            amount: http::major(request.amount, request.currency),
            action_reference: request.idempotency_key.clone(),
            description: description.to_owned(),
            items: request
                .items
                .iter()
                .map(|line| Item::from_line(line, request.currency))
                .collect(),
        }
    }
}

/// An id as one URL path segment: tokens come from shoppers' checkouts.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Walley {
    /// A leg paid through Walley's checkout verifies the order the checkout
    /// placed once the shopper completed it (PENDING until then); any other
    /// leg verifies the order its token names.
    async fn authorize(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let Some(private_id) = request.token.checkout() else {
            return self
                .verify_order(request.token.expose(), request, false)
                .await;
        };
        match self.checkout_state(private_id).await? {
            CheckoutState::Completed { instrument } => {
                self.verify_order(&instrument, request, true).await
            }
            CheckoutState::Open => Ok(PartnerAnswer {
                settled: false,
                reference: String::new(),
                partner_status: "CheckoutOpen".into(),
                description: "waiting for the shopper to complete Walley's checkout".into(),
                instrument: None,
            }),
            CheckoutState::Closed { reason } => Err(PartnerError::Declined {
                code: "CHECKOUT_CLOSED".into(),
                description: format!("the shopper did not complete the checkout: {reason}"),
            }),
        }
    }
}

#[async_trait]
impl Partner for Walley {
    /// An order backs one payment.
    fn instrument_use(&self) -> super::InstrumentUse {
        super::InstrumentUse::SingleUse
    }

    /// An order id: 1-128 characters, no spaces or slashes.
    fn check_token(&self, token: &str) -> Result<(), String> {
        let ok = !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(())
        } else {
            Err("a Walley leg's token is the order id from Walley's checkout".into())
        }
    }

    /// Walley's order ids are GUIDs, which it reads in any case and with or
    /// without hyphens: one is spelt lowercase, hyphenated.
    fn instrument_of<'t>(&self, token: &'t str) -> Cow<'t, str> {
        match uuid::Uuid::try_parse(token) {
            Ok(id) if id.hyphenated().to_string() != token => {
                Cow::Owned(id.hyphenated().to_string())
            }
            _ => Cow::Borrowed(token),
        }
    }

    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let paths = &self.settings.paths;
        match request.kind {
            OperationKind::Authorization => self.authorize(request).await,
            OperationKind::Capture => {
                let body = self.action(request, &request.merchant_reference);
                self.post(request, &paths.capture, Some(&body)).await
            }
            OperationKind::Refund => {
                let body = self.action(request, &request.reason);
                self.post(request, &paths.refund, Some(&body)).await
            }
            OperationKind::Void => self.post(request, &paths.cancel, None).await,
        }
    }

    /// `POST /checkouts` with the session's lines (one line for the whole
    /// amount when it has none), under our reference; the notification
    /// comes to `{notification_url}?privateId=<id>`.
    async fn open_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<OpenedCheckout, PartnerError> {
        let items = if request.items.is_empty() {
            vec![Item {
                id: "order".into(),
                description: format!("Order {}", request.order_reference),
                quantity: 1,
                unit_price: http::major(request.amount, request.currency),
                vat: rust_decimal::Decimal::ZERO,
            }]
        } else {
            request
                .items
                .iter()
                .map(|line| Item::from_line(line, request.currency))
                .collect()
        };
        let body = InitCheckout {
            store_id: self.settings.store_id,
            country_code: self.settings.country_code.clone(),
            reference: request.reference.clone(),
            notification_uri: request
                .notification_url
                .as_ref()
                .map(|url| format!("{url}?privateId={{checkout.id}}")),
            cart: Cart { items },
        };
        let url = self.url("/checkouts");
        let (status, answer) = self
            .exchange(|token| {
                self.client
                    .post(&url)
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(refusal(status, &answer));
        }
        let created: CheckoutEnvelope<CheckoutCreated> =
            serde_json::from_slice(&answer).map_err(|_| unreadable(status))?;
        Ok(OpenedCheckout {
            id: created.data.private_id,
            public_token: created.data.public_token,
            redirect_url: String::new(),
            expires_at: created.data.expires_at.as_deref().and_then(http::rfc3339),
        })
    }

    /// `GET /checkouts/{privateId}`: `PurchaseCompleted` with its order is
    /// completed (the order id is the instrument), `Aborted` and `Expired`
    /// closed, anything else still open.
    async fn checkout_state(&self, id: &str) -> Result<CheckoutState, PartnerError> {
        let url = self.url(&format!("/checkouts/{}", path_segment(id)));
        let (status, body) = self
            .exchange(|token| self.client.get(&url).bearer_auth(token.expose()))
            .await?;
        if status != StatusCode::OK {
            return Err(refusal(status, &body));
        }
        let info: CheckoutEnvelope<CheckoutInformation> =
            serde_json::from_slice(&body).map_err(|_| unreadable(status))?;
        let info = info.data;
        Ok(match (info.status.as_str(), info.order) {
            ("PurchaseCompleted", Some(order)) => CheckoutState::Completed {
                instrument: order.order_id,
            },
            ("Aborted" | "Expired", _) => CheckoutState::Closed {
                reason: info.status,
            },
            _ => CheckoutState::Open,
        })
    }

    /// Reads the order: the action with our reference tells what happened.
    fn settles(&self) -> bool {
        true
    }

    async fn settlements(&self, since: Day) -> Result<Vec<super::Listed>, PartnerError> {
        let mut reports = Vec::new();
        let mut page = 1;
        loop {
            // Each settlement is read on its own: one whose header does not
            // read is listed as why, never failing the others with it.
            let listed: ReportPage<serde_json::Value> = self
                .report(
                    "/reports/settlements",
                    &[
                        ("query", format!("startDate:>={since}")),
                        ("page", page.to_string()),
                        ("perPage", SETTLEMENTS_PER_PAGE.to_string()),
                    ],
                )
                .await?;
            for summary in &listed.data {
                let read = serde_json::from_value::<SettlementSummary>(summary.clone())
                    .map_err(|error| error.to_string())
                    .and_then(|summary| {
                        report_api::report_of(&summary).map_err(|error| error.to_string())
                    });
                reports.push(read.map_err(|why| {
                    let id = summary["id"].as_str().unwrap_or("without an id");
                    format!("settlement {id}'s header does not read: {why}")
                }));
            }
            let last = match &listed.meta_data {
                Some(meta) => page >= meta.number_of_pages,
                None => listed.data.len() < SETTLEMENTS_PER_PAGE as usize,
            };
            if listed.data.is_empty() || last {
                break;
            }
            page += 1;
        }
        reports.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => (a.date, &a.reference).cmp(&(b.date, &b.reference)),
            (a, b) => a.is_ok().cmp(&b.is_ok()),
        });
        Ok(reports)
    }

    async fn settlement_page(
        &self,
        report: &SettlementReport,
        page: u32,
        per_page: u32,
    ) -> Result<SettlementPage, PartnerError> {
        // Each line is read on its own: one that does not read is kept raw.
        let listed: ReportPage<serde_json::Value> = self
            .report(
                &format!(
                    "/reports/settlements/{}/transactions",
                    path_segment(&report.reference)
                ),
                &[
                    ("page", page.to_string()),
                    ("perPage", per_page.to_string()),
                ],
            )
            .await?;
        Ok(SettlementPage {
            lines: listed
                .data
                .iter()
                .map(|line| wire::read_line(line, report.date))
                .collect(),
            total: listed
                .meta_data
                .as_ref()
                .map(|meta| meta.total_number_of_records),
            pages: listed.meta_data.as_ref().map(|meta| meta.number_of_pages),
        })
    }

    async fn lookup(
        &self,
        request: &PartnerRequest,
        _reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        let key = &request.idempotency_key;
        let order_id = match request.kind {
            // Verifying the order again is a read: its answer is the lookup.
            OperationKind::Authorization => {
                return match self.authorize(request).await {
                    Err(PartnerError::Unavailable { description }) => {
                        Err(PartnerError::Unavailable { description })
                    }
                    Err(PartnerError::Unknown { description }) => {
                        Err(PartnerError::Unknown { description })
                    }
                    result => Ok(Lookup::Found(result)),
                };
            }
            _ => request
                .authorization_reference
                .as_deref()
                .unwrap_or_default(),
        };
        let order = self.order(order_id).await?;
        if order.currency != request.currency.code() {
            return Ok(Lookup::Found(Err(PartnerError::Contradiction {
                description: format!(
                    "Walley's order is in {}, the payment in {}",
                    order.currency,
                    request.currency.code()
                ),
            })));
        }
        let action = match request.kind {
            OperationKind::Capture => order.action(ActionKind::Capture, key),
            OperationKind::Refund => order.action(ActionKind::Refund, key),
            _ => order.cancellation.as_ref(),
        };
        Ok(match action {
            // A cancellation releases what is left, whatever its amount.
            Some(action) if request.kind == OperationKind::Void => {
                Lookup::Found(action_status(action, key))
            }
            Some(action) => Lookup::Found(action_answer(action, request)),
            None => Lookup::NotFound,
        })
    }
}

#[cfg(test)]
mod tests;
