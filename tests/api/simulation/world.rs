//! One schedule of the deterministic simulation: several executors (the
//! real use cases, as replicas) on one memory store wrapped by the
//! fault-injecting store, three simulated partners, a clock per executor
//! that can jump, and a seeded random mix of submits, session updates,
//! captures, refunds, voids, retries, Syncs, resolver steps, crashes and
//! restarts, run concurrently on a current-thread runtime in paused time.
//! Then the faults stop, time runs on, the resolvers work, and the books are
//! checked.
//!
//! Every draw comes from seeded generators (the updates' from one of their
//! own, so the other draws of a schedule are what they were before updates
//! were simulated) and the runtime is a single thread with paused time, so
//! one seed is one schedule, exactly.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use payment_orchestrator::{
    clock::{Chance, Clock},
    domain::{
        money::{Amount, Currency},
        operation::{Operation, OperationKind},
        payment::{Leg, PaymentToken},
        session::{CaptureMode, SessionChange},
        status::TransactionStatus,
    },
    partners::{ConfiguredPartner, InstrumentUse, Partners, RetryPolicy},
    payments::{
        CreateSession, IdempotencyKey, Idempotent, OperationCommand, Payments, Settings,
        SubmitSession, UpdateSession, requested_operation_id, submitted_payment_id,
    },
    store::{PaymentStore, Store, memory::MemoryStore},
    webhooks::{Secrets, Webhooks, destinations::Destinations},
    workers::resolver::Resolver,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{task::JoinSet, time::Instant};
use uuid::Uuid;

use super::{
    super::faults::{Chaos, Fault, FaultyStore},
    partner::SimPartner,
};

const MERCHANTS: [&str; 2] = ["m1", "m2"];
const SESSIONS: usize = 6;
const ACTIONS: usize = 60;
const EXECUTORS: usize = 3;
/// A partner attempt's deadline in the simulation.
const PARTNER_TIMEOUT: Duration = Duration::from_secs(2);

/// The world's one source of chance, and whether faults are on.
#[derive(Debug, Clone)]
pub struct Dice(Arc<Mutex<(StdRng, bool)>>);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(Arc::new(Mutex::new((StdRng::seed_from_u64(seed), true))))
    }

    /// A number in `0..n`.
    pub fn below(&self, n: u64) -> u64 {
        self.0.lock().unwrap().0.random_range(0..n.max(1))
    }

    pub fn fraction(&self) -> f64 {
        self.0.lock().unwrap().0.random_range(0.0..1.0)
    }

    pub fn faults(&self) -> bool {
        self.0.lock().unwrap().1
    }

    fn set_faults(&self, on: bool) {
        self.0.lock().unwrap().1 = on;
    }

    fn pick<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    fn millis(&self, max: u64) -> Duration {
        Duration::from_millis(self.below(max))
    }
}

impl Chance for Dice {
    fn fraction(&self) -> f64 {
        Dice::fraction(self)
    }

    fn bits(&self) -> u128 {
        self.0.lock().unwrap().0.random()
    }
}

impl Chaos for Dice {
    fn next_call(&self) -> (Option<Fault>, Duration, Duration) {
        if !self.faults() {
            return (None, Duration::ZERO, Duration::ZERO);
        }
        match self.below(100) {
            0..=2 => (Some(Fault::BeforeApplying), Duration::ZERO, Duration::ZERO),
            3..=5 => (Some(Fault::AnswerLost), Duration::ZERO, Duration::ZERO),
            // A store that stalls, before or after it applies; now and
            // then for longer than a send claim lives.
            6..=9 => (None, self.millis(1500), Duration::ZERO),
            10..=13 => (None, Duration::ZERO, self.millis(1500)),
            14 => (None, self.millis(20_000), Duration::ZERO),
            15 => (None, Duration::ZERO, self.millis(20_000)),
            _ => (None, Duration::ZERO, Duration::ZERO),
        }
    }
}

/// What happened, in order, with the simulated time.
#[derive(Debug, Clone)]
pub struct Trace(Arc<Mutex<Vec<String>>>, Instant);

