//! A step: one atomic write to one shard, made of one part per concern
//! (idempotency records, the session and payment, send claims, the
//! due-queue, the webhook outbox), and what it came to.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DueItem, Shard, WebhookDelivery};
use crate::domain::{
    operation::{Fingerprint, Operation},
    payment::{Payment, Snapshot},
    precondition::Precondition,
    session::{Session, SessionView},
};

// ---- idempotency records ----

/// What an idempotent request answered, kept under its key: a replay gets
/// exactly this. It never grows with the payment's history: a payment is
/// kept as its [`Snapshot`] and the operations the request touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Session(SessionView),
    Payment {
        snapshot: Snapshot,
        operations: Vec<Operation>,
    },
    Operation {
        snapshot: Snapshot,
        operation: Operation,
    },
    Refused(Precondition),
}

/// The idempotency part of a step. A record is named by the id of what its
/// request creates (derived from merchant, scope and key) and lives in that
/// id's shard; it expires `ttl` after it was created.
///
/// - `Claim`: the request starts. If the record exists, **nothing** of the
///   step is applied and the commit answers [`Committed::Claimed`].
/// - `Answer`: the request is answered at once (a refusal, a session
///   created): like `Claim`, but the record is created done.
/// - `Complete`: the request (or whoever finalized its work) stores its
///   answer if the record is still in flight. A record already done keeps its
///   first answer, which the commit hands back; a missing one stays missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Claim {
        record: Uuid,
        fingerprint: Fingerprint,
        /// How long the request holds the key, by the store's clock.
        lease: Duration,
        ttl: Duration,
    },
    Answer {
        record: Uuid,
        fingerprint: Fingerprint,
        outcome: Outcome,
        ttl: Duration,
    },
    Complete {
        record: Uuid,
        outcome: Outcome,
    },
    /// The request gives its work up unfinished (it sent nothing that is
    /// not recorded): a record still in flight has its lease ended now, so
    /// a retry with the key takes the work over at once.
    Abandon {
        record: Uuid,
    },
}

impl KeyChange {
    pub fn record(&self) -> Uuid {
        match self {
            KeyChange::Claim { record, .. }
            | KeyChange::Answer { record, .. }
            | KeyChange::Complete { record, .. }
            | KeyChange::Abandon { record } => *record,
        }
    }
}

/// An existing record, found by a `Claim` or an `Answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Its request still runs; `lease_expired` when it stopped without
    /// finishing (a retry may then answer from what it left behind).
    InFlight {
        lease_expired: bool,
    },
    Done(Box<Outcome>),
    /// The key was used for a different request.
    Mismatch,
}

// ---- the due-queue and the outbox ----

/// The due-queue part of a step: put an item on the queue (or move it) to
/// become due at a time, or take it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueChange {
    Schedule(DueItem, SystemTime),
    Unschedule(DueItem),
}

/// The outbox part of a step. `Put` stores a delivery unless one with its id
/// exists (event ids are derived, so emitting an event twice is one
/// delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxChange {
    Put(WebhookDelivery),
    Update(WebhookDelivery),
    Delete(Uuid),
}

// ---- sessions and payments ----

/// A write of a versioned record: insert (fails the step with
/// [`Committed::Exists`] if it exists), compare-and-set on the version
/// (fails it with [`Committed::Conflict`]), or only check that the version
/// did not move (a refusal computed from what was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write<T> {
    Insert(T),
    Update { expected: u64, value: T },
    Check { expected: u64, id: Uuid },
}

/// The payment part of a step: its header and the operations it writes
/// (never the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentWrite {
    pub header: Write<Payment>,
    pub operations: Vec<OperationWrite>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationWrite {
    /// A new operation (fails the step with [`Committed::Exists`] if its id
    /// is taken: ids are derived, so that is the first attempt's).
    Insert(Operation),
    Update(Operation),
}

impl PaymentWrite {
    /// Opens `operation` on a payment read at version `expected`, whose
    /// header becomes `header` (with what the operation reserves).
    pub fn opening(expected: u64, header: Payment, operation: Operation) -> PaymentWrite {
        PaymentWrite {
            header: Write::Update {
                expected,
                value: header,
            },
            operations: vec![OperationWrite::Insert(operation)],
        }
    }
}

impl OperationWrite {
    pub fn operation(&self) -> &Operation {
        match self {
            OperationWrite::Insert(op) | OperationWrite::Update(op) => op,
        }
    }
}

/// The send-claim part of a step. A partner call for one (operation, leg)
/// is sent only under its send claim, taken in the step that counts the
/// attempt: the attempt number is the claim's fence, and every later write
/// of the sender checks that the attempt count has not moved. A claim lives
/// for `ttl` by the store's own clock (never a replica's), so a sender that
/// died frees the leg after `ttl` and no clock can make two live claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimChange {
    /// Takes the claim as `fence`. If another claim of the leg is live,
    /// **nothing** of the step is applied: [`Committed::Busy`].
    Take {
        operation: Uuid,
        leg: usize,
        fence: u32,
        ttl: Duration,
    },
    /// Gives the claim up if it is still `fence`'s (the send is answered).
    Release {
        operation: Uuid,
        leg: usize,
        fence: u32,
    },
}

impl ClaimChange {
    pub fn leg(&self) -> (Uuid, usize) {
        match self {
            ClaimChange::Take { operation, leg, .. }
            | ClaimChange::Release { operation, leg, .. } => (*operation, *leg),
        }
    }
}

/// One atomic write to one shard: every part is applied, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub shard: Shard,
    /// The caller's time: due times are reckoned from it. Leases and claims
    /// are judged by the store's own clock.
    pub now: SystemTime,
    pub key: Option<KeyChange>,
    pub session: Option<Write<Session>>,
    pub payment: Option<PaymentWrite>,
    pub due: Vec<DueChange>,
    pub outbox: Vec<OutboxChange>,
    /// An operation that becomes final with this step: announced to every
    /// replica (see [`Notices`](super::Notices)) by the store as it applies the step.
    pub announce: Option<Uuid>,
    /// Send claims taken or given up (legs of the step's payment).
    pub claims: Vec<ClaimChange>,
}

impl Step {
    pub fn new(shard: Shard, now: SystemTime) -> Step {
        Step {
            shard,
            now,
            key: None,
            session: None,
            payment: None,
            due: Vec::new(),
            outbox: Vec::new(),
            announce: None,
            claims: Vec::new(),
        }
    }
}

/// What a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every part applied: the new versions of what was written, and for a
    /// `Complete` that found its record already done, that first answer.
    Applied {
        payment: Option<u64>,
        session: Option<u64>,
        answered: Option<Box<Outcome>>,
    },
    /// Nothing applied: a version moved (someone wrote first). Read again.
    Conflict,
    /// Nothing applied: something the step inserts exists.
    Exists,
    /// Nothing applied: the idempotency record exists.
    Claimed(KeyState),
    /// Nothing applied: another sender's claim of a leg the step would
    /// claim is live.
    Busy,
}
