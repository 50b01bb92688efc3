//! WePay, through its checkout API (v2). The leg's token is a card the
//! shopper tokenized earlier (a `credit_card_id`); the authorization creates
//! a checkout that reserves the amount (`auto_capture=false`).
//!
//! | call | request | notes |
//! |---|---|---|
//! | authorize | `POST /checkout/create` | `unique_id` and `reference_id` are the partner idempotency key |
//! | capture | `POST /checkout/capture` | the whole checkout: no partial capture, one capture |
//! | refund | `POST /checkout/refund` | `amount`, `refund_reason`; **no idempotency key** |
//! | void | `POST /checkout/cancel` | the whole checkout |
//! | lookup | `POST /checkout/find` (authorization), `POST /checkout` | by the checkout's state and refunded amount |
//! | open a hosted checkout | `POST /checkout/create` with `hosted_checkout` and `callback_uri` | the shopper pays on `checkout_uri`; the checkout then holds the authorization |
//! | a hosted checkout's state | `POST /checkout` | `new` open; `authorized`/`reserved`/`captured` completed; the rest closed |
//!
//! WePay has no idempotency for captures, cancels and refunds. A capture or
//! a cancel can only happen once per checkout, so its state says whether it
//! happened (re-sending one is safe). A refund is not: it is sent at most
//! once ([`Partner::resends_safely`] is false for refunds), and guarded —
//! before the send the checkout's refunded total (`refund.amount_refunded`, or the
//! older top-level `amount_refunded`) is read and compared
//! with what our books say was refunded before this refund
//! (`refunded_before`): equal, it is sent; already including this refund,
//! it is answered as done without sending; anything else is Unknown
//! (someone else refunded: the operation goes to review rather than risk
//! paying twice). Refunds of one leg run one at a time (capability
//! `concurrent_refunds = false`), which keeps the comparison exact. A
//! checkout whose amount, currency or account is not the one asked for is
//! a contradiction (review), never booked at our figures.
//!
//! An uncaptured checkout is cancelled by WePay after 14 days: the
//! authorization lifetime of this kind of partner.
//!
//! HTTP status → port:
//!
//! | status | meaning |
//! |---|---|
//! | 200 | done; the checkout's state decides (`new` → PENDING, `failed` → Declined) |
//! | 400, 402, 403, 404 | Declined (`error_code` and `error_description` kept); a capture or cancel refused because the checkout is already in that state is done |
//! | 401 | Unavailable: the access token was refused, nothing done |
//! | 429, 503 | Unavailable: refused before processing |
//! | 500, 502, 504, any other | Unknown |
//! | no connection | Unavailable; a timeout or reset after sending: Unknown |

pub mod wire;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    CheckoutRequest, Lookup, OpenedCheckout, Partner, PartnerAnswer, PartnerError, PartnerRequest,
    Secret,
    http::{self, exchange_error, unreadable},
};
use std::{borrow::Cow, time::Duration};

use crate::domain::{
    checkout::CheckoutState,
    dispute::DisputeSeen,
    money::{Amount, Currency},
    operation::OperationKind,
};
use wire::{
    CancelCheckout, Checkout, CheckoutId, CreateCheckout, CreditCard, ErrorBody, FindCheckouts,
    HostedCheckout, PaymentMethod, RefundCheckout, Stage, StateAnswer,
};

/// How to reach one WePay account.
#[derive(Clone)]
pub struct Settings {
    /// E.g. `https://wepayapi.com/v2`.
    pub base_url: String,
    pub account_id: i64,
    pub access_token: Secret,
    /// A private CA the API's certificate chains to (tests, proxies).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("wepay::Settings")
            .field("base_url", &self.base_url)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Wepay {
    settings: Settings,
    client: reqwest::Client,
}

impl Wepay {
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        let client = http::client(settings.ca_pem.as_deref())?;
        Ok(Wepay { settings, client })
    }

