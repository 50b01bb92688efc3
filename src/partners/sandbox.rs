//! The sandbox partner: an in-process, stateful simulator with its own ledger.
//!
//! It refuses to capture more than it authorized, deduplicates by partner
//! idempotency key and answers status lookups. The leg's payment token is a
//! scenario, e.g. `capture=pending,refund=timeout,latency=20ms`:
//!
//! | key | values |
//! |---|---|
//! | `authorize`, `capture`, `refund`, `void` | `success` (default), `decline`, `pending`, `pending_decline`, `timeout`, `lost`, `error` |
//! | `latency` | a delay before every answer to a request: `20ms`, `1s` |
//! | `lookup_latency` | a delay before every answer to a status lookup |
//! | `pending_lookups` | lookups before a pending request settles (default 1) |
//! | `lookup` | `error`: every status lookup fails (the partner cannot say) |
//!
//! `timeout` applies the request and loses the answer; `lost` never reaches
//! the ledger the first time (a re-send with the same key then succeeds);
//! `error` is a 5xx with nothing applied, on every attempt. A token without
//! `=` (e.g. `tok_visa_4242`) succeeds at everything.
//!
//! **Stored cards.** A successful authorization answers a stored card,
//! `card_<its reference>`: a merchant-initiated payment authorizes with it
//! (no shopper token), and it behaves as the token it was issued for. One it
//! never issued is declined (`UNKNOWN_INSTRUMENT`).
//!
//! **Hosted checkouts.** It opens hosted checkouts (`<name>-co-<n>`) whose
//! page the callback listener serves; the shopper completes one there with
//! a token (a scenario, as above), and a leg naming it then authorizes as
//! that token would. Until then its authorization is PENDING.
//!
//! **Settlements.** Every listing of settlements first closes what the
//! sandbox executed since the last one (successful captures and refunds)
//! into a new settlement per currency, dated today, with VAT per rate from
//! the requests' item lines: each import settles everything done so far.
//! Tests prepare discrepancies for the next close with
//! [`Sandbox::prepare`].

mod ledger;
mod scenario;

pub use scenario::{Outcome, Scenario};

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{
    CheckoutRequest, Lookup, OpenedCheckout, Partner, PartnerAnswer, PartnerError, PartnerRequest,
    SettlementPage, SettlementReport,
};
use crate::domain::{
    capabilities::Capabilities,
    checkout::CheckoutState,
    items::ItemLine,
    money::{Amount, Currency},
    operation::OperationKind,
    settlement::{Control, Day, EntryKind, Line, SettlementEntry, VatAmount},
};

/// A request the sandbox received, as its ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub kind: OperationKind,
    pub idempotency_key: String,
    pub amount: Amount,
    pub items: Vec<ItemLine>,
    /// The stored card an authorization was made with (merchant-initiated),
    /// as the sandbox issued it.
    pub instrument: Option<String>,
}

#[derive(Debug, Clone)]
enum EntryState {
    Pending {
        lookups_left: u32,
        decline: bool,
    },
    Succeeded,
    /// With the decline code.
    Declined(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: OperationKind,
    reference: String,
    amount: i64,
    authorization: String,
    state: EntryState,
    /// What a settlement line of it says (captures and refunds).
    line: Option<SettlementEntry>,
    /// Whether a settlement took it already.
    settled: bool,
    /// Execution order.
    sequence: u64,
}

/// A difference the next settlement should have from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discrepancy {
    /// Leave the line with this action reference out.
    Drop(String),
    /// Settle the line with this action reference for another amount.
    Alter(String, Amount),
    /// Add a line no request of ours made.
    Unknown(SettlementEntry),
}

#[derive(Debug, Clone)]
struct ClosedSettlement {
    report: SettlementReport,
    entries: Vec<SettlementEntry>,
}

/// Money on one authorization, as the sandbox sees it. Pending requests
/// count, so that the partner itself never over-captures either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationTotals {
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: i64,
}

#[derive(Debug)]
struct Authorization {
    scenario: Scenario,
    totals: AuthorizationTotals,
    /// The idempotency keys of the requests on it (its entries).
    keys: Vec<String>,
    /// When a request on it last came.
    last_request: Instant,
    /// Whether it waits in the ledger's `activity` queue (once at most).
    queued: bool,
}

/// How many received requests and arrivals the sandbox keeps for
/// inspection (the newest; tests look at far fewer).
const KEPT_RECEIVED: usize = 100_000;

