//! How records are written into Redis values: one format byte, then the
//! record in postcard (a compact, deterministic serde format: varint
//! integers, ids as 16 bytes). A change of layout gets a new format byte and
//! keeps a reader for the old one.

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    domain::{
        operation::Operation,
        payment::Snapshot,
        precondition::Precondition,
        session::{Session, SessionStatus, SessionView},
    },
    store::{Outcome, StoreError},
};

mod v1;
mod v3;
mod v4;

/// The layout of every record written today: format 1 plus, on legs, their
/// partner's capabilities and authorization lifetime, on the payment header
/// when it was authorized, and on operations their item lines (format 2);
/// plus, on webhook deliveries, their last error (format 3); plus signed
/// settlement lines, unreadable lines, more totals and the issues'
/// lifecycle, and payment headers' disputes (format 4); plus, on partner
/// transactions, the instrument their partner answered with, in a kept
/// answer's snapshot, what each leg held, and on sessions, what CreateSession
/// set of what an update changed (format 5).
const FORMAT: u8 = 5;

/// Format 3: as today but for settlements (see `v3`).
const FORMAT_3: u8 = 3;

/// Format 4: as today but for what format 5 added (see `v4`).
const FORMAT_4: u8 = v4::FORMAT;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT]).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(Box::new(e));
    match bytes.split_first() {
        Some((&FORMAT, record)) => postcard::from_bytes(record).map_err(corrupt),
        Some((&format, record)) if (v1::FORMAT..FORMAT).contains(&format) => {
            T::read_old(format, record).map_err(corrupt)
        }
        _ => Err(StoreError::Corrupt(
            "a record in an unknown format (or not ours)".into(),
        )),
    }
}

/// A stored record, readable in every format still kept: what a replica of
/// an earlier release wrote stays readable after an upgrade.
pub trait Record: DeserializeOwned {
    /// Reads the record as the earlier `format` wrote it. The default reads
    /// today's layout: the record's did not change.
    fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        let _ = format;
        postcard::from_bytes(record)
    }
}

/// A record whose layout changed only in format 4: formats 1 to 3 wrote it
/// alike, as `Old`.
macro_rules! settlement_record {
    ($now:ty, $old:ty) => {
        impl Record for $now {
            fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
                match format {
                    ..FORMAT_4 => postcard::from_bytes::<$old>(record).map(Into::into),
                    _ => postcard::from_bytes(record),
                }
            }
        }
    };
}

/// New in format 5: no earlier format wrote it.
impl Record for crate::domain::checkout::HostedCheckout {}

impl Record for crate::domain::session::Session {
    fn read_old(_: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<v4::Session>(record).map(Into::into)
    }
}

impl Record for crate::store::WebhookDelivery {
    fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        match format {
            ..FORMAT_3 => postcard::from_bytes::<v1::WebhookDelivery>(record).map(Into::into),
            _ => postcard::from_bytes(record),
        }
    }
}

settlement_record!(crate::domain::settlement::Settlement, v3::Settlement);
impl Record for crate::domain::settlement::FailedSettlement {}
settlement_record!(
    crate::domain::settlement::SettlementTransaction,
    v3::SettlementTransaction
);
settlement_record!(
    crate::domain::settlement::ReconciliationIssue,
    v3::ReconciliationIssue
);

impl Record for crate::domain::payment::Payment {
    fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        match format {
            v1::FORMAT => postcard::from_bytes::<v1::Payment>(record).map(Into::into),
            ..FORMAT_4 => postcard::from_bytes::<v3::Payment>(record).map(Into::into),
            _ => postcard::from_bytes(record),
        }
    }
}

impl Record for Operation {
    fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        match format {
            v1::FORMAT => postcard::from_bytes::<v1::Operation>(record).map(Into::into),
            _ => postcard::from_bytes::<v4::Operation>(record).map(Into::into),
        }
    }
}

impl Record for StoredOutcome {
    fn read_old(format: u8, record: &[u8]) -> Result<Self, postcard::Error> {
        match format {
            v1::FORMAT => postcard::from_bytes::<v1::StoredOutcome>(record).map(Into::into),
            _ => postcard::from_bytes::<v4::StoredOutcome>(record).map(Into::into),
        }
    }
}