    async fn call<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, PartnerError> {
        let response = self
            .client
            .post(format!("{}{path}", self.settings.base_url))
            .bearer_auth(self.settings.access_token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| exchange_error(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| exchange_error(&e))?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|_| unreadable(status));
        }
        Err(classify(status, &body))
    }

    /// A `/checkout/create` body for `amount`, reserved only
    /// (`auto_capture=false`), under `reference`; without its instrument.
    fn create(
        &self,
        amount: Amount,
        currency: Currency,
        order_reference: &str,
        reference: &str,
    ) -> CreateCheckout {
        CreateCheckout {
            account_id: self.settings.account_id,
            amount: http::major(amount, currency),
            currency: currency.code().to_owned(),
            short_description: format!("Order {order_reference}"),
            kind: "goods".into(),
            unique_id: None,
            reference_id: reference.to_owned(),
            auto_capture: false,
            payment_method: None,
            callback_uri: None,
            hosted_checkout: None,
        }
    }

    /// The authorization a hosted checkout holds once the shopper
    /// completed it: PENDING while it is `new`; one for another amount,
    /// currency or account is a contradiction.
    async fn hosted_authorization(
        &self,
        id: i64,
        request: &PartnerRequest,
    ) -> Result<PartnerAnswer, PartnerError> {
        let checkout = self.checkout(id).await?;
        check_checkout(&checkout, request, self.settings.account_id)?;
        // What the shopper reserved, not captured yet: a checkout captured
        // (or refunded) already is another payment's.
        if Stage::of(&checkout.state) == Some(Stage::Captured) {
            return Err(PartnerError::Declined {
                code: checkout.state.clone(),
                description: "the hosted checkout was captured already".into(),
            });
        }
        authorization(&checkout)
    }

    async fn checkout(&self, id: i64) -> Result<Checkout, PartnerError> {
        self.call("/checkout", &CheckoutId { checkout_id: id })
            .await
    }

    /// The checkout an authorization created, found by our key.
    async fn find(&self, key: &str) -> Result<Option<Checkout>, PartnerError> {
        let found: Vec<Checkout> = self
            .call(
                "/checkout/find",
                &FindCheckouts {
                    account_id: self.settings.account_id,
                    reference_id: key.to_owned(),
                },
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// A capture or cancel WePay refused: done if the checkout already is
    /// where the call would have taken it (an earlier attempt did it).
    async fn settle_refusal(
        &self,
        checkout_id: i64,
        done: Stage,
        refusal: PartnerError,
    ) -> Result<PartnerAnswer, PartnerError> {
        if !matches!(refusal, PartnerError::Declined { .. }) {
            return Err(refusal);
        }
        match self.checkout(checkout_id).await {
            Ok(checkout) if Stage::of(&checkout.state) == Some(done) => {
                Ok(settled(checkout.checkout_id, &checkout.state))
            }
            _ => Err(refusal),
        }
    }

    /// Where a refund stands by the checkout's refunded total: `Some(true)`
    /// executed, `Some(false)` not executed.
    fn refund_executed(
        checkout: &Checkout,
        request: &PartnerRequest,
    ) -> Result<bool, PartnerError> {
        let Some(refunded) = checkout.refunded() else {
            return Err(PartnerError::Unknown {
                description: format!(
                    "checkout {} gives no single refunded total (refund.amount_refunded: {:?}, \
                     amount_refunded: {:?})",
                    checkout.checkout_id,
                    checkout
                        .refund
                        .as_ref()
                        .and_then(|r| r.amount_refunded)
                        .map(|f| f.0),
                    checkout.amount_refunded.map(|f| f.0)
                ),
            });
        };
        let refunded = http::minor(refunded, request.currency)?;
        let with_this = request
            .refunded_before
            .checked_add(request.amount)
            .unwrap_or(Amount::ZERO);
        if refunded == with_this {
            Ok(true)
        } else if refunded == request.refunded_before {
            Ok(false)
        } else {
            Err(PartnerError::Unknown {
                description: format!(
                    "the checkout's refunded total ({} {}) matches neither our books before \
                     this refund nor after it",
                    refunded, checkout.currency
                ),
            })
        }
    }
}

/// A hosted checkout's id (digits).
fn hosted_id(id: &str) -> Result<i64, PartnerError> {
    id.parse().map_err(|_| PartnerError::Declined {
        code: "INVALID_CHECKOUT".into(),
        description: "not a WePay checkout id".into(),
    })
}

fn checkout_id(request: &PartnerRequest) -> Result<i64, PartnerError> {
    request
        .authorization_reference
        .as_deref()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| PartnerError::Declined {
            code: "NO_CHECKOUT".into(),
            description: "the leg has no authorized checkout".into(),
        })
}

