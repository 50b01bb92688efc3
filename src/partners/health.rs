//! Partner health: a circuit per partner, so that a partner that keeps
//! failing is walked around instead of tried first every time.
//!
//! - **Closed** (healthy): every answer counts. `failures` consecutive
//!   answers that say nothing — `Unavailable`, or an unknown outcome (a
//!   timeout, a 5xx once the request may have applied) — of sends and
//!   lookups alike open it.
//! - **Open**: for `cool_down`, captures and voids walk the partner's legs
//!   last (a leg that must be used is still sent), and `ListPaymentMethods`
//!   leaves its methods out.
//! - **Half-open**: after the cool-down, the next operation opened that
//!   calls the partner is its trial (routed as if healthy; its methods are
//!   offered again, so a new payment may be it); the others walk around it
//!   while the trial runs. Any answer that is not a failure closes the
//!   circuit; a failure opens it for another cool-down. A trial that never
//!   reports back lets another one through after a cool-down.
//!
//! Each replica keeps its circuits in memory; the changes it makes (open,
//! closed) are told to the other replicas through the store's notices
//! ([`HealthNotice`]), so no request reads the store for them. The time is
//! the service's [`Clock`].

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use uuid::Uuid;

use crate::clock::Clock;

/// How a partner's circuit behaves (per partner in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// `false`: the partner is always tried in its priority position.
    pub enabled: bool,
    /// Consecutive `Unavailable` answers or timeouts that open it.
    pub failures: u32,
    /// How long it stays open before a trial call.
    pub cool_down: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            enabled: true,
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// One partner's circuit as `ListPartnerHealth` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerHealth {
    pub partner: String,
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// When it last opened or closed (`None`: never since the start).
    pub changed_at: Option<SystemTime>,
    /// While open: when the next trial may go.
    pub retry_at: Option<SystemTime>,
    pub settings: CircuitSettings,
}

/// A change of one replica's circuit, told to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthNotice {
    pub partner: String,
    pub open: bool,
    /// The replica that saw it (which ignores its own notice).
    pub replica: Uuid,
}

impl HealthNotice {
    /// `open <replica> <partner>` or `closed <replica> <partner>`.
    pub fn encode(&self) -> String {
        let state = if self.open { "open" } else { "closed" };
        format!("{state} {} {}", self.replica, self.partner)
    }

    pub fn decode(text: &str) -> Option<HealthNotice> {
        let mut parts = text.splitn(3, ' ');
        let open = match parts.next()? {
            "open" => true,
            "closed" => false,
            _ => return None,
        };
        let replica = Uuid::try_parse(parts.next()?).ok()?;
        let partner = parts.next().filter(|p| !p.is_empty())?.to_owned();
        Some(HealthNotice {
            partner,
            open,
            replica,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: SystemTime,
    },
    /// A trial went at `since`.
    HalfOpen {
        since: SystemTime,
    },
}

#[derive(Debug)]
struct Circuit {
    settings: CircuitSettings,
    state: State,
    consecutive: u32,
    changed_at: Option<SystemTime>,
}

impl Circuit {
    fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// Open (or on a trial) for a whole cool-down: a call may go.
    fn trial_due(&self, now: SystemTime) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now >= until,
            State::HalfOpen { since } => now >= later(since, self.settings.cool_down),
        }
    }
}

/// `at + by`, or `at` itself should that not be a time.
fn later(at: SystemTime, by: Duration) -> SystemTime {
    at.checked_add(by).unwrap_or(at)
}

/// The longest cool-down (a longer setting is this).
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(86_400);

/// Every partner's circuit on this replica.
#[derive(Debug)]
pub struct Health {
    clock: Arc<dyn Clock>,
    replica: Uuid,
    circuits: Mutex<BTreeMap<String, Circuit>>,
    /// Whether any circuit is open: while none is (nearly always), routing
    /// reads this and takes no lock.
    any_open: AtomicBool,
    /// Whether any circuit counts failures or is open: while none does, an
    /// answer takes no lock.
    any_failing: AtomicBool,
    changes: tokio::sync::broadcast::Sender<HealthNotice>,
}

