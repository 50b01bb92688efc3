//! Checkout sessions and their state machine.
//!
//! ```text
//! OPEN ──submit──▶ PROCESSING ──authorized──▶ SUBMITTED
//!  │  ▲                │
//!  │  └───declined─────┘   (the shopper may retry with another split)
//!  ├──update──▶ OPEN (amount, items, webhook, metadata)
//!  ├──cancel──▶ CANCELLED
//!  └──now ≥ expires_at──▶ EXPIRED (derived, never written)
//! ```

use std::{collections::BTreeMap, fmt, time::SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    items::ItemLine,
    money::{Amount, Currency},
    operation::Fingerprint,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CaptureMode {
    /// The full amount is captured as soon as the authorization succeeds.
    Automatic,
    /// The merchant captures later.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionStatus {
    Open,
    Processing,
    Submitted,
    Expired,
    Cancelled,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Processing => "processing",
            SessionStatus::Submitted => "submitted",
            SessionStatus::Expired => "expired",
            SessionStatus::Cancelled => "cancelled",
        }
    }
}

/// A header value of a webhook: a secret, never printed or echoed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderValue(String);

impl HeaderValue {
    pub fn new(value: String) -> Self {
        HeaderValue(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub headers: BTreeMap<String, HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub merchant: String,
    pub order_reference: String,
    pub amount: Amount,
    pub currency: Currency,
    pub capture_mode: CaptureMode,
    pub items: Vec<ItemLine>,
    pub webhook: Option<Webhook>,
    pub metadata: BTreeMap<String, String>,
    /// The stored status; `EXPIRED` is derived by [`Session::status_at`].
    pub status: SessionStatus,
    pub cancellation_reason: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub expires_at: SystemTime,
    pub payment_id: Option<Uuid>,
    /// The CreateSession request's fingerprint (its id is derived from the
    /// idempotency key: a retry that finds it tells a different request apart).
    pub fingerprint: Fingerprint,
    /// What CreateSession gave the fields an UpdateSession changes, kept
    /// from the first update on (`None`: never updated), so that a
    /// CreateSession replay still answers the session as created.
    pub created: Option<Box<Created>>,
}

/// The fields an UpdateSession may change, as CreateSession set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub amount: Amount,
    pub items: Vec<ItemLine>,
    pub webhook: Option<Webhook>,
    pub metadata: BTreeMap<String, String>,
}

/// What an UpdateSession changes; `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionChange {
    pub amount: Option<Amount>,
    pub items: Option<Vec<ItemLine>>,
    /// `Some(None)` removes the webhook (fingerprinted apart from keeping
    /// it: JSON writes both as `null` otherwise).
    #[serde(serialize_with = "keep_remove_or_set")]
    pub webhook: Option<Option<Webhook>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

fn keep_remove_or_set<S: serde::Serializer>(
    webhook: &Option<Option<Webhook>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match webhook {
        None => serializer.serialize_str("keep"),
        Some(None) => serializer.serialize_str("remove"),
        Some(Some(webhook)) => webhook.serialize(serializer),
    }
}

/// A session as the caller sees it at one instant (EXPIRED is derived from
/// the time, so a response keeps the status it was given with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub session: Session,
    pub status: SessionStatus,
}

impl Session {
    /// The session as CreateSession made it: its status, payment,
    /// cancellation reason and `updated_at` as then, and what an
    /// UpdateSession changed as kept from before the first one.
    pub fn as_created(&self) -> Session {
        let mut created = Session {
            status: SessionStatus::Open,
            cancellation_reason: String::new(),
            updated_at: self.created_at,
            payment_id: None,
            created: None,
            ..self.clone()
        };
        if let Some(original) = &self.created {
            let Created {
                amount,
                items,
                webhook,
                metadata,
            } = (**original).clone();
            created.amount = amount;
            created.items = items;
            created.webhook = webhook;
            created.metadata = metadata;
        }
        created
    }

