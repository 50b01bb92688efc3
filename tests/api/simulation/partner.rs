//! A simulated partner for the deterministic simulation: a ledger of holds
//! and what each one captured, refunded and voided, kept by the effects the
//! partner *applied* (not the requests it received). Its answers can be
//! lost, slow (applied later), refused for now, declined, pending, or
//! invisible to lookups for a while, as the world's dice say. It
//! deduplicates some kinds by our partner idempotency key and not others.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use payment_orchestrator::{
    domain::operation::OperationKind,
    partners::{InstrumentUse, Lookup, Partner, PartnerAnswer, PartnerError, PartnerRequest},
};
use tokio::time::Instant;

use super::world::{Dice, Trace};

/// Longer than any caller waits: an answer that never comes.
const HANG: Duration = Duration::from_secs(3 * 3600);

/// One authorization at the partner and what was done with it (minor
/// units).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    pub instrument: String,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: i64,
}

/// What the partner did for one of our keys.
#[derive(Debug, Clone)]
pub struct Done {
    pub result: Result<PartnerAnswer, PartnerError>,
    /// Lookups do not see it before (eventual consistency).
    pub visible_at: Instant,
    /// A pending answer becomes settled then.
    pub settles_at: Option<Instant>,
}

impl Done {
    fn answer(&self, now: Instant) -> Result<PartnerAnswer, PartnerError> {
        match (&self.result, self.settles_at) {
            (Ok(answer), Some(at)) => Ok(PartnerAnswer {
                settled: now >= at,
                ..answer.clone()
            }),
            (result, _) => result.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// By the partner's reference of the authorization.
    pub holds: BTreeMap<String, Hold>,
    /// By our partner idempotency key (`<operation>:<leg>`).
    pub done: BTreeMap<String, Done>,
    /// Sends received, by our key, with their kind.
    pub sends: BTreeMap<String, (OperationKind, u32)>,
    next: u32,
    /// Every call is refused until then (a storm of 429s, or an order not
    /// visible yet): retries within a send's window meet it too.
    refusing_until: Option<Instant>,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    /// Refused before processing (a 429): nothing applied.
    Unavailable,
    /// Never reached the partner, no answer.
    LostRequest,
    /// Applied, the answer is lost.
    LostAnswer,
    /// Applied and answered this much later.
    Slow(Duration),
    Declined,
    /// Accepted: settled this much later.
    Pending(Duration),
}

#[derive(Debug, Clone)]
pub struct SimPartner {
    pub name: &'static str,
    /// Per kind (authorize, capture, refund, void): deduplicated by our key.
    dedupes: [bool; 4],
    instruments: InstrumentUse,
    /// How long an attempt may take before the caller gives up.
    timeout: Duration,
    dice: Dice,
    trace: Trace,
    pub ledger: Arc<Mutex<Ledger>>,
}

fn slot(kind: OperationKind) -> usize {
    match kind {
        OperationKind::Authorization => 0,
        OperationKind::Capture => 1,
        OperationKind::Refund => 2,
        OperationKind::Void => 3,
    }
}

impl SimPartner {
    pub fn new(
        name: &'static str,
        dedupes: [bool; 4],
        instruments: InstrumentUse,
        timeout: Duration,
        dice: Dice,
        trace: Trace,
    ) -> SimPartner {
        SimPartner {
            name,
            dedupes,
            instruments,
            timeout,
            dice,
            trace,
            ledger: Arc::default(),
        }
    }

    pub fn dedupes(&self, kind: OperationKind) -> bool {
        self.dedupes[slot(kind)]
    }

    fn fate(&self) -> Fate {
        let dice = &self.dice;
        if !dice.faults() {
            return Fate::Normal;
        }
        match dice.below(100) {
            0..=49 => Fate::Normal,
            50..=57 => Fate::Unavailable,
            58..=64 => Fate::LostRequest,
            65..=73 => Fate::LostAnswer,
            74..=84 => Fate::Slow(self.timeout.mul_f64(dice.fraction() * 1.6)),
            85..=90 => Fate::Declined,
            _ => Fate::Pending(Duration::from_secs(dice.below(120))),
        }
    }

    async fn call(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let key = request.idempotency_key.clone();
        let refusing = {
            let mut ledger = self.ledger.lock().unwrap();
            let now = Instant::now();
            if self.dice.faults()
                && ledger.refusing_until.is_none_or(|until| until <= now)
                && self.dice.below(25) == 0
            {
                ledger.refusing_until = Some(now + Duration::from_millis(self.dice.below(6000)));
            }
            ledger.refusing_until.is_some_and(|until| until > now)
        };
        let fate = if refusing {
            Fate::Unavailable
        } else {
            self.fate()
        };
        match fate {
            Fate::Unavailable => {
                self.trace
                    .note(format!("{} {key}: refused for now", self.name));
                return Err(PartnerError::Unavailable {
                    description: "429".into(),
                });
            }
            Fate::LostRequest => {
                self.trace
                    .note(format!("{} {key}: request lost", self.name));
                tokio::time::sleep(HANG).await;
                return Err(PartnerError::Unknown {
                    description: "never answered".into(),
                });
            }
            _ => {}
        }
        let (arrives, answers) = match fate {
            Fate::Slow(after) => (after, Duration::ZERO),
            Fate::LostAnswer => (Duration::ZERO, HANG),
            _ => (Duration::ZERO, Duration::ZERO),
        };
        // The partner applies it whatever becomes of the caller.
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let partner = self.clone();
        let request = request.clone();
        tokio::spawn(async move {
            if !arrives.is_zero() {
                tokio::time::sleep(arrives).await;
            }
            let result = partner.apply(&request, fate);
            if !answers.is_zero() {
                tokio::time::sleep(answers).await;
            }
            let _ = sender.send(result);
        });
        receiver.await.unwrap_or_else(|_| {
            Err(PartnerError::Unknown {
                description: "no answer".into(),
            })
        })
    }

    /// Executes one request that reached the partner.
    fn apply(&self, request: &PartnerRequest, fate: Fate) -> Result<PartnerAnswer, PartnerError> {
        let now = Instant::now();
        let key = request.idempotency_key.clone();
        let mut ledger = self.ledger.lock().unwrap();
        let sends = ledger.sends.entry(key.clone()).or_insert((request.kind, 0));
        sends.1 += 1;
        if self.dedupes(request.kind)
            && let Some(done) = ledger.done.get(&key)
        {
            self.trace
                .note(format!("{} {key}: deduplicated", self.name));
            return done.answer(now);
        }
        let result = match fate {
            Fate::Declined => Err(PartnerError::Declined {
                code: "SIM_DECLINED".into(),
                description: "declined by the dice".into(),
            }),
            _ => execute(&mut ledger, self.name, request),
        };
        let pending = match fate {
            Fate::Pending(after) if result.is_ok() => Some(now + after),
            _ => None,
        };
        let invisible = if self.dice.faults() && self.dice.below(4) == 0 {
            Duration::from_secs(self.dice.below(90))
        } else {
            Duration::ZERO
        };
        ledger.done.insert(
            key.clone(),
            Done {
                result: result.clone(),
                visible_at: now + invisible,
                settles_at: pending,
            },
        );
        self.trace.note(format!(
            "{} {key}: {:?} {} -> {}",
            self.name,
            request.kind,
            request.amount,
            match &result {
                Ok(_) if pending.is_some() => "pending".to_owned(),
                Ok(answer) => format!("done {}", answer.reference),
                Err(error) => format!("{error}"),
            }
        ));
        match (result, pending) {
            (Ok(answer), Some(_)) => Ok(PartnerAnswer {
                settled: false,
                ..answer
            }),
            (result, _) => result,
        }
    }
}

/// The partner's business rules: an authorization opens a hold; a capture,
/// refund or void never takes more than the hold has left.
fn execute(
    ledger: &mut Ledger,
    partner: &str,
    request: &PartnerRequest,
) -> Result<PartnerAnswer, PartnerError> {
    let amount = request.amount.minor();
    let done = |reference: String| PartnerAnswer {
        settled: true,
        reference,
        partner_status: "DONE".into(),
        description: String::new(),
        instrument: None,
    };
    let refuse = |code: &str| PartnerError::Declined {
        code: code.into(),
        description: "refused by the partner's ledger".into(),
    };
    if request.kind == OperationKind::Authorization {
        ledger.next += 1;
        let reference = format!("{partner}-{}", ledger.next);
        ledger.holds.insert(
            reference.clone(),
            Hold {
                instrument: request.token.expose().to_owned(),
                authorized: amount,
                ..Hold::default()
            },
        );
        return Ok(done(reference));
    }
    let Some(hold) = request
        .authorization_reference
        .as_ref()
        .and_then(|reference| ledger.holds.get_mut(reference))
    else {
        return Err(refuse("NO_HOLD"));
    };
    let open = hold.authorized - hold.captured - hold.voided;
    match request.kind {
        OperationKind::Capture if amount <= open => hold.captured += amount,
        OperationKind::Void if amount <= open => hold.voided += amount,
        OperationKind::Refund if amount <= hold.captured - hold.refunded => {
            hold.refunded += amount;
        }
        _ => return Err(refuse("NOT_ENOUGH_LEFT")),
    }
    Ok(done(request.idempotency_key.clone()))
}

#[async_trait]
impl Partner for SimPartner {
    fn resends_safely(&self, kind: OperationKind) -> bool {
        self.dedupes(kind)
    }

    fn instrument_use(&self) -> InstrumentUse {
        self.instruments
    }

    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        self.call(request).await
    }

    async fn lookup(
        &self,
        request: &PartnerRequest,
        _reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        if self.dice.faults() && self.dice.below(10) == 0 {
            return Err(PartnerError::Unavailable {
                description: "lookup refused for now".into(),
            });
        }
        let now = Instant::now();
        let ledger = self.ledger.lock().unwrap();
        Ok(match ledger.done.get(&request.idempotency_key) {
            Some(done) if now >= done.visible_at => Lookup::Found(done.answer(now)),
            _ => Lookup::NotFound,
        })
    }
}