impl Health {
    pub fn new(
        clock: Arc<dyn Clock>,
        settings: impl IntoIterator<Item = (String, CircuitSettings)>,
    ) -> Health {
        let circuits = settings
            .into_iter()
            .map(|(partner, mut settings)| {
                settings.cool_down = settings.cool_down.min(MAX_COOL_DOWN);
                set_metric(&partner, false);
                let circuit = Circuit {
                    settings,
                    state: State::Closed,
                    consecutive: 0,
                    changed_at: None,
                };
                (partner, circuit)
            })
            .collect();
        Health {
            clock,
            replica: Uuid::new_v4(),
            circuits: Mutex::new(circuits),
            any_open: AtomicBool::new(false),
            any_failing: AtomicBool::new(false),
            changes: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// The changes this replica makes, to tell the others.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<HealthNotice> {
        self.changes.subscribe()
    }

    /// Counts an answer of `partner`: `failed` for an `Unavailable` answer
    /// or a timeout.
    pub fn record(&self, partner: &str, failed: bool) {
        // An answer while no partner is failing (nearly always) changes
        // nothing: no lock.
        if !failed && !self.any_failing.load(Ordering::Acquire) {
            return;
        }
        let now = self.clock.now();
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(circuit) = circuits.get_mut(partner) else {
            return;
        };
        if !circuit.settings.enabled {
            return;
        }
        if failed {
            self.any_failing.store(true, Ordering::Release);
        } else {
            circuit.consecutive = 0;
            if !matches!(circuit.state, State::Closed) {
                self.change(partner, circuit, false, now, "the partner answered");
                self.any_open
                    .store(circuits.values().any(Circuit::is_open), Ordering::Release);
            }
            let failing = circuits.values().any(|c| c.consecutive > 0 || c.is_open());
            self.any_failing.store(failing, Ordering::Release);
            return;
        }
        circuit.consecutive = circuit.consecutive.saturating_add(1);
        let opens = match circuit.state {
            State::Closed => circuit.consecutive >= circuit.settings.failures,
            // A trial, or a call made once a trial was due, failed.
            State::HalfOpen { .. } => true,
            State::Open { .. } => circuit.trial_due(now),
        };
        if opens {
            let why = format!("{} consecutive failures", circuit.consecutive);
            self.change(partner, circuit, true, now, &why);
            self.any_open.store(true, Ordering::Release);
        }
    }

    /// Of `partners`, those an operation opened now should walk last: the
    /// open circuits not due for a trial. Changes nothing.
    pub fn avoided<'a>(&self, partners: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        if !self.any_open.load(Ordering::Acquire) {
            return Vec::new();
        }
        let now = self.clock.now();
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let mut avoided: Vec<String> = Vec::new();
        for partner in partners {
            let walked_around = circuits
                .get(partner)
                .is_some_and(|circuit| !circuit.trial_due(now) && circuit.is_open());
            if walked_around && !avoided.iter().any(|p| p == partner) {
                avoided.push(partner.to_owned());
            }
        }
        avoided
    }

    /// An operation that will call `partner` was opened while its circuit
    /// was due for a trial: it is the trial, and the others walk around the
    /// partner until it answers (or for another cool-down).
    pub fn trial_taken(&self, partner: &str) {
        if !self.any_open.load(Ordering::Acquire) {
            return;
        }
        let now = self.clock.now();
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(circuit) = circuits.get_mut(partner) else {
            return;
        };
        if circuit.is_open() && circuit.trial_due(now) {
            if matches!(circuit.state, State::Open { .. }) {
                tracing::info!(partner, "partner circuit half-open: one trial call");
            }
            circuit.state = State::HalfOpen { since: now };
        }
    }

    /// Whether `partner`'s methods are offered to shoppers now: not while
    /// its circuit is open, until a trial is due (a new payment may be it).
    pub fn offered(&self, partner: &str) -> bool {
        let now = self.clock.now();
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        circuits
            .get(partner)
            .is_none_or(|circuit| !circuit.is_open() || circuit.trial_due(now))
    }

    /// Takes another replica's change.
    pub fn apply(&self, notice: &HealthNotice) {
        if notice.replica == self.replica {
            return;
        }
        let now = self.clock.now();
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(circuit) = circuits.get_mut(&notice.partner) else {
            return;
        };
        let open_now = !matches!(circuit.state, State::Closed);
        if !circuit.settings.enabled || open_now == notice.open {
            return;
        }
        // The failures were another replica's.
        circuit.consecutive = 0;
        let partner = notice.partner.clone();
        set_state(circuit, notice.open, now);
        let open = circuits.values().any(Circuit::is_open);
        self.any_open.store(open, Ordering::Release);
        if open {
            self.any_failing.store(true, Ordering::Release);
        }
        log_change(&partner, notice.open, "another replica saw it");
    }

    /// Every circuit, by partner name.
    pub fn snapshot(&self) -> Vec<PartnerHealth> {
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        circuits
            .iter()
            .map(|(partner, circuit)| PartnerHealth {
                partner: partner.clone(),
                state: match circuit.state {
                    State::Closed => CircuitState::Closed,
                    State::Open { .. } => CircuitState::Open,
                    State::HalfOpen { .. } => CircuitState::HalfOpen,
                },
                consecutive_failures: circuit.consecutive,
                changed_at: circuit.changed_at,
                retry_at: match circuit.state {
                    State::Open { until } => Some(until),
                    State::HalfOpen { since } => Some(later(since, circuit.settings.cool_down)),
                    State::Closed => None,
                },
                settings: circuit.settings,
            })
            .collect()
    }

    fn change(&self, partner: &str, circuit: &mut Circuit, open: bool, now: SystemTime, why: &str) {
        set_state(circuit, open, now);
        log_change(partner, open, why);
        // Nobody listening (a single replica without relay) is fine.
        let _ = self.changes.send(HealthNotice {
            partner: partner.to_owned(),
            open,
            replica: self.replica,
        });
    }
}