    pub fn view_at(self, now: SystemTime) -> SessionView {
        let status = self.status_at(now);
        SessionView {
            session: self,
            status,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session has expired")]
    Expired,
    #[error("the session is {0:?}")]
    NotOpen(SessionStatus),
}

impl Session {
    /// An OPEN session past `expires_at` is EXPIRED.
    pub fn status_at(&self, now: SystemTime) -> SessionStatus {
        if self.status == SessionStatus::Open && now >= self.expires_at {
            SessionStatus::Expired
        } else {
            self.status
        }
    }

    fn require_open(&self, now: SystemTime) -> Result<(), SessionError> {
        match self.status_at(now) {
            SessionStatus::Open => Ok(()),
            SessionStatus::Expired => Err(SessionError::Expired),
            other => Err(SessionError::NotOpen(other)),
        }
    }

    /// OPEN → PROCESSING for a new payment attempt.
    pub fn begin_payment(&mut self, payment_id: Uuid, now: SystemTime) -> Result<(), SessionError> {
        self.require_open(now)?;
        self.status = SessionStatus::Processing;
        self.payment_id = Some(payment_id);
        self.updated_at = now;
        Ok(())
    }

    /// Whether the session is over and `payment` was its last payment (so
    /// nothing else needs it once the payment is gone): SUBMITTED with it,
    /// or CANCELLED after it. An OPEN session (a declined attempt, or one
    /// past its expiry, which is only ever computed) is left to the session
    /// retention.
    pub fn ended_with(&self, payment: Uuid) -> bool {
        self.payment_id == Some(payment)
            && matches!(
                self.status,
                SessionStatus::Submitted | SessionStatus::Cancelled
            )
    }

    /// PROCESSING → SUBMITTED when the attempt is authorized, back to OPEN
    /// when it failed (the shopper may try another split). Only the payment
    /// the session is processing moves it.
    pub fn finish_payment(&mut self, payment_id: Uuid, authorized: bool, now: SystemTime) {
        if self.status == SessionStatus::Processing && self.payment_id == Some(payment_id) {
            self.status = if authorized {
                SessionStatus::Submitted
            } else {
                SessionStatus::Open
            };
            self.updated_at = now;
        }
    }

    /// Applies `change` to an OPEN session.
    pub fn update(&mut self, change: SessionChange, now: SystemTime) -> Result<(), SessionError> {
        self.require_open(now)?;
        if self.created.is_none() {
            self.created = Some(Box::new(Created {
                amount: self.amount,
                items: self.items.clone(),
                webhook: self.webhook.clone(),
                metadata: self.metadata.clone(),
            }));
        }
        let SessionChange {
            amount,
            items,
            webhook,
            metadata,
        } = change;
        self.amount = amount.unwrap_or(self.amount);
        self.items = items.unwrap_or_else(|| std::mem::take(&mut self.items));
        self.webhook = webhook.unwrap_or_else(|| self.webhook.take());
        self.metadata = metadata.unwrap_or_else(|| std::mem::take(&mut self.metadata));
        self.updated_at = now;
        Ok(())
    }

    pub fn cancel(&mut self, reason: String, now: SystemTime) -> Result<(), SessionError> {
        self.require_open(now)?;
        self.status = SessionStatus::Cancelled;
        self.cancellation_reason = reason;
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session() -> Session {
        let t0 = SystemTime::UNIX_EPOCH;
        Session {
            id: Uuid::from_u128(1),
            merchant: "demo".into(),
            order_reference: "o".into(),
            amount: Amount::from_minor(100).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            items: vec![],
            webhook: None,
            metadata: BTreeMap::new(),
            status: SessionStatus::Open,
            cancellation_reason: String::new(),
            created_at: t0,
            updated_at: t0,
            expires_at: t0 + Duration::from_secs(1800),
            payment_id: None,
            fingerprint: Fingerprint([0; 16]),
            created: None,
        }
    }

    #[test]
    fn open_session_expires_at_its_deadline() {
        let s = session();
        assert_eq!(
            s.status_at(s.expires_at - Duration::from_secs(1)),
            SessionStatus::Open
        );
        assert_eq!(s.status_at(s.expires_at), SessionStatus::Expired);
        let mut s = session();
        let late = s.expires_at;
        assert_eq!(
            s.begin_payment(Uuid::from_u128(2), late),
            Err(SessionError::Expired)
        );
        assert_eq!(s.status, SessionStatus::Open);
    }

    #[test]
    fn declined_attempt_reopens_the_session() {
        let mut s = session();
        let now = s.created_at;
        s.begin_payment(Uuid::from_u128(2), now).unwrap();
        assert_eq!(
            s.begin_payment(Uuid::from_u128(3), now),
            Err(SessionError::NotOpen(SessionStatus::Processing))
        );
        s.finish_payment(Uuid::from_u128(2), false, now);
        assert_eq!(s.status, SessionStatus::Open);
        s.begin_payment(Uuid::from_u128(3), now).unwrap();
        s.finish_payment(Uuid::from_u128(2), true, now);
        assert_eq!(
            s.status,
            SessionStatus::Processing,
            "an older attempt changes nothing"
        );
        s.finish_payment(Uuid::from_u128(3), true, now);
        assert_eq!(s.status, SessionStatus::Submitted);
        assert_eq!(
            s.cancel(String::new(), now),
            Err(SessionError::NotOpen(SessionStatus::Submitted))
        );
    }

    #[test]
    fn an_update_changes_what_it_names_of_an_open_session_only() {
        let mut s = session();
        let now = s.created_at;
        let change = SessionChange {
            amount: Some(Amount::from_minor(250).unwrap()),
            metadata: Some([("cart".to_owned(), "7".to_owned())].into()),
            ..SessionChange::default()
        };
        s.update(change.clone(), now).unwrap();
        assert_eq!(s.amount.minor(), 250);
        assert_eq!(s.metadata.len(), 1);
        assert_eq!(s.order_reference, "o", "what it does not name stays");
        assert_ne!(s, s.as_created(), "an updated session is not as created");
        assert_eq!(s.as_created().amount.minor(), 100, "as created: before it");
        assert!(s.as_created().metadata.is_empty());
        s.begin_payment(Uuid::from_u128(2), now).unwrap();
        assert_eq!(
            s.update(change, now),
            Err(SessionError::NotOpen(SessionStatus::Processing))
        );
    }
}