/// The reason the request gives, or `otherwise` (WePay wants one).
fn reason_or(request: &PartnerRequest, otherwise: &str) -> String {
    if request.reason.is_empty() {
        otherwise.into()
    } else {
        request.reason.clone()
    }
}

fn settled(checkout_id: i64, state: &str) -> PartnerAnswer {
    PartnerAnswer {
        settled: true,
        reference: checkout_id.to_string(),
        partner_status: state.to_owned(),
        description: String::new(),
        instrument: None,
    }
}

/// A checkout that is not the one asked for (another account, currency or
/// amount) is a contradiction: never booked at our figures.
fn check_checkout(
    checkout: &Checkout,
    request: &PartnerRequest,
    account_id: i64,
) -> Result<(), PartnerError> {
    let amount = http::minor(checkout.amount, request.currency).ok();
    let problem = if checkout.account_id != account_id {
        Some(format!(
            "account {} where ours is {account_id}",
            checkout.account_id
        ))
    } else if checkout.currency != request.currency.code() {
        Some(format!(
            "{} where the payment is in {}",
            checkout.currency,
            request.currency.code()
        ))
    } else if amount != Some(request.amount) {
        Some(format!(
            "{} {} where we asked for {} {}",
            checkout.amount,
            checkout.currency,
            http::major(request.amount, request.currency),
            request.currency.code()
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(PartnerError::Contradiction {
            description: format!("WePay's checkout {} is for {problem}", checkout.checkout_id),
        }),
        None => Ok(()),
    }
}

/// What an authorization's checkout says.
fn authorization(checkout: &Checkout) -> Result<PartnerAnswer, PartnerError> {
    match Stage::of(&checkout.state) {
        Some(Stage::Held | Stage::Captured) => Ok(settled(checkout.checkout_id, &checkout.state)),
        Some(Stage::Deciding) => Ok(PartnerAnswer {
            settled: false,
            reference: checkout.checkout_id.to_string(),
            partner_status: checkout.state.clone(),
            description: "the checkout is not decided yet".into(),
            instrument: None,
        }),
        Some(Stage::Cancelled | Stage::Failed) => Err(PartnerError::Declined {
            code: checkout.state.clone(),
            description: "the checkout holds nothing".into(),
        }),
        None => Err(PartnerError::Unknown {
            description: format!("unknown checkout state {:?}", checkout.state),
        }),
    }
}

/// An HTTP answer other than 200, as the port sees it.
fn classify(status: StatusCode, body: &[u8]) -> PartnerError {
    let error = serde_json::from_slice::<ErrorBody>(body).unwrap_or_default();
    match status.as_u16() {
        400 | 402 | 403 | 404 => PartnerError::Declined {
            code: if error.error_code == 0 {
                status.as_u16().to_string()
            } else {
                error.error_code.to_string()
            },
            description: error.error_description,
        },
        401 => PartnerError::Unavailable {
            description: "the partner refused our access token".into(),
        },
        429 | 503 => PartnerError::Unavailable {
            description: format!("the partner refused the request for now ({status})"),
        },
        _ => PartnerError::Unknown {
            description: format!("the partner answered {status}"),
        },
    }
}

/// The four operations, one request each; [`Partner::send`] picks by kind.
impl Wepay {
    async fn authorize(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        if let Some(id) = request.token.checkout() {
            return self.hosted_authorization(hosted_id(id)?, request).await;
        }
        let card = request
            .token
            .expose()
            .parse()
            .map_err(|_| PartnerError::Declined {
                code: "INVALID_TOKEN".into(),
                description: "not a credit_card_id".into(),
            })?;
        let create = CreateCheckout {
            unique_id: Some(request.idempotency_key.clone()),
            payment_method: Some(PaymentMethod {
                kind: "credit_card".into(),
                credit_card: CreditCard { id: card },
            }),
            ..self.create(
                request.amount,
                request.currency,
                &request.order_reference,
                &request.idempotency_key,
            )
        };
        let checkout: Checkout = self.call("/checkout/create", &create).await?;
        check_checkout(&checkout, request, self.settings.account_id)?;
        authorization(&checkout)
    }

    async fn capture(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let id = checkout_id(request)?;
        match self
            .call::<_, StateAnswer>("/checkout/capture", &CheckoutId { checkout_id: id })
            .await
        {
            Ok(answer) => Ok(settled(answer.checkout_id, &answer.state)),
            Err(refusal) => self.settle_refusal(id, Stage::Captured, refusal).await,
        }
    }

    async fn refund(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let id = checkout_id(request)?;
        let checkout = self.checkout(id).await?;
        if Self::refund_executed(&checkout, request)? {
            return Ok(settled(id, &checkout.state));
        }
        let refund = RefundCheckout {
            checkout_id: id,
            refund_reason: reason_or(request, "refund"),
            amount: Some(http::major(request.amount, request.currency)),
        };
        let answer: StateAnswer = self.call("/checkout/refund", &refund).await?;
        Ok(settled(answer.checkout_id, &answer.state))
    }

    async fn void(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let id = checkout_id(request)?;
        let cancel = CancelCheckout {
            checkout_id: id,
            cancel_reason: reason_or(request, "released"),
        };
        match self
            .call::<_, StateAnswer>("/checkout/cancel", &cancel)
            .await
        {
            Ok(answer) => Ok(settled(answer.checkout_id, &answer.state)),
            Err(refusal) => self.settle_refusal(id, Stage::Cancelled, refusal).await,
        }
    }
}

#[async_trait]
impl Partner for Wepay {
    /// Captures and cancels happen once per checkout (its state tells), and
    /// checkouts are created with `unique_id`; refunds have no idempotency
    /// key: a refund is sent at most once.
    fn resends_safely(&self, kind: OperationKind) -> bool {
        kind != OperationKind::Refund
    }

    /// A `credit_card_id`: digits.
    fn check_token(&self, token: &str) -> Result<(), String> {
        if !token.is_empty() && token.len() <= 18 && token.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            Err("a WePay leg's token is a credit_card_id (digits)".into())
        }
    }

    /// A `credit_card_id` is a number: `0042` is card `42`.
    fn instrument_of<'t>(&self, token: &'t str) -> Cow<'t, str> {
        if token.len() > 1 && token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit()) {
            match token.trim_start_matches('0') {
                "" => Cow::Borrowed("0"),
                number => Cow::Borrowed(number),
            }
        } else {
            Cow::Borrowed(token)
        }
    }

    /// A hosted checkout (`/checkout/create` with `hosted_checkout`) for
    /// the session's amount, reserved only (`auto_capture=false`).
    async fn open_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<OpenedCheckout, PartnerError> {
        let create = CreateCheckout {
            unique_id: None,
            payment_method: None,
            callback_uri: request.notification_url.clone(),
            hosted_checkout: Some(HostedCheckout {
                mode: Some("regular".into()),
                checkout_uri: None,
            }),
            ..self.create(
                request.amount,
                request.currency,
                &request.order_reference,
                &request.reference,
            )
        };
        let checkout: Checkout = self.call("/checkout/create", &create).await?;
        let redirect_url = checkout
            .hosted_checkout
            .and_then(|hosted| hosted.checkout_uri)
            .ok_or_else(|| PartnerError::Unknown {
                description: "the hosted checkout came without its checkout_uri".into(),
            })?;
        Ok(OpenedCheckout {
            id: checkout.checkout_id.to_string(),
            public_token: String::new(),
            redirect_url,
            expires_at: None,
        })
    }

    /// By the checkout's state: reserved or captured is completed (the
    /// checkout holds the authorization), `new` open, the rest closed.
    async fn checkout_state(&self, id: &str) -> Result<CheckoutState, PartnerError> {
        let checkout = self.checkout(hosted_id(id)?).await?;
        Ok(match Stage::of(&checkout.state) {
            Some(Stage::Held | Stage::Captured) => CheckoutState::Completed {
                instrument: id.to_owned(),
            },
            Some(Stage::Deciding) => CheckoutState::Open,
            Some(Stage::Cancelled | Stage::Failed) | None => CheckoutState::Closed {
                reason: checkout.state,
            },
        })
    }

    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        match request.kind {
            OperationKind::Authorization => self.authorize(request).await,
            OperationKind::Capture => self.capture(request).await,
            OperationKind::Refund => self.refund(request).await,
            OperationKind::Void => self.void(request).await,
        }
    }

    /// Chargebacks reach a card up to 120 days after the purchase (the card
    /// networks' usual limit); WePay has no settlement report that would
    /// show them, so captured checkouts are read again until then.
    fn dispute_window(&self) -> Option<Duration> {
        Some(Duration::from_secs(120 * 86_400))
    }

    /// By the checkout: `charged back` (or `amount_charged_back`) is a
    /// dispute of what was taken back; otherwise it is clear.
    async fn dispute(&self, request: &PartnerRequest) -> Result<Option<DisputeSeen>, PartnerError> {
        let id = checkout_id(request)?;
        let checkout = self.checkout(id).await?;
        let reference = id.to_string();
        Ok(Some(match checkout.charged_back() {
            Some(taken) => DisputeSeen::Disputed {
                reference,
                amount: http::minor(taken, request.currency)?,
                reason: format!("the checkout is {}", checkout.state),
            },
            None => DisputeSeen::Clear { reference },
        }))
    }

    /// By the checkout's state: found by our key for an authorization, by
    /// its id otherwise.
    async fn lookup(
        &self,
        request: &PartnerRequest,
        _reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        let account = self.settings.account_id;
        if let (OperationKind::Authorization, Some(id)) = (request.kind, request.token.checkout()) {
            return match self.hosted_authorization(hosted_id(id)?, request).await {
                Err(error @ (PartnerError::Unavailable { .. } | PartnerError::Unknown { .. })) => {
                    Err(error)
                }
                answer => Ok(Lookup::Found(answer)),
            };
        }
        if request.kind == OperationKind::Authorization {
            return Ok(match self.find(&request.idempotency_key).await? {
                Some(checkout) => Lookup::Found(
                    check_checkout(&checkout, request, account)
                        .and_then(|()| authorization(&checkout)),
                ),
                None => Lookup::NotFound,
            });
        }
        let id = checkout_id(request)?;
        let checkout = self.checkout(id).await?;
        if checkout.account_id != account || checkout.currency != request.currency.code() {
            let mut whole = request.clone();
            whole.amount = http::minor(checkout.amount, request.currency).unwrap_or(request.amount);
            if let Err(contradiction) = check_checkout(&checkout, &whole, account) {
                return Ok(Lookup::Found(Err(contradiction)));
            }
        }
        let stage = Stage::of(&checkout.state);
        let done = Lookup::Found(Ok(settled(id, &checkout.state)));
        let refused = |why: &str| {
            Lookup::Found(Err(PartnerError::Declined {
                code: checkout.state.clone(),
                description: why.to_owned(),
            }))
        };
        Ok(match (request.kind, stage) {
            // A state we do not know says nothing: asked again later.
            (_, None) => {
                return Err(PartnerError::Unknown {
                    description: format!("unknown checkout state {:?}", checkout.state),
                });
            }
            (OperationKind::Capture, Some(Stage::Captured)) => done,
            (OperationKind::Capture, Some(Stage::Held | Stage::Deciding)) => Lookup::NotFound,
            (OperationKind::Capture, _) => refused("the checkout cannot be captured"),
            (OperationKind::Void, Some(Stage::Cancelled)) => done,
            (OperationKind::Void, Some(Stage::Held)) => Lookup::NotFound,
            (OperationKind::Void, _) => refused("the checkout cannot be cancelled"),
            (_, _) => match Self::refund_executed(&checkout, request)? {
                true => done,
                false => Lookup::NotFound,
            },
        })
    }
}

#[cfg(test)]
mod tests;