impl Trace {
    fn new() -> Trace {
        Trace(Arc::default(), Instant::now())
    }

    pub fn note(&self, event: String) {
        let at = self.1.elapsed().as_millis();
        self.0.lock().unwrap().push(format!("{at:>9} {event}"));
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A replica's clock: the simulated time plus its own offset (a clock jump).
#[derive(Debug, Clone)]
struct SimClock {
    base: SystemTime,
    start: Instant,
    /// Milliseconds ahead (or behind, negative).
    offset: Arc<Mutex<i64>>,
}

impl SimClock {
    fn jump(&self, by: i64) {
        *self.offset.lock().unwrap() = by;
    }
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        let now = self.base + self.start.elapsed();
        let offset = *self.offset.lock().unwrap();
        if offset >= 0 {
            now + Duration::from_millis(offset.unsigned_abs())
        } else {
            now - Duration::from_millis(offset.unsigned_abs())
        }
    }
}

/// A replica: the use cases and a resolver on the shared store, with its
/// own clock and the calls it is running.
struct Executor {
    clock: SimClock,
    payments: Payments,
    resolver: Resolver,
    calls: JoinSet<()>,
}

/// A merchant request, kept to be sent again with its key.
#[derive(Debug, Clone)]
enum Request {
    Submit {
        merchant: &'static str,
        key: IdempotencyKey,
        command: SubmitSession,
    },
    /// A session's amount changes (a submit racing it must see it).
    Update {
        merchant: &'static str,
        key: IdempotencyKey,
        command: UpdateSession,
    },
    Operate {
        merchant: &'static str,
        key: IdempotencyKey,
        command: OperationCommand,
    },
}

impl Request {
    /// The id of what it creates.
    fn creates(&self) -> Uuid {
        match self {
            Request::Submit {
                merchant,
                key,
                command,
            } => submitted_payment_id(merchant, command.session_id, key),
            // Its record, in the session's scope like a submit's.
            Request::Update {
                merchant,
                key,
                command,
            } => submitted_payment_id(merchant, command.session_id, key),
            Request::Operate {
                merchant,
                key,
                command,
            } => requested_operation_id(merchant, command.payment_id, key),
        }
    }
}

/// What a schedule came to.
#[derive(Debug)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

struct World {
    dice: Dice,
    /// Draws for session updates, apart from `dice`: a schedule's other
    /// draws stay what they were before updates were simulated.
    changes: Dice,
    /// The updates sent, for their retries.
    updates: Vec<Request>,
    trace: Trace,
    store: Arc<MemoryStore>,
    faulty: Arc<dyn Store>,
    partners: Vec<SimPartner>,
    registry: Partners,
    settings: Settings,
    executors: Vec<Executor>,
    sessions: Vec<(&'static str, Uuid, Amount)>,
    requests: Vec<Request>,
    /// What each request's answers named (the ids it created), by the id
    /// it must create.
    answered: Arc<Mutex<BTreeMap<Uuid, BTreeSet<Uuid>>>>,
}

/// Runs schedule `seed` to its end and checks the books.
pub fn run(seed: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut world = World::new(seed);
        world.open_sessions().await;
        world.trace.note("chaos begins".into());
        for _ in 0..ACTIONS {
            tokio::time::sleep(world.dice.millis(2500)).await;
            world.act().await;
        }
        world.heal().await;
        let violations = world.check().await;
        Outcome {
            violations,
            trace: world.trace.lines(),
        }
    })
}

fn settings() -> Settings {
    Settings {
        idempotency_lease: Duration::from_secs(10),
        operation_lease: Duration::from_secs(10),
        max_resolution_age: Duration::from_secs(1800),
        // Each executor opens on the headers it last wrote, as replicas on
        // Redis do: the others' writes make them stale, which the open
        // step's compare-and-set must catch. Small, so that some are
        // forgotten too.
        header_cache: 8,
        ..Settings::default()
    }
}

