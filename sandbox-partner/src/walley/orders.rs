//! The simulation's state: orders, their captures, refunds and cancellation,
//! the checkouts that place them, and how an action is validated and booked.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    Credentials,
    wire::{self, ActionRequest, CancelRequest, Problem},
};
use crate::simulation::{self, Common, Executed, Fault, Simulation};
use payment_orchestrator::domain::money::{Amount, Currency};

#[derive(Debug)]
pub struct Walley {
    pub(super) common: Common,
    pub(super) credentials: Credentials,
    pub(super) tokens: HashSet<String>,
    pub(super) orders: BTreeMap<String, Order>,
    /// Answers by `X-Idempotency` key.
    pub(super) answered: HashMap<String, Answer>,
    pub(super) next_order: u64,
    pub(super) settlements: Vec<ClosedSettlement>,
    /// Captures and refunds (`kind:actionReference`) already settled.
    pub(super) settled: HashSet<String>,
    /// Checkouts by private id.
    pub(super) checkouts: HashMap<String, Checkout>,
}

impl Walley {
    pub(super) fn new(credentials: Credentials) -> Walley {
        Walley {
            common: Common::default(),
            credentials,
            tokens: HashSet::new(),
            orders: BTreeMap::new(),
            answered: HashMap::new(),
            next_order: 1,
            settlements: Vec::new(),
            settled: HashSet::new(),
            checkouts: HashMap::new(),
        }
    }
}

impl Simulation for Walley {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

/// A Walley Checkout the simulation opened (see `checkouts`).
#[derive(Debug, Clone)]
pub struct Checkout {
    pub(super) reference: String,
    pub(super) country_code: String,
    pub(super) currency: Currency,
    pub(super) total: Decimal,
    pub(super) notification_uri: Option<String>,
    pub(super) expires_at: SystemTime,
    /// Once the shopper completed it.
    pub(super) order_id: Option<String>,
}

/// What a capture, refund or cancel was answered: kept by idempotency key
/// and answered again to a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `202 Accepted`, no body, `Location: /manage/orders/{id}`.
    Accepted {
        location: String,
    },
    Refused(u16, Problem),
}

impl Answer {
    pub(super) fn refused(status: u16, code: &str, title: &str) -> Answer {
        Answer::Refused(status, Problem::new(code, title))
    }
}

/// A settlement closed by `/_sim/settlements`, as the report API serves it.
#[derive(Debug)]
pub struct ClosedSettlement {
    pub summary: wire::SettlementSummary,
    /// As served: the lines the simulation made, and any raw ones a test
    /// asked for (which need not read).
    pub lines: Vec<serde_json::Value>,
    /// Reads of its lines still to be refused (`422`), as a test asked.
    pub refusals_left: u32,
    /// A page whose next read is refused (`422`), as a test asked.
    pub refused_page: Option<u64>,
    /// Every page read serves the first one and says more follow (a
    /// partner that ignores `page`), as a test asked.
    pub endless: bool,
}

#[derive(Debug)]
pub struct Order {
    pub(super) id: String,
    pub(super) reference: String,
    pub(super) currency: Currency,
    pub(super) total: Amount,
    pub(super) visible_at: Instant,
    pub(super) processing: Duration,
    pub(super) expires_at: Option<SystemTime>,
    pub(super) captures: Vec<Action>,
    pub(super) refunds: Vec<Action>,
    pub(super) cancellation: Option<Action>,
    pub(super) faults: Vec<Fault>,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub(super) reference: String,
    pub(super) amount: Amount,
    pub(super) ready_at: Instant,
    /// VAT per rate of its items (major units).
    pub(super) vat: Vec<(Decimal, Decimal)>,
}