/// An idempotency record's answer as stored. A final operation never
/// changes, so it is kept as a reference and read back from its payment on a
/// replay; a copy is kept only of what may still change (a PENDING or
/// UNCERTAIN operation, as the answer showed it). This keeps a record small
/// whatever the operation holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum StoredOutcome {
    Session(SessionView),
    /// A CreateSession answer: the session as it was created, rebuilt from
    /// the stored session (see `Session::as_created`).
    SessionAsCreated(Uuid),
    Payment {
        snapshot: Snapshot,
        payment: Uuid,
        operations: Vec<Kept>,
    },
    Operation {
        snapshot: Snapshot,
        payment: Uuid,
        operation: Kept,
    },
    Refused(Precondition),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Kept {
    Copy(Box<Operation>),
    Final(Uuid),
}

impl Kept {
    fn of(operation: &Operation) -> Kept {
        if operation.status.is_final() {
            Kept::Final(operation.id)
        } else {
            Kept::Copy(Box::new(operation.clone()))
        }
    }
}

pub fn encode_outcome(outcome: &Outcome) -> Result<Vec<u8>, StoreError> {
    let stored = match outcome {
        Outcome::Session(view)
            if view.status == SessionStatus::Open && view.session == view.session.as_created() =>
        {
            StoredOutcome::SessionAsCreated(view.session.id)
        }
        Outcome::Session(view) => StoredOutcome::Session(view.clone()),
        Outcome::Payment {
            snapshot,
            operations,
        } => StoredOutcome::Payment {
            snapshot: snapshot.clone(),
            payment: operations.first().map_or(Uuid::nil(), |op| op.payment_id),
            operations: operations.iter().map(Kept::of).collect(),
        },
        Outcome::Operation {
            snapshot,
            operation,
        } => StoredOutcome::Operation {
            snapshot: snapshot.clone(),
            payment: operation.payment_id,
            operation: Kept::of(operation),
        },
        Outcome::Refused(precondition) => StoredOutcome::Refused(precondition.clone()),
    };
    encode(&stored)
}

impl StoredOutcome {
    /// The payment and operations this answer refers to (to be read back).
    pub fn references(&self) -> Option<(Uuid, Vec<Uuid>)> {
        let (payment, kept): (Uuid, Vec<&Kept>) = match self {
            StoredOutcome::Payment {
                payment,
                operations,
                ..
            } => (*payment, operations.iter().collect()),
            StoredOutcome::Operation {
                payment, operation, ..
            } => (*payment, vec![operation]),
            _ => return None,
        };
        let ids: Vec<Uuid> = kept
            .into_iter()
            .filter_map(|k| match k {
                Kept::Final(id) => Some(*id),
                Kept::Copy(_) => None,
            })
            .collect();
        (!ids.is_empty()).then_some((payment, ids))
    }

    /// The session this answer refers to (to be read back).
    pub fn session(&self) -> Option<Uuid> {
        match self {
            StoredOutcome::SessionAsCreated(id) => Some(*id),
            _ => None,
        }
    }

    /// The answer, with the referenced session or operations as read back.
    pub fn resolve(
        self,
        session: Option<Session>,
        read: &[Operation],
    ) -> Result<Outcome, StoreError> {
        let find = |kept: Kept| match kept {
            Kept::Copy(operation) => Ok(*operation),
            Kept::Final(id) => read
                .iter()
                .find(|op| op.id == id)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt("an answer's operation is gone".into())),
        };
        Ok(match self {
            StoredOutcome::Session(view) => Outcome::Session(view),
            StoredOutcome::SessionAsCreated(_) => {
                let session = session
                    .ok_or_else(|| StoreError::Corrupt("an answer's session is gone".into()))?
                    .as_created();
                Outcome::Session(SessionView {
                    session,
                    status: SessionStatus::Open,
                })
            }
            StoredOutcome::Payment {
                snapshot,
                operations,
                ..
            } => Outcome::Payment {
                snapshot,
                operations: operations.into_iter().map(find).collect::<Result<_, _>>()?,
            },
            StoredOutcome::Operation {
                snapshot,
                operation,
                ..
            } => Outcome::Operation {
                snapshot,
                operation: find(operation)?,
            },
            StoredOutcome::Refused(precondition) => Outcome::Refused(precondition),
        })
    }
}