impl World {
    fn new(seed: u64) -> World {
        let dice = Dice::new(seed);
        let trace = Trace::new();
        let start = Instant::now();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let truth = SimClock {
            base,
            start,
            offset: Arc::default(),
        };
        let store = Arc::new(MemoryStore::new(
            Duration::from_secs(30 * 86_400),
            Arc::new(truth),
        ));
        let faulty: Arc<dyn Store> = FaultyStore::with_chaos(store.clone(), Arc::new(dice.clone()));
        let all = [true; 4];
        let authorizations_only = [true, false, false, false];
        let partners = vec![
            SimPartner::new(
                "card",
                all,
                InstrumentUse::Reusable,
                PARTNER_TIMEOUT,
                dice.clone(),
                trace.clone(),
            ),
            SimPartner::new(
                "gift",
                all,
                InstrumentUse::SingleUse,
                PARTNER_TIMEOUT,
                dice.clone(),
                trace.clone(),
            ),
            // Captures, refunds and voids without idempotency keys.
            SimPartner::new(
                "plain",
                authorizations_only,
                InstrumentUse::Reusable,
                PARTNER_TIMEOUT,
                dice.clone(),
                trace.clone(),
            ),
        ];
        let methods = [
            ("card", "creditcard"),
            ("gift", "giftcard"),
            ("plain", "invoice"),
        ];
        let registry = Partners::new(
            partners
                .iter()
                .zip(methods)
                .map(|(partner, (name, method))| {
                    let mut configured = ConfiguredPartner::new(
                        Arc::new(partner.clone()),
                        "sandbox",
                        vec![method.into()],
                    );
                    configured.timeout = PARTNER_TIMEOUT;
                    // Routing must replay from the seed alone: no circuits,
                    // whose cool-downs run on the wall clock.
                    configured.circuit.enabled = false;
                    configured.retry = RetryPolicy {
                        first_pause: Duration::from_millis(100),
                        window: Duration::from_millis(500),
                    };
                    (name.to_owned(), configured)
                })
                .collect(),
            // One set of partner circuits for every executor.
            Arc::new(payment_orchestrator::clock::SystemClock),
        );
        let mut world = World {
            dice,
            changes: Dice::new(seed ^ 0x5e55_10e0_0000_0001),
            updates: Vec::new(),
            trace,
            store,
            faulty,
            partners,
            registry,
            settings: settings(),
            executors: Vec::new(),
            sessions: Vec::new(),
            requests: Vec::new(),
            answered: Arc::default(),
        };
        for _ in 0..EXECUTORS {
            let clock = SimClock {
                base,
                start,
                offset: Arc::default(),
            };
            let executor = world.executor(clock);
            world.executors.push(executor);
        }
        world
    }

    /// A replica (re)started with `clock`.
    fn executor(&self, clock: SimClock) -> Executor {
        let webhooks = Webhooks::new(
            Secrets::new([]),
            Duration::from_secs(1),
            Destinations::new(vec!["https".into()], Vec::new(), Vec::new()),
            Arc::new(payment_orchestrator::api::events::EventBodies),
        );
        let payments = Payments::new(
            self.faulty.clone(),
            self.registry.clone(),
            Arc::new(clock.clone()),
            self.settings.clone(),
            webhooks,
        )
        .with_chance(Arc::new(self.dice.clone()));
        let resolver = Resolver::new(
            payments.clone(),
            Arc::new(clock.clone()),
            Duration::from_secs(5),
            20,
            4,
        );
        Executor {
            clock,
            payments,
            resolver,
            calls: JoinSet::new(),
        }
    }