fn set_state(circuit: &mut Circuit, open: bool, now: SystemTime) {
    circuit.state = if open {
        State::Open {
            until: later(now, circuit.settings.cool_down),
        }
    } else {
        State::Closed
    };
    circuit.changed_at = Some(now);
}

fn log_change(partner: &str, open: bool, why: &str) {
    set_metric(partner, open);
    if open {
        tracing::warn!(
            partner,
            why,
            "partner circuit open: its legs are walked last"
        );
    } else {
        tracing::info!(partner, why, "partner circuit closed");
    }
}

fn set_metric(partner: &str, open: bool) {
    metrics::gauge!(
        crate::telemetry::series::PARTNER_CIRCUIT_OPEN,
        "partner" => partner.to_owned()
    )
    .set(if open { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn health(clock: &ManualClock) -> Health {
        let settings = CircuitSettings {
            enabled: true,
            failures: 3,
            cool_down: Duration::from_secs(30),
        };
        Health::new(Arc::new(clock.clone()), [("p".to_owned(), settings)])
    }

    fn state(health: &Health) -> CircuitState {
        health.snapshot()[0].state
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let health = health(&clock);
        health.record("p", true);
        health.record("p", true);
        health.record("p", false);
        health.record("p", true);
        health.record("p", true);
        assert_eq!(state(&health), CircuitState::Closed);
        assert!(health.avoided(["p"]).is_empty());
        health.record("p", true);
        assert_eq!(state(&health), CircuitState::Open);
        assert_eq!(health.avoided(["p", "q"]), vec!["p".to_owned()]);
        assert!(!health.offered("p"));
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_and_its_answer_decides() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let health = health(&clock);
        for _ in 0..3 {
            health.record("p", true);
        }
        clock.advance(Duration::from_secs(30));
        // Due for a trial: routed as healthy and offered, until a trial is
        // taken; looking changes nothing.
        assert!(health.avoided(["p"]).is_empty());
        assert!(health.offered("p"));
        assert_eq!(state(&health), CircuitState::Open);
        health.trial_taken("p");
        assert_eq!(state(&health), CircuitState::HalfOpen);
        assert_eq!(health.avoided(["p"]), vec!["p".to_owned()]);
        assert!(!health.offered("p"));
        // The trial fails: open for another cool-down.
        health.record("p", true);
        assert_eq!(state(&health), CircuitState::Open);
        clock.advance(Duration::from_secs(29));
        assert_eq!(health.avoided(["p"]), vec!["p".to_owned()]);
        clock.advance(Duration::from_secs(1));
        assert!(health.avoided(["p"]).is_empty());
        health.trial_taken("p");
        // The trial answers: closed.
        health.record("p", false);
        assert_eq!(state(&health), CircuitState::Closed);
        assert!(health.offered("p"));
    }

    #[test]
    fn a_trial_that_never_answers_lets_another_through_later() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let health = health(&clock);
        for _ in 0..3 {
            health.record("p", true);
        }
        clock.advance(Duration::from_secs(30));
        health.trial_taken("p");
        assert_eq!(health.avoided(["p"]), vec!["p".to_owned()]);
        clock.advance(Duration::from_secs(30));
        assert!(health.avoided(["p"]).is_empty());
        // A failure once a trial is due opens it for another cool-down.
        health.record("p", true);
        assert_eq!(health.avoided(["p"]), vec!["p".to_owned()]);
    }

    #[test]
    fn changes_are_told_and_another_replicas_are_taken() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let (one, two) = (health(&clock), health(&clock));
        let mut told = one.changes();
        for _ in 0..3 {
            one.record("p", true);
        }
        let notice = told.try_recv().expect("told");
        assert!(notice.open);
        assert_eq!(HealthNotice::decode(&notice.encode()), Some(notice.clone()));
        // Its own notice changes nothing; another replica's opens it.
        one.apply(&notice);
        two.apply(&notice);
        assert_eq!(state(&two), CircuitState::Open);
        one.record("p", false);
        two.apply(&told.try_recv().expect("told"));
        assert_eq!(state(&two), CircuitState::Closed);
    }

    #[test]
    fn a_disabled_circuit_never_opens_and_garbage_notices_are_refused() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let settings = CircuitSettings {
            enabled: false,
            ..CircuitSettings::default()
        };
        let health = Health::new(Arc::new(clock), [("p".to_owned(), settings)]);
        for _ in 0..10 {
            health.record("p", true);
        }
        assert_eq!(state(&health), CircuitState::Closed);
        for garbage in [
            "",
            "open",
            "open x p",
            "half p",
            "open 00000000-0000-0000-0000-000000000000 ",
        ] {
            assert_eq!(HealthNotice::decode(garbage), None, "{garbage:?}");
        }
    }
}