impl Action {
    pub(super) fn completed(&self, now: Instant) -> bool {
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

    pub(super) fn wire(&self, now: Instant, sim_now: SystemTime) -> wire::Order {
        let action = |a: &Action| wire::Action {
            action_reference: Some(a.reference.clone()),
            amount: a.amount.to_major(self.currency),
            status: if a.completed(now) {
                "Completed"
            } else {
                "Pending"
            },
        };
        wire::Order {
            id: self.id.clone(),
            reference: self.reference.clone(),
            total_amount: self.total.to_major(self.currency),
            currency: self.currency.code().into(),
            status: self.status(now, sim_now).into(),
            captures: self.captures.iter().map(action).collect(),
            refunds: self.refunds.iter().map(action).collect(),
            cancellation: self.cancellation.as_ref().map(action),
        }
    }

    fn accepted(&self) -> Answer {
        Answer::Accepted {
            location: format!("/manage/orders/{}", self.id),
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

impl PlaceOrder {
    /// The order placed at `sim_now` under `id`.
    pub(super) fn into_order(
        self,
        id: String,
        currency: Currency,
        total: Amount,
        sim_now: SystemTime,
    ) -> Order {
        Order {
            id,
            reference: self.reference,
            currency,
            total,
            visible_at: Instant::now() + Duration::from_millis(self.invisible_for_ms),
            processing: Duration::from_millis(self.processing_ms),
            expires_at: self
                .expires_in_seconds
                .map(|seconds| sim_now + Duration::from_secs(seconds)),
            captures: Vec::new(),
            refunds: Vec::new(),
            cancellation: None,
            faults: self.faults,
        }
    }
}

/// The two forms of an action's path Walley's documents show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathForm {
    /// `/manage/orders/{id}/capture`, `/refund`, `/cancel`.
    Managed,
    /// `/orders/{id}/captures`, `/refunds`.
    Orders,
}

impl PathForm {
    pub(super) fn path(self, id: &str, action: &str) -> String {
        match self {
            PathForm::Managed => format!("/manage/orders/{id}/{action}"),
            PathForm::Orders => format!("/orders/{id}/{action}"),
        }
    }
}

/// Which action a POST on an order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capture,
    Refund,
    Cancel,
}

impl Kind {
    /// Each form with its own spellings only: `/manage/orders/{id}/captures`
    /// is in neither document, and is `404`.
    pub(super) fn of_path(form: PathForm, path: &str) -> Option<Kind> {
        Some(match (form, path) {
            (PathForm::Managed, "capture") | (PathForm::Orders, "captures") => Kind::Capture,
            (PathForm::Managed, "refund") | (PathForm::Orders, "refunds") => Kind::Refund,
            (PathForm::Managed, "cancel") => Kind::Cancel,
            _ => return None,
        })
    }

    /// The name of its faults and of its ledger entries.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Capture => "capture",
            Kind::Refund => "refund",
            Kind::Cancel => "cancel",
        }
    }
}

/// Validates and books one action on the order.
pub(super) fn execute(
    order: &mut Order,
    kind: Kind,
    body: &[u8],
    sim_now: SystemTime,
    alter: bool,
) -> (Answer, Option<Executed>) {
    let refuse =
        |status: u16, code: &str, title: &str| (Answer::refused(status, code, title), None);
    let now = Instant::now();
    if order.status(now, sim_now) == "Expired" {
        return refuse(422, "ORDER_EXPIRED", "the order expired");
    }
    let ready_at = now + order.processing;
    if kind == Kind::Cancel {
        // The body is optional: nothing, or `{"actionReference"}`.
        let cancel = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(CancelRequest::default())
        } else {
            serde_json::from_slice::<CancelRequest>(body)
        };
        let Ok(cancel) = cancel else {
            return refuse(400, "INVALID_REQUEST", "the body is not a cancel");
        };
        if order.cancellation.is_some() {
            return refuse(422, "ALREADY_CANCELLED", "the order is cancelled");
        }
        let remainder = order.capturable();
        if remainder.is_zero() {
            return refuse(422, "NOTHING_TO_CANCEL", "everything is captured");
        }
        let reference = cancel.action_reference.unwrap_or_default();
        order.cancellation = Some(Action {
            reference: reference.clone(),
            amount: remainder,
            ready_at,
            vat: Vec::new(),
        });
        let executed = Executed {
            on: order.id.clone(),
            kind: "cancel".into(),
            amount: remainder.to_major(order.currency).to_string(),
            reference,
        };
        return (order.accepted(), Some(executed));
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
    let reference = request.action_reference.clone().unwrap_or_default();
    let actions = if kind == Kind::Capture {
        &order.captures
    } else {
        &order.refunds
    };
    // The same actionReference again executes nothing.
    if request.action_reference.is_some() && actions.iter().any(|a| a.reference == reference) {
        return (order.accepted(), None);
    }
    let left = match kind {
        Kind::Capture => order.capturable(),
        _ => order.refundable(now),
    };
    if amount > left {
        return refuse(422, "AMOUNT_EXCEEDS_REMAINING", "more than is left");
    }
    let action = Action {
        reference: reference.clone(),
        amount,
        ready_at,
        vat: vat_per_rate(&request.items, order.currency),
    };
    match kind {
        Kind::Capture => order.captures.push(action),
        _ => order.refunds.push(action),
    }
    let executed = Executed {
        on: order.id.clone(),
        kind: kind.name().into(),
        amount: amount.to_major(order.currency).to_string(),
        reference,
    };
    (order.accepted(), Some(executed))
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