#[derive(Debug, Default)]
struct Ledger {
    next_reference: u64,
    entries: HashMap<String, Entry>,
    authorizations: BTreeMap<String, Authorization>,
    received: Vec<Received>,
    /// The stored cards it issued (an authorization's `card_<reference>`),
    /// each with the scenario of the token it was issued for.
    instruments: HashMap<String, Scenario>,
    /// Every call that arrived, before its latency: also those whose caller
    /// gave up before the sandbox answered (and so never reached the ledger).
    arrivals: Vec<OperationKind>,
    /// Keys whose first send was `lost`; the re-send goes through.
    lost_once: HashMap<String, ()>,
    settlements: Vec<ClosedSettlement>,
    prepared: Vec<Discrepancy>,
    /// The hosted checkouts it opened, by id.
    hosted: HashMap<String, Hosted>,
    /// Where its hosted checkouts' pages are served (the callback
    /// listener), if anywhere.
    hosted_pages: Option<String>,
    /// Authorizations idle this long are forgotten with their entries and
    /// stored card (`None`: kept for ever).
    forget_after: Option<Duration>,
    /// Authorizations to look at, each once, about in the order they were
    /// asked about: one asked again since it was listed goes back in when
    /// it reaches the front (the queue is bounded by the authorizations).
    activity: VecDeque<(Instant, String)>,
}

/// A hosted checkout the sandbox opened.
#[derive(Debug, Clone)]
struct Hosted {
    amount: Amount,
    currency: Currency,
    /// The token (a scenario) the shopper completed it with.
    completed: Option<String>,
    /// Where it tells of its completion.
    notification_url: Option<String>,
}

/// A sandbox hosted checkout as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPage {
    pub amount: Amount,
    pub currency: Currency,
    pub completed: bool,
}

/// The sandbox partner. Clones share one ledger.
#[derive(Debug, Clone)]
pub struct Sandbox {
    name: String,
    /// What it accepts; a request beyond them is declined, as a real
    /// partner would.
    capabilities: Capabilities,
    ledger: Arc<Mutex<Ledger>>,
}

impl Sandbox {
    pub fn new(name: impl Into<String>) -> Self {
        Sandbox::with_capabilities(name, Capabilities::default())
    }

    pub fn with_capabilities(name: impl Into<String>, capabilities: Capabilities) -> Self {
        Sandbox {
            name: name.into(),
            capabilities,
            ledger: Arc::default(),
        }
    }

    /// Forgets an authorization (with its requests and stored card) once no
    /// request came on it for `idle`, and keeps only the newest requests for
    /// inspection: its memory stays bounded under endless load. Give it
    /// more than the service's payment retention, which forgets the
    /// payments first.
    pub fn forgetting_after(self, idle: Duration) -> Self {
        self.ledger().forget_after = Some(idle);
        self
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-written
        // (every mutation is a single insert/update), so poisoning is ignored.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every request that reached the sandbox, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.ledger().received.clone()
    }

    /// How many calls of `kind` arrived, answered or not.
    pub fn arrivals(&self, kind: OperationKind) -> usize {
        self.ledger()
            .arrivals
            .iter()
            .filter(|k| **k == kind)
            .count()
    }

