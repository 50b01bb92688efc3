//! The simulation's state: tokenized cards and checkouts, and how a create,
//! capture, cancel or refund changes them.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use rust_decimal::Decimal;

use super::{
    Account, Outcome, error, finish, refusal,
    wire::{self, CancelCheckout, CaptureCheckout, CreateCheckout, RefundCheckout, StateAnswer},
};
use crate::simulation::{self, Common, Effect, Executed, Fault, Simulation, answer};
use payment_orchestrator::domain::money::{Amount, Currency};

/// A checkout still `new` after this expires.
const NEW_EXPIRES_AFTER: Duration = Duration::from_secs(30 * 60);
/// A reserved checkout not captured after this is cancelled.
const RESERVED_CANCELLED_AFTER: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug)]
pub struct Wepay {
    pub(super) common: Common,
    pub(super) account: Account,
    pub(super) cards: HashMap<i64, Card>,
    pub(super) checkouts: BTreeMap<i64, Checkout>,
    by_unique_id: HashMap<String, i64>,
    pub(super) next_card: i64,
    next_checkout: i64,
}

impl Wepay {
    pub(super) fn new(account: Account) -> Wepay {
        Wepay {
            common: Common::default(),
            account,
            cards: HashMap::new(),
            checkouts: BTreeMap::new(),
            by_unique_id: HashMap::new(),
            next_card: 4_000_000_000,
            next_checkout: 1_000_000,
        }
    }
}

impl Simulation for Wepay {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

#[derive(Debug, Default)]
pub struct Card {
    pub(super) processing: Duration,
    pub(super) faults: Vec<Fault>,
}

#[derive(Debug)]
pub struct Checkout {
    id: i64,
    card: i64,
    kind: String,
    short_description: String,
    currency: Currency,
    amount: Amount,
    refunded: Amount,
    refund_reason: Option<String>,
    /// What the card holder's bank took back (`POST /_sim/charge_back`).
    pub(super) charged_back: Amount,
    pub(super) reference_id: String,
    /// `new`, `authorized`, `captured`, `cancelled`, `refunded`, `expired`.
    pub(super) state: &'static str,
    decided_at: Instant,
    created_at: SystemTime,
    /// A hosted checkout: where its state changes are told (its IPN).
    pub(super) hosted: Option<Hosted>,
}

/// What a hosted checkout adds.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub(super) callback_uri: Option<String>,
}

/// A hosted checkout stays `new` until the shopper completes it.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Checkout {
    /// Moves the state on with time.
    pub(super) fn age(&mut self, sim_now: SystemTime) {
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

    pub(super) fn wire(&self, account_id: i64) -> wire::Checkout {
        let refunded = self.refunded.to_major(self.currency);
        wire::Checkout {
            checkout_id: self.id,
            account_id,
            kind: self.kind.clone(),
            short_description: self.short_description.clone(),
            currency: self.currency.code().into(),
            amount: self.amount.to_major(self.currency),
            state: self.state.into(),
            reference_id: self.reference_id.clone(),
            create_time: self
                .created_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            refund: wire::Refund {
                amount_refunded: refunded,
                refund_reason: self.refund_reason.clone(),
            },
            amount_refunded: refunded,
            amount_charged_back: self.charged_back.to_major(self.currency),
            hosted_checkout: self.hosted.as_ref().map(|_| {
                serde_json::json!({
                    "checkout_uri": format!("https://stage.wepay.com/api/checkout/{}", self.id),
                })
            }),
        }
    }

    /// The card holder's bank takes `amount` back (`None`: all of it) — a
    /// captured checkout only; `Some(0)` gives it back: the dispute was won.
    pub(super) fn charge_back(&mut self, amount: Option<Decimal>) -> Result<(), &'static str> {
        if !matches!(self.state, "captured" | "charged back") {
            return Err("only a captured checkout can be charged back");
        }
        let amount = match amount {
            None => self.amount,
            Some(major) => Amount::from_major(major, self.currency).map_err(|_| "not an amount")?,
        };
        if amount > self.amount {
            return Err("more than the checkout");
        }
        self.charged_back = amount;
        self.state = if amount.is_zero() {
            "captured"
        } else {
            "charged back"
        };
        Ok(())
    }
}

pub(super) fn read_checkout(sim: &Wepay, id: i64) -> axum::response::Response {
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

pub(super) fn create_checkout(
    sim: &mut Wepay,
    create: CreateCheckout,
    sim_now: SystemTime,
) -> Outcome {
    if create.account_id != sim.account.account_id {
        return Outcome::Now(error(403, 1002, "not your account"));
    }
    if let Some(id) = create
        .unique_id
        .as_ref()
        .and_then(|key| sim.by_unique_id.get(key))
    {
        return Outcome::Now(read_checkout(sim, *id));
    }
    let Ok(currency) = Currency::parse(&create.currency) else {
        return Outcome::Now(error(400, 1003, "unknown currency"));
    };
    let amount = simulation::minor_units(create.amount, currency).filter(|a| !a.is_zero());
    let Some(amount) = amount else {
        return Outcome::Now(error(400, 1003, "the amount does not fit the currency"));
    };
    if create.payment_method.is_none() && create.hosted_checkout.is_some() {
        if create.auto_capture.unwrap_or(true) {
            return Outcome::Now(error(400, 1003, "the simulation serves auto_capture=false"));
        }
        return Outcome::Now(create_hosted(sim, create, currency, amount, sim_now));
    }
    let card = create
        .payment_method
        .as_ref()
        .filter(|method| method.kind == "credit_card")
        .and_then(|method| method.credit_card.as_ref());
    let Some(card) = card else {
        return Outcome::Now(error(400, 1003, "the simulation serves tokenized cards"));
    };
    // `auto_capture` at the top level (2015-08-15) or in the card (later);
    // `true` when absent.
    if create.auto_capture.or(card.auto_capture).unwrap_or(true) {
        return Outcome::Now(error(400, 1003, "the simulation serves auto_capture=false"));
    }
    let card = card.id;
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
        card,
        state: if processing.is_zero() {
            "authorized"
        } else {
            "new"
        },
        decided_at: Instant::now() + processing,
        ..Checkout::opened(id, &create, currency, amount, sim_now)
    };
    sim.common.ledger.executed.push(Executed {
        on: id.to_string(),
        kind: "authorize".into(),
        amount: major_string(amount, currency),
        reference: create.unique_id.clone().unwrap_or_default(),
    });
    finish(effect, keep(sim, create.unique_id, checkout))
}

