//! The idempotency contract, generic over what it guards.
//!
//! A request's record is named by the id of what the request creates — a
//! session, a payment, an operation — derived from (merchant, scope, key):
//! the same key in the same scope always names the same record and the same
//! resource, so no retry, takeover or lost record can create a second one.
//! The record lives in that id's shard, beside what it guards, and is
//! claimed in the same atomic step that creates it.
//!
//! - first use: the request runs; its answer (response or refusal) is stored;
//! - same key, same request: the stored answer, byte for byte;
//! - same key, different request (fingerprint): `IDEMPOTENCY_KEY_REUSED`;
//! - same key while the first runs: `REQUEST_IN_PROGRESS`; once its lease ran
//!   out (it died), a retry answers from what it left behind if that is
//!   final, and stores that answer for every later replay.

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{OperationResult, PaymentError, PaymentView, Payments};
use crate::{
    domain::{
        operation::{Fingerprint, Operation, OperationKind, Origin},
        payment::Payment,
    },
    store::{Committed, KeyChange, KeyState, Outcome, Shard, Step, StoreError, Write},
};

impl Payments {
    /// What a key's record holds (`None`: no record), changing nothing.
    /// The probe is the claim the real call makes, in a step whose check
    /// (`impossible` adds it: a version no record reaches, `u64::MAX`)
    /// cannot hold: the store answers the record's state as it would to
    /// the real call, or a conflict when the key is free, and applies
    /// nothing either way.
    pub(super) async fn key_state(
        &self,
        shard: Shard,
        origin: Origin,
        impossible: impl FnOnce(&mut Step),
    ) -> Result<Option<KeyState>, PaymentError> {
        let mut probe = Step::new(shard, self.clock.now());
        probe.key = Some(KeyChange::Claim {
            record: origin.record,
            fingerprint: origin.fingerprint,
            lease: self.settings.idempotency_lease,
            ttl: self.settings.idempotency_ttl,
        });
        impossible(&mut probe);
        match self.store.commit(probe).await {
            Ok(Committed::Claimed(state)) => Ok(Some(state)),
            Ok(Committed::Applied { .. }) => {
                Err(PaymentError::Internal("a key probe applied".into()))
            }
            Ok(_) => Ok(None),
            Err(StoreError::NotReplicated(committed)) => match *committed {
                Committed::Claimed(state) => Ok(Some(state)),
                _ => Ok(None),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// The state of a session-scoped key (Submit, Update, Cancel), probed
    /// against the session.
    pub(super) async fn session_key_state(
        &self,
        session_id: Uuid,
        origin: Origin,
    ) -> Result<Option<KeyState>, PaymentError> {
        let impossible = |step: &mut Step| {
            step.session = Some(Write::Check {
                expected: u64::MAX,
                id: session_id,
            });
        };
        self.key_state(Shard::of(session_id), origin, impossible)
            .await
    }
}

/// A client's idempotency key: 1–255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<IdempotencyKey, &'static str> {
        let printable = key.bytes().all(|b| (0x20..0x7f).contains(&b));
        if key.is_empty() || key.len() > 255 || !printable {
            return Err("required: 1-255 printable ASCII characters");
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a key applies: the merchant's sessions, or one session's or one
/// payment's requests.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    CreateSession,
    Session(Uuid),
    Payment(Uuid),
}

/// Namespace of every derived id.
const NAMESPACE: Uuid = Uuid::from_u128(0x0c1e_94a8_7d2b_4f3e_9a61_5b8d_2e47_c903);

/// The id of what a request creates (and of its record): UUIDv5 of the
/// merchant, the scope and the key, in the shard of the scope's resource.
pub(super) fn derived_id(merchant: &str, scope: Scope, key: &IdempotencyKey) -> Uuid {
    let (name, parent) = match scope {
        Scope::CreateSession => ("create-session".to_owned(), None),
        Scope::Session(id) => (format!("session:{id}"), Some(id)),
        Scope::Payment(id) => (format!("payment:{id}"), Some(id)),
    };
    let id = Uuid::new_v5(
        &NAMESPACE,
        format!("{merchant}\0{name}\0{}", key.as_str()).as_bytes(),
    );
    parent.map_or(id, |parent| Shard::of(parent).stamp(id))
}

/// The id of the payment a `SubmitSession` with `key` creates: derived, so
/// a caller (or a test) can name it before any answer arrives.
pub fn submitted_payment_id(merchant: &str, session: Uuid, key: &IdempotencyKey) -> Uuid {
    derived_id(merchant, Scope::Session(session), key)
}

/// The id of the operation a capture, refund or void with `key` opens.
pub fn requested_operation_id(merchant: &str, payment: Uuid, key: &IdempotencyKey) -> Uuid {
    derived_id(merchant, Scope::Payment(payment), key)
}

/// The id of a payment's one operation of a purpose (its authorization, its
/// automatic capture, its compensation, its expiry void): derived, so it is
/// opened at most once whoever tries.
pub(super) fn system_id(payment: Uuid, purpose: &str) -> Uuid {
    Shard::of(payment).stamp(Uuid::new_v5(&payment, purpose.as_bytes()))
}

/// SHA-256 over the RPC name and the validated command, first 16 bytes.
pub(super) fn fingerprint(rpc: &str, command: &impl Serialize) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(rpc.as_bytes());
    hasher.update([0]);
    // Serializing plain data structures cannot fail.
    hasher.update(serde_json::to_vec(command).unwrap_or_default());
    let digest = hasher.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    Fingerprint(bytes)
}

/// What an existing record means for a new request with its key.
#[derive(Debug)]
pub(super) enum Found {
    /// The stored answer (a refusal comes back as the error).
    Answer(Box<Outcome>),
    /// Its request died (the lease ran out): answer from what it left.
    Abandoned,
}

pub(super) fn found_record(state: KeyState) -> Result<Found, PaymentError> {
    match state {
        KeyState::Mismatch => Err(PaymentError::IdempotencyKeyReused),
        KeyState::InFlight {
            lease_expired: false,
        } => Err(PaymentError::RequestInProgress),
        KeyState::InFlight {
            lease_expired: true,
        } => Ok(Found::Abandoned),
        KeyState::Done(outcome) => match *outcome {
            Outcome::Refused(precondition) => Err(precondition.into()),
            outcome => Ok(Found::Answer(Box::new(outcome))),
        },
    }
}

/// The answer of an operation that has concluded: the operation itself for a
/// capture, refund or void on its own; for a submit the payment with the
/// operations it ran (the authorization, then what followed).
pub(super) fn outcome_of(
    header: &Payment,
    before: &[Operation],
    operation: &Operation,
    after: &[Operation],
) -> Outcome {
    let snapshot = header.snapshot();
    if before.is_empty() && after.is_empty() && operation.kind != OperationKind::Authorization {
        Outcome::Operation {
            snapshot,
            operation: operation.clone(),
        }
    } else {
        Outcome::Payment {
            snapshot,
            operations: before
                .iter()
                .chain([operation])
                .chain(after)
                .cloned()
                .collect(),
        }
    }
}

/// A stored operation answer as a response, with the header's fixed part.
pub(super) fn operation_result(
    header: Payment,
    outcome: Outcome,
) -> Result<OperationResult, PaymentError> {
    match outcome {
        Outcome::Operation {
            snapshot,
            operation,
        } => Ok(OperationResult {
            operation,
            payment: PaymentView {
                header,
                snapshot,
                operations: Vec::new(),
                disputes: Vec::new(),
            },
            dry_run: false,
        }),
        Outcome::Refused(precondition) => Err(precondition.into()),
        _ => Err(PaymentError::Internal(
            "an operation's key holds another request's answer".into(),
        )),
    }
}

/// A stored submit answer as a response, with the header's fixed part.
pub(super) fn payment_view(header: Payment, outcome: Outcome) -> Result<PaymentView, PaymentError> {
    match outcome {
        Outcome::Payment {
            snapshot,
            operations,
        } => Ok(PaymentView {
            header,
            snapshot,
            operations,
            disputes: Vec::new(),
        }),
        Outcome::Refused(precondition) => Err(precondition.into()),
        _ => Err(PaymentError::Internal(
            "a submit's key holds another request's answer".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_merchant_scope_and_key_in_the_scope_shard() {
        let key = IdempotencyKey::parse("k-1").unwrap();
        let payment = Uuid::now_v7();
        let id = derived_id("demo", Scope::Payment(payment), &key);
        assert_eq!(id, derived_id("demo", Scope::Payment(payment), &key));
        assert_eq!(Shard::of(id), Shard::of(payment));
        assert_ne!(id, derived_id("other", Scope::Payment(payment), &key));
        assert_ne!(id, derived_id("demo", Scope::Payment(Uuid::now_v7()), &key));
        assert_ne!(
            id,
            derived_id(
                "demo",
                Scope::Payment(payment),
                &IdempotencyKey::parse("k-2").unwrap()
            )
        );
    }

    #[test]
    fn keys_are_parsed_once() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("order-1001-capture-1").is_ok());
    }

    #[test]
    fn a_submit_is_fingerprinted_by_what_the_merchant_sent_as_it_always_was() {
        use crate::domain::{
            capabilities::Capabilities,
            money::Amount,
            payment::{Leg, PaymentToken},
        };
        let session_id = Uuid::from_u128(7);
        let submit = |capabilities: Capabilities, days: u64| crate::payments::SubmitSession {
            session_id,
            legs: vec![Leg {
                partner: "wepay".into(),
                method: "creditcard".into(),
                amount: Amount::from_minor(1200).unwrap(),
                token: PaymentToken::new("4000".into()),
                capabilities,
                authorization_lifetime: std::time::Duration::from_secs(days * 86_400),
            }],
            parents: Vec::new(),
        };
        let today = submit(Capabilities::ALL, 7);
        // The configuration changed between a request and its retry.
        let reconfigured = submit(Capabilities::default(), 14);
        assert_eq!(
            fingerprint("SubmitSession", &today),
            fingerprint("SubmitSession", &reconfigured)
        );
        // Byte for byte what earlier releases hashed, so keys survive upgrades.
        assert_eq!(
            serde_json::to_string(&today).unwrap(),
            format!(
                r#"{{"session_id":"{session_id}","legs":[{{"partner":"wepay","method":"creditcard","amount":1200,"token":"4000"}}]}}"#
            )
        );
    }
}