    /// How many requests of `kind` reached the sandbox.
    pub fn received_count(&self, kind: OperationKind) -> usize {
        self.ledger()
            .received
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// Totals of every authorization, by partner reference.
    pub fn authorizations(&self) -> BTreeMap<String, AuthorizationTotals> {
        self.ledger()
            .authorizations
            .iter()
            .map(|(reference, auth)| (reference.clone(), auth.totals.clone()))
            .collect()
    }

    /// Its hosted checkouts' pages are served under `base` (the callback
    /// listener's URL): `{base}/sandbox/{name}/checkouts/{id}`.
    pub fn serve_hosted_pages(&self, base: &str) {
        self.ledger().hosted_pages = Some(base.trim_end_matches('/').to_owned());
    }

    /// A hosted checkout it opened, as its page shows it.
    pub fn hosted_page(&self, id: &str) -> Option<HostedPage> {
        self.ledger().hosted.get(id).map(|hosted| HostedPage {
            amount: hosted.amount,
            currency: hosted.currency,
            completed: hosted.completed.is_some(),
        })
    }

    /// The shopper completes a hosted checkout, paying with `token` (a
    /// scenario, as a leg's token); answers where to tell of it.
    /// Completing it again changes nothing.
    pub fn complete_checkout(&self, id: &str, token: &str) -> Result<Option<String>, String> {
        Scenario::parse(token)?;
        let mut ledger = self.ledger();
        let hosted = ledger
            .hosted
            .get_mut(id)
            .ok_or_else(|| "no such checkout".to_owned())?;
        hosted.completed.get_or_insert_with(|| token.to_owned());
        Ok(hosted.notification_url.clone())
    }

    /// The scenario a hosted checkout was completed with; `Ok(None)` while
    /// the shopper has not completed it.
    fn hosted_scenario(&self, id: &str) -> Result<Option<Scenario>, PartnerError> {
        let ledger = self.ledger();
        let hosted = ledger
            .hosted
            .get(id)
            .ok_or_else(|| PartnerError::Declined {
                code: "UNKNOWN_CHECKOUT".into(),
                description: "not a checkout opened by this sandbox".into(),
            })?;
        Ok(hosted
            .completed
            .as_deref()
            .map(|token| Scenario::parse(token).unwrap_or_default()))
    }

    /// Makes the next settlement differ from the ledger.
    pub fn prepare(&self, discrepancy: Discrepancy) {
        self.ledger().prepared.push(discrepancy);
    }

    async fn handle(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        self.ledger().arrivals.push(request.kind);
        if let Some(waiting) = self.hosted_waiting(request)? {
            return Ok(waiting);
        }
        let scenario = self.scenario_of(request)?;
        if !scenario.latency.is_zero() {
            tokio::time::sleep(scenario.latency).await;
        }
        self.apply(request, &scenario)
    }

    fn scenario_of(&self, request: &PartnerRequest) -> Result<Scenario, PartnerError> {
        match (&request.kind, &request.authorization_reference) {
            (OperationKind::Authorization, _) if request.token.checkout().is_some() => {
                let id = request.token.checkout().unwrap_or_default();
                Ok(self.hosted_scenario(id)?.unwrap_or_default())
            }
            (OperationKind::Authorization, _) if is_instrument(request.token.expose()) => {
                let card = request.token.expose();
                let mut ledger = self.ledger();
                let scenario = ledger.instruments.get(card).cloned();
                // A stored card in use keeps the authorization it came from.
                if let Some(parent) = card.strip_prefix(INSTRUMENT_PREFIX) {
                    ledger.refresh(parent, Instant::now());
                }
                scenario.ok_or_else(|| PartnerError::Declined {
                    code: "UNKNOWN_INSTRUMENT".into(),
                    description: "not a card stored by this sandbox".into(),
                })
            }
            (OperationKind::Authorization, _) => {
                Scenario::parse(request.token.expose()).map_err(|description| {
                    PartnerError::Declined {
                        code: "INVALID_TOKEN".into(),
                        description,
                    }
                })
            }
            (_, Some(reference)) => Ok(self
                .ledger()
                .authorizations
                .get(reference)
                .map(|auth| auth.scenario.clone())
                .unwrap_or_default()),
            (_, None) => Ok(Scenario::default()),
        }
    }

    fn apply(
        &self,
        request: &PartnerRequest,
        scenario: &Scenario,
    ) -> Result<PartnerAnswer, PartnerError> {
        let mut ledger = self.ledger();
        let now = Instant::now();
        ledger.forget_idle(now);
        ledger.trim_logs();
        let key = request.idempotency_key.clone();
        let outcome = scenario.outcome(request.kind);
        if outcome == Outcome::Lost && !ledger.lost_once.contains_key(&key) {
            ledger.lost_once.insert(key, ());
            return Err(PartnerError::Unknown {
                description: "connection reset before the request reached the partner".into(),
            });
        }
        let token = request.token.expose();
        ledger.received.push(Received {
            kind: request.kind,
            idempotency_key: key.clone(),
            amount: request.amount,
            items: request.items.clone(),
            instrument: (request.kind == OperationKind::Authorization && is_instrument(token))
                .then(|| token.to_owned()),
        });
        if let Some(entry) = ledger.entries.get(&key) {
            // Deduplicated: the same key never executes twice.
            return entry.answer();
        }
        if outcome == Outcome::Error {
            return Err(PartnerError::Unavailable {
                description: "sandbox answered 503, nothing applied".into(),
            });
        }
        ledger.next_reference += 1;
        let reference = format!("{}-{:06}", self.name, ledger.next_reference);
        let amount = request.amount.minor();
        let authorization = match request.kind {
            OperationKind::Authorization => {
                ledger.authorizations.insert(
                    reference.clone(),
                    Authorization {
                        scenario: scenario.clone(),
                        totals: AuthorizationTotals::default(),
                        keys: Vec::new(),
                        last_request: now,
                        queued: false,
                    },
                );
                reference.clone()
            }
            _ => request.authorization_reference.clone().unwrap_or_default(),
        };
        let refusal = match outcome {
            Outcome::Decline => Some("DECLINED"),
            _ => ledger
                .fits(request.kind, &authorization, amount, &self.capabilities)
                .err(),
        };
        let declined = refusal.is_some();
        let state = match (refusal, outcome) {
            (Some(code), _) => EntryState::Declined(code),
            (None, Outcome::Pending) => EntryState::Pending {
                lookups_left: scenario.pending_lookups,
                decline: false,
            },
            (None, Outcome::PendingDecline) => EntryState::Pending {
                lookups_left: scenario.pending_lookups,
                decline: true,
            },
            (None, _) => EntryState::Succeeded,
        };
        if !declined {
            ledger.book(request.kind, &authorization, amount);
        }
        if request.kind == OperationKind::Authorization && !declined {
            ledger
                .instruments
                .insert(instrument_of(&authorization), scenario.clone());
        }
        let line = match request.kind {
            OperationKind::Capture => Some(EntryKind::Capture),
            OperationKind::Refund => Some(EntryKind::Refund),
            _ => None,
        }
        .map(|kind| settlement_line(kind, request, &reference));
        let entry = Entry {
            kind: request.kind,
            reference,
            amount,
            authorization,
            state,
            line,
            settled: false,
            sequence: ledger.next_reference,
        };
        let answer = entry.answer();
        ledger.touch(&entry.authorization, &key, now);
        ledger.entries.insert(key, entry);
        match outcome {
            Outcome::Timeout => Err(PartnerError::Unknown {
                description: "timed out waiting for the partner's answer".into(),
            }),
            _ => answer,
        }
    }
}

impl Sandbox {
    /// The PENDING answer to the authorization of a hosted checkout the
    /// shopper has not completed; `None` for any other request.
    fn hosted_waiting(
        &self,
        request: &PartnerRequest,
    ) -> Result<Option<PartnerAnswer>, PartnerError> {
        let Some(id) = request.token.checkout() else {
            return Ok(None);
        };
        if request.kind != OperationKind::Authorization || self.hosted_scenario(id)?.is_some() {
            return Ok(None);
        }
        Ok(Some(PartnerAnswer {
            settled: false,
            reference: id.to_owned(),
            partner_status: "CHECKOUT_OPEN".into(),
            description: "waiting for the shopper to complete the hosted checkout".into(),
            instrument: None,
        }))
    }
}

/// The stored card an authorization issues: merchant-initiated payments
/// authorize with it, and it behaves as the token it was issued for.
fn instrument_of(authorization: &str) -> String {
    format!("{INSTRUMENT_PREFIX}{authorization}")
}

const INSTRUMENT_PREFIX: &str = "card_";

fn is_instrument(token: &str) -> bool {
    token.starts_with(INSTRUMENT_PREFIX)
}

/// The line a settlement shows for a capture or refund: VAT per rate from
/// the request's item lines.
fn settlement_line(kind: EntryKind, request: &PartnerRequest, reference: &str) -> SettlementEntry {
    let mut vat: BTreeMap<rust_decimal::Decimal, i64> = BTreeMap::new();
    for item in &request.items {
        *vat.entry(item.tax_rate.normalize()).or_insert(0) += item.tax_amount.minor();
    }
    let sign = kind.sign().unwrap_or(1);
    SettlementEntry {
        kind,
        amount: request.amount.minor() * sign,
        currency: request.currency,
        order_reference: request.order_reference.clone(),
        partner_reference: reference.to_owned(),
        action_reference: request.idempotency_key.clone(),
        transaction_date: Day::of(std::time::SystemTime::now()),
        vat: vat
            .into_iter()
            .filter_map(|(rate, amount)| {
                Some(VatAmount {
                    rate,
                    amount: Amount::from_minor(amount).ok()?,
                })
            })
            .collect(),
    }
}

#[async_trait]
impl Partner for Sandbox {
    /// A stored card is not a shopper's token: it is reused through the
    /// payment that stored it (`parent_payment_id`), never submitted.
    fn check_token(&self, token: &str) -> Result<(), String> {
        if is_instrument(token) {
            return Err("a stored card is reused through parent_payment_id, not submitted".into());
        }
        Scenario::parse(token).map(|_| ())
    }