    fn key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(&format!("k{}", self.dice.below(1 << 40))).expect("a key")
    }

    async fn open_sessions(&mut self) {
        self.dice.set_faults(false);
        for _ in 0..SESSIONS {
            let merchant = *self.dice.pick(&MERCHANTS).expect("merchants");
            let amount = [3000, 6000, 12000][self.dice.below(3) as usize];
            let mode = if self.dice.below(10) < 3 {
                CaptureMode::Automatic
            } else {
                CaptureMode::Manual
            };
            let command = CreateSession {
                order_reference: format!("order-{}", self.sessions.len()),
                amount: Amount::from_minor(amount).expect("amount"),
                currency: Currency::parse("EUR").expect("EUR"),
                capture_mode: mode,
                items: Vec::new(),
                webhook: None,
                expires_in: Some(Duration::from_secs(20 * 3600)),
                metadata: BTreeMap::new(),
            };
            let session = self.executors[0]
                .payments
                .create_session(
                    merchant,
                    Idempotent {
                        key: self.key(),
                        command,
                    },
                )
                .await
                .expect("a session opens without faults");
            self.trace.note(format!(
                "session {} of {merchant}: {amount} {mode:?}",
                session.session.id
            ));
            self.sessions.push((
                merchant,
                session.session.id,
                Amount::from_minor(amount).expect("amount"),
            ));
        }
        self.dice.set_faults(true);
    }

    /// One random step of the schedule.
    async fn act(&mut self) {
        self.maybe_update();
        let executor = self.dice.below(EXECUTORS as u64) as usize;
        match self.dice.below(100) {
            0..=19 => self.submit(executor),
            20..=54 => self.operate(executor).await,
            55..=66 => self.retry(executor),
            67..=76 => self.sync(executor).await,
            77..=91 => {
                let e = &self.executors[executor];
                let report = e.resolver.resolve_due(e.clock.now()).await;
                self.trace.note(format!("e{executor} resolver: {report:?}"));
            }
            92..=94 => {
                self.trace.note(format!("e{executor} crashes and restarts"));
                let clock = self.executors[executor].clock.clone();
                self.executors[executor].calls.abort_all();
                let restarted = self.executor(clock);
                let old = std::mem::replace(&mut self.executors[executor], restarted);
                drop(old);
            }
            _ => {
                let by = match self.dice.below(3) {
                    0 => 600_000,
                    1 => -600_000,
                    _ => 0,
                };
                self.trace
                    .note(format!("e{executor} clock jumps to {by} ms"));
                self.executors[executor].clock.jump(by);
            }
        }
    }

    /// Often a session's amount changes, or an update is sent again (drawn
    /// from `changes`, so the schedule's other draws stay as they were):
    /// often enough that submits race updates in a default run.
    fn maybe_update(&mut self) {
        let executor = self.changes.below(EXECUTORS as u64) as usize;
        match self.changes.below(4) {
            0 => {
                let index = self.changes.below(SESSIONS as u64) as usize;
                let Some(&(merchant, session, _)) = self.sessions.get(index) else {
                    return;
                };
                let minor = [3000, 6000, 12000][self.changes.below(3) as usize];
                let amount = Amount::from_minor(minor).expect("amount");
                self.sessions[index].2 = amount;
                let key = IdempotencyKey::parse(&format!("u{}", self.changes.below(1 << 40)))
                    .expect("a key");
                let request = Request::Update {
                    merchant,
                    key,
                    command: UpdateSession {
                        session_id: session,
                        change: SessionChange {
                            amount: Some(amount),
                            ..SessionChange::default()
                        },
                    },
                };
                self.updates.push(request.clone());
                self.send(executor, request);
            }
            1 if !self.updates.is_empty() => {
                let index = self.changes.below(self.updates.len() as u64) as usize;
                let request = self.updates[index].clone();
                self.send(executor, request);
            }
            _ => {}
        }
    }

    fn leg(&self, amount: Amount) -> Leg {
        let (partner, method, tokens) = match self.dice.below(3) {
            0 => ("card", "creditcard", ["c1", "c2", "c3"]),
            1 => ("gift", "giftcard", ["g1", "g2", "g3"]),
            _ => ("plain", "invoice", ["p1", "p2", "p3"]),
        };
        let token = tokens[self.dice.below(3) as usize];
        let configured = self.registry.get(partner).expect("configured");
        Leg {
            partner: partner.into(),
            method: method.into(),
            amount,
            token: PaymentToken::new(token.into()),
            capabilities: configured.capabilities,
            authorization_lifetime: configured.authorization_lifetime,
        }
    }

    fn submit(&mut self, executor: usize) {
        let Some(&(merchant, session, amount)) = self.dice.pick(&self.sessions) else {
            return;
        };
        let legs = if self.dice.below(2) == 0 {
            vec![self.leg(amount)]
        } else {
            let first = amount.minor() * (1 + self.dice.below(4) as i64) / 5;
            vec![
                self.leg(Amount::from_minor(first).expect("amount")),
                self.leg(Amount::from_minor(amount.minor() - first).expect("amount")),
            ]
        };
        let request = Request::Submit {
            merchant,
            key: self.key(),
            command: SubmitSession {
                session_id: session,
                legs,
                parents: Vec::new(),
            },
        };
        self.send(executor, request);
    }

    /// Payments that exist now (read without faults: the world's view).
    async fn payments(&self) -> Vec<(&'static str, Uuid)> {
        let mut found = Vec::new();
        for request in &self.requests {
            if let Request::Submit { merchant, .. } = request {
                let id = request.creates();
                if self.store.header(id).await.ok().flatten().is_some() {
                    found.push((*merchant, id));
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    async fn operate(&mut self, executor: usize) {
        let payments = self.payments().await;
        let Some(&(merchant, payment)) = self.dice.pick(&payments) else {
            return;
        };
        let kind = [
            OperationKind::Capture,
            OperationKind::Refund,
            OperationKind::Void,
        ][self.dice.below(3) as usize];
        let amount = match self.dice.below(4) {
            0 => None,
            _ => Amount::from_minor(1 + self.dice.below(6000) as i64).ok(),
        };
        let request = Request::Operate {
            merchant,
            key: self.key(),
            command: OperationCommand {
                payment_id: payment,
                kind,
                amount,
                priority: Vec::new(),
                disable_fallback: self.dice.below(4) == 0,
                merchant_reference: String::new(),
                reason: String::new(),
                items: Vec::new(),
            },
        };
        self.send(executor, request);
    }

    /// The same request again, with its key.
    fn retry(&mut self, executor: usize) {
        if let Some(request) = self.dice.pick(&self.requests).cloned() {
            self.send(executor, request);
        }
    }

    async fn sync(&mut self, executor: usize) {
        let payments = self.payments().await;
        let Some(&(_, payment)) = self.dice.pick(&payments) else {
            return;
        };
        let Ok(Some(stored)) = self.store.payment(payment).await else {
            return;
        };
        let ids: Vec<Uuid> = stored.operations.iter().map(|op| op.id).collect();
        let Some(&id) = self.dice.pick(&ids) else {
            return;
        };
        let payments = self.executors[executor].payments.clone();
        let trace = self.trace.clone();
        self.executors[executor].calls.spawn(async move {
            let result = payments.sync_operation(id).await;
            trace.note(format!(
                "e{executor} sync {id}: {:?}",
                result.map(|(_, op)| op.status)
            ));
        });
    }

    /// Runs a request on an executor, concurrently with everything else.
    fn send(&mut self, executor: usize, request: Request) {
        let update = matches!(request, Request::Update { .. });
        if !update
            && !self
                .requests
                .iter()
                .any(|r| r.creates() == request.creates())
        {
            self.requests.push(request.clone());
        }
        let payments = self.executors[executor].payments.clone();
        let trace = self.trace.clone();
        let answered = self.answered.clone();
        let expected = request.creates();
        self.executors[executor].calls.spawn(async move {
            let (what, named) = match request {
                Request::Submit {
                    merchant,
                    key,
                    command,
                } => {
                    let result = payments
                        .submit_session(merchant, Idempotent { key, command })
                        .await;
                    let named = result.as_ref().ok().map(|view| view.header.id);
                    (
                        format!(
                            "submit: {:?}",
                            result.map(|v| v.header.authorization_status)
                        ),
                        named,
                    )
                }
                Request::Update {
                    merchant,
                    key,
                    command,
                } => {
                    let result = payments
                        .update_session(merchant, Idempotent { key, command })
                        .await;
                    // It creates nothing: no id to check.
                    (
                        format!("update: {:?}", result.map(|v| v.session.amount)),
                        None,
                    )
                }
                Request::Operate {
                    merchant,
                    key,
                    command,
                } => {
                    let kind = command.kind;
                    let result = payments
                        .operate(merchant, Idempotent { key, command })
                        .await;
                    let named = result.as_ref().ok().map(|r| r.operation.id);
                    (
                        format!(
                            "{kind:?}: {:?}",
                            result.map(|r| (r.operation.amount, r.operation.status))
                        ),
                        named,
                    )
                }
            };
            trace.note(format!("e{executor} {expected} {what}"));
            if let Some(named) = named {
                answered
                    .lock()
                    .unwrap()
                    .entry(expected)
                    .or_default()
                    .insert(named);
            }
        });
    }

    /// Faults stop, clocks agree again, everything in flight ends, and time
    /// runs on while the resolvers work.
    async fn heal(&mut self) {
        self.dice.set_faults(false);
        self.trace.note("faults stop".into());
        for executor in &mut self.executors {
            executor.clock.jump(0);
            while executor.calls.join_next().await.is_some() {}
        }
        for pause in [
            1, 3, 10, 30, 60, 120, 300, 600, 1800, 3600, 3600, 7200, 7200,
        ] {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            for (index, executor) in self.executors.iter().enumerate() {
                let report = executor.resolver.resolve_due(executor.clock.now()).await;
                if report.claimed > 0 {
                    self.trace.note(format!("e{index} resolver: {report:?}"));
                }
            }
        }
    }

    /// The invariants, after everything settled.
    async fn check(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let payments = self.payments().await;
        // Each instrument's payers: (partner, token) → (session, merchant).
        let mut payers: BTreeMap<(String, String), BTreeSet<(Uuid, String)>> = BTreeMap::new();
        let mut holders: BTreeMap<(String, String), Vec<Uuid>> = BTreeMap::new();
        let mut booked_holds = BTreeSet::new();
        for &(_, id) in &payments {
            let Ok(Some(stored)) = self.store.payment(id).await else {
                violations.push(format!("payment {id} cannot be read"));
                continue;
            };
            let header = &stored.header.value;
            let legs = header.legs.len();
            // The legs add up to the payment, whatever updates raced its submit.
            if Amount::sum(header.legs.iter().map(|leg| leg.amount)) != Ok(header.amount) {
                violations.push(format!(
                    "{id}: the legs do not add up to the payment's {}",
                    header.amount
                ));
            }
            // The header is the sum of its operations.
            let mut summed = vec![payment_orchestrator::domain::amounts::Amounts::ZERO; legs];
            for op in &stored.operations {
                for (total, held) in summed.iter_mut().zip(op.contribution(legs)) {
                    *total = total.plus(&held);
                }
                if !op.status.is_final() && !op.requires_review {
                    violations.push(format!(
                        "{id}: {:?} {} is {:?}, not final and not under review",
                        op.kind, op.id, op.status
                    ));
                }
            }
            if summed != header.ledger {
                violations.push(format!("{id}: the ledger is not the sum of the operations"));
            }
            let authorization = stored
                .operations
                .iter()
                .find(|op| op.id == header.authorization_id);
            for (index, (leg, ours)) in header.legs.iter().zip(&header.ledger).enumerate() {
                let at = format!("{id} leg {index} ({})", leg.partner);
                let within = ours.captured.minor()
                    + ours.capture_pending.minor()
                    + ours.voided.minor()
                    + ours.void_pending.minor();
                if within > ours.authorized.minor() + ours.authorize_pending.minor()
                    || ours.refunded.minor() + ours.refund_pending.minor() > ours.captured.minor()
                {
                    violations.push(format!("{at}: our amounts break the rules: {ours:?}"));
                }
                let Some(partner) = self.partners.iter().find(|p| p.name == leg.partner) else {
                    continue;
                };
                let key = format!("{}:{index}", header.authorization_id);
                let ledger = partner.ledger.lock().unwrap();
                let hold = ledger
                    .done
                    .get(&key)
                    .and_then(|done| done.result.as_ref().ok())
                    .and_then(|answer| ledger.holds.get(&answer.reference))
                    .cloned()
                    .unwrap_or_default();
                booked_holds.insert((partner.name, key.clone()));
                let leg_status = authorization
                    .and_then(|auth| auth.transactions.iter().find(|tx| tx.leg == index))
                    .map(|tx| tx.status);
                match leg_status {
                    Some(TransactionStatus::Success) => {
                        if hold.authorized != leg.amount.minor() {
                            violations.push(format!(
                                "{at}: we hold an authorization of {}, the partner {}",
                                leg.amount, hold.authorized
                            ));
                        }
                        holders
                            .entry((leg.partner.clone(), leg.token.expose().to_owned()))
                            .or_default()
                            .push(id);
                        payers
                            .entry((leg.partner.clone(), leg.token.expose().to_owned()))
                            .or_default()
                            .insert((
                                if partner.name == "gift" {
                                    header.session_id
                                } else {
                                    Uuid::nil()
                                },
                                header.merchant.clone(),
                            ));
                    }
                    Some(TransactionStatus::Failure) if hold.authorized != 0 => {
                        violations.push(format!(
                            "{at}: we booked the authorization failed, the partner holds {}",
                            hold.authorized
                        ));
                    }
                    _ => {}
                }
                for (what, partner_side, done, pending) in [
                    (
                        "captured",
                        hold.captured,
                        ours.captured,
                        ours.capture_pending,
                    ),
                    (
                        "refunded",
                        hold.refunded,
                        ours.refunded,
                        ours.refund_pending,
                    ),
                    ("voided", hold.voided, ours.voided, ours.void_pending),
                ] {
                    let (low, high) = (done.minor(), done.minor() + pending.minor());
                    if partner_side < low || partner_side > high {
                        violations.push(format!(
                            "{at}: the partner {what} {partner_side}, our books {low}..={high}"
                        ));
                    }
                }
            }
        }
        // Every authorization a partner executed belongs to a payment leg.
        for partner in &self.partners {
            let ledger = partner.ledger.lock().unwrap();
            for (key, done) in &ledger.done {
                let authorized = done
                    .result
                    .as_ref()
                    .ok()
                    .and_then(|answer| ledger.holds.get(&answer.reference))
                    .is_some_and(|hold| hold.authorized > 0);
                if authorized && !booked_holds.contains(&(partner.name, key.clone())) {
                    violations.push(format!(
                        "{}: an authorization {key} that no payment of ours books",
                        partner.name
                    ));
                }
            }
            for (key, (kind, sends)) in &ledger.sends {
                if !partner.dedupes(*kind) && *sends > 1 {
                    violations.push(format!(
                        "{}: {kind:?} {key} was sent {sends} times to a partner without \
                         idempotency keys",
                        partner.name
                    ));
                }
            }
        }
        let holders_by = holders;
        fn self_holders(
            by: &BTreeMap<(String, String), Vec<Uuid>>,
            partner: &str,
            token: &str,
        ) -> Vec<Uuid> {
            by.get(&(partner.to_owned(), token.to_owned()))
                .cloned()
                .unwrap_or_default()
        }
        for ((partner, token), holders) in &payers {
            let merchants: BTreeSet<&String> = holders.iter().map(|(_, m)| m).collect();
            if holders.len() > 1 || merchants.len() > 1 {
                violations.push(format!(
                    "{partner} instrument {token} backs several payers: {holders:?} (payments {:?})",
                    self_holders(&holders_by, partner, token)
                ));
            }
        }
        // One key, one operation (or payment): the one its id is derived to.
        for (expected, named) in self.answered.lock().unwrap().iter() {
            if named.len() != 1 || !named.contains(expected) {
                violations.push(format!("key of {expected} answered with {named:?}"));
            }
        }
        self.origins(&payments, &mut violations).await;
        violations
    }

    /// No two operations answer one request.
    async fn origins(&self, payments: &[(&'static str, Uuid)], violations: &mut Vec<String>) {
        let mut seen = BTreeSet::new();
        for &(_, id) in payments {
            let Ok(Some(stored)) = self.store.payment(id).await else {
                continue;
            };
            for op in stored
                .operations
                .iter()
                .filter_map(|op: &Operation| op.origin)
            {
                if !seen.insert(op.record) {
                    violations.push(format!("two operations for the request {}", op.record));
                }
            }
        }
    }
}