impl Checkout {
    /// The checkout `create` asks for, as opened: `new`, on no card, never
    /// decided by itself.
    fn opened(
        id: i64,
        create: &CreateCheckout,
        currency: Currency,
        amount: Amount,
        sim_now: SystemTime,
    ) -> Checkout {
        Checkout {
            id,
            card: 0,
            kind: create.kind.clone(),
            short_description: create.short_description.clone(),
            currency,
            amount,
            refunded: Amount::ZERO,
            refund_reason: None,
            charged_back: Amount::ZERO,
            reference_id: create.reference_id.clone().unwrap_or_default(),
            state: "new",
            decided_at: Instant::now() + NEVER,
            created_at: sim_now,
            hosted: None,
        }
    }
}

/// Keeps a new checkout (findable by its `unique_id`) and answers it.
fn keep(
    sim: &mut Wepay,
    unique_id: Option<String>,
    checkout: Checkout,
) -> axum::response::Response {
    let response = answer(200, &checkout.wire(sim.account.account_id));
    if let Some(key) = unique_id {
        sim.by_unique_id.insert(key, checkout.id);
    }
    sim.checkouts.insert(checkout.id, checkout);
    response
}

/// A hosted checkout: `new` until the shopper completes it on WePay's page.
fn create_hosted(
    sim: &mut Wepay,
    create: CreateCheckout,
    currency: Currency,
    amount: Amount,
    sim_now: SystemTime,
) -> axum::response::Response {
    sim.next_checkout += 1;
    let id = sim.next_checkout;
    let checkout = Checkout {
        hosted: Some(Hosted {
            callback_uri: create.callback_uri.clone(),
        }),
        ..Checkout::opened(id, &create, currency, amount, sim_now)
    };
    keep(sim, create.unique_id, checkout)
}

/// The shopper completes a hosted checkout: it is reserved (`authorized`);
/// answers where to send the IPN, or why it cannot be completed.
pub(super) fn complete_hosted(
    sim: &mut Wepay,
    id: i64,
) -> Result<Option<String>, (u16, &'static str)> {
    let sim_now = sim.common.now();
    let checkout = sim
        .checkouts
        .get_mut(&id)
        .ok_or((404, "no such checkout"))?;
    checkout.age(sim_now);
    let hosted = checkout
        .hosted
        .clone()
        .ok_or((400, "not a hosted checkout"))?;
    match checkout.state {
        "new" => {
            checkout.state = "authorized";
            let executed = Executed {
                on: id.to_string(),
                kind: "authorize".into(),
                amount: major_string(checkout.amount, checkout.currency),
                reference: checkout.reference_id.clone(),
            };
            sim.common.ledger.executed.push(executed);
            Ok(hosted.callback_uri)
        }
        "authorized" => Ok(None),
        _ => Err((422, "the checkout can no longer be completed")),
    }
}

/// A capture, cancel or refund of one checkout, checked and ready to apply.
#[derive(Debug)]
pub struct Change {
    id: i64,
    call: String,
    /// A refund: the amount asked for (all that is left when `None`) and
    /// the reason.
    refund: Option<(Option<Decimal>, String)>,
}

/// Capture, cancel or refund of one checkout.
pub(super) fn change(sim: &mut Wepay, call: &str, body: &[u8]) -> Outcome {
    let bad_body = || Outcome::Now(error(400, 1003, "the body does not parse"));
    let (id, refund) = match call {
        "refund" => match serde_json::from_slice::<RefundCheckout>(body) {
            Ok(refund) => (
                refund.checkout_id,
                Some((refund.amount, refund.refund_reason)),
            ),
            Err(_) => return bad_body(),
        },
        "cancel" => match serde_json::from_slice::<CancelCheckout>(body) {
            Ok(cancel) => (cancel.checkout_id, None),
            Err(_) => return bad_body(),
        },
        _ => match serde_json::from_slice::<CaptureCheckout>(body) {
            Ok(capture) => (capture.checkout_id, None),
            Err(_) => return bad_body(),
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
pub(super) fn apply_change(sim: &mut Wepay, change: Change, effect: Option<Effect>) -> Outcome {
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
        ("refund", Some((amount, reason))) if checkout.state == "captured" => {
            let left = checkout.amount.saturating_sub(checkout.refunded);
            let amount = match amount {
                None => Some(left),
                Some(major) => simulation::minor_units(major, checkout.currency),
            };
            let Some(amount) = amount.filter(|a| !a.is_zero() && *a <= left) else {
                return Outcome::Now(error(400, 4005, "the refund amount is not refundable"));
            };
            checkout.refunded = checkout.refunded.checked_add(amount).unwrap_or(left);
            checkout.refund_reason = Some(reason);
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