    /// A page served by the callback listener, where a test or a grpcurl
    /// user completes it as the shopper.
    async fn open_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<OpenedCheckout, PartnerError> {
        let mut ledger = self.ledger();
        ledger.next_reference += 1;
        let sequence = ledger.next_reference;
        let id = format!("{}-co-{sequence:06}", self.name);
        ledger.hosted.insert(
            id.clone(),
            Hosted {
                amount: request.amount,
                currency: request.currency,
                completed: None,
                notification_url: request.notification_url.clone(),
            },
        );
        let redirect_url = ledger
            .hosted_pages
            .as_ref()
            .map(|base| format!("{base}/sandbox/{}/checkouts/{id}", self.name))
            .unwrap_or_default();
        Ok(OpenedCheckout {
            public_token: format!("{}-pt-{sequence:06}", self.name),
            id,
            redirect_url,
            expires_at: None,
        })
    }

    async fn checkout_state(&self, id: &str) -> Result<CheckoutState, PartnerError> {
        Ok(match self.hosted_scenario(id)? {
            Some(_) => CheckoutState::Completed {
                instrument: id.to_owned(),
            },
            None => CheckoutState::Open,
        })
    }

    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        self.handle(request).await
    }

    /// By the request's idempotency key: the sandbox keeps every key it
    /// executed.
    async fn lookup(
        &self,
        request: &PartnerRequest,
        _reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        if let Ok(scenario) = self.scenario_of(request)
            && !scenario.lookup_latency.is_zero()
        {
            tokio::time::sleep(scenario.lookup_latency).await;
        }
        // A hosted checkout's authorization happens when the shopper
        // completes it: looked up, it is waiting, or it is there.
        let executed = self.ledger().entries.contains_key(&request.idempotency_key);
        if request.token.checkout().is_some() && !executed {
            if let Some(waiting) = self.hosted_waiting(request)? {
                return Ok(Lookup::Found(Ok(waiting)));
            }
            let scenario = self.scenario_of(request)?;
            return Ok(Lookup::Found(self.apply(request, &scenario)));
        }
        let mut ledger = self.ledger();
        // Asked about: not idle.
        if let Some(entry) = ledger.entries.get(&request.idempotency_key) {
            let authorization = entry.authorization.clone();
            ledger.refresh(&authorization, Instant::now());
        }
        ledger.lookup(&request.idempotency_key)
    }

    fn settles(&self) -> bool {
        true
    }

    /// Closes what was executed since the last listing, then lists.
    async fn settlements(&self, since: Day) -> Result<Vec<super::Listed>, PartnerError> {
        let mut ledger = self.ledger();
        ledger.close(&self.name, Day::of(std::time::SystemTime::now()));
        Ok(ledger
            .settlements
            .iter()
            .filter(|s| s.report.date >= since)
            .map(|s| Ok(s.report.clone()))
            .collect())
    }

    async fn settlement_page(
        &self,
        report: &SettlementReport,
        page: u32,
        per_page: u32,
    ) -> Result<SettlementPage, PartnerError> {
        let reference = &report.reference;
        let ledger = self.ledger();
        let settlement = ledger
            .settlements
            .iter()
            .find(|s| &s.report.reference == reference)
            .ok_or_else(|| PartnerError::Declined {
                code: "NOT_FOUND".into(),
                description: format!("no settlement {reference}"),
            })?;
        let per_page = per_page.max(1);
        let total = settlement.entries.len();
        let skip = usize::try_from(page.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(usize::try_from(per_page).unwrap_or(usize::MAX));
        Ok(SettlementPage {
            lines: settlement
                .entries
                .iter()
                .skip(skip)
                .take(usize::try_from(per_page).unwrap_or(usize::MAX))
                .cloned()
                .map(Line::Entry)
                .collect(),
            total: Some(u64::try_from(total).unwrap_or(u64::MAX)),
            pages: Some(
                u32::try_from(total.div_ceil(usize::try_from(per_page).unwrap_or(1)))
                    .unwrap_or(u32::MAX),
            ),
        })
    }
}

#[cfg(test)]
mod tests;
