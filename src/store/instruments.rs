//! Instrument claims as stored: which payer a partner token belongs to.

use uuid::Uuid;

/// One payment's claim on an instrument, with when it was made by the
/// store's clock (ms); `None` in a write: the store's now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentAttempt {
    pub payment: Uuid,
    pub at: Option<u64>,
}

/// Which payer an instrument (a partner's payment token) belongs to: a
/// merchant, and the session that claimed it (a single-use instrument is
/// that session's). `confirmed` once a payment of the payer authorized it;
/// until then, the payer's payments that claimed it. Named in the store by
/// a keyed hash of the partner and the token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentClaim {
    pub merchant: String,
    pub session: Uuid,
    pub confirmed: bool,
    pub attempts: Vec<InstrumentAttempt>,
}

impl InstrumentClaim {
    /// `1|<session>|<payment>@<ms>;…|<merchant>` (`@now` for the store to
    /// fill in): one string, compared as a whole to replace it.
    pub fn encode(&self) -> String {
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match a.at {
                Some(at) => format!("{}@{at}", a.payment),
                None => format!("{}@now", a.payment),
            })
            .collect();
        format!(
            "{}|{}|{}|{}",
            u8::from(self.confirmed),
            self.session,
            attempts.join(";"),
            self.merchant
        )
    }

    /// An encoded claim with its `@now` attempts stamped `@<now>` (only in
    /// the attempts: a merchant's name is never touched).
    pub fn stamp(encoded: &str, now: u64) -> String {
        let fields: Vec<&str> = encoded.splitn(4, '|').collect();
        match fields.as_slice() {
            [confirmed, session, attempts, merchant] => format!(
                "{confirmed}|{session}|{}|{merchant}",
                attempts.replace("@now", &format!("@{now}"))
            ),
            _ => encoded.to_owned(),
        }
    }

    pub fn decode(text: &str) -> Option<InstrumentClaim> {
        let mut parts = text.splitn(4, '|');
        let confirmed = parts.next()? == "1";
        let session = Uuid::try_parse(parts.next()?).ok()?;
        let attempts = parts
            .next()?
            .split(';')
            .filter(|a| !a.is_empty())
            .map(|a| {
                let (payment, at) = a.split_once('@')?;
                Some(InstrumentAttempt {
                    payment: Uuid::try_parse(payment).ok()?,
                    at: Some(at.parse().ok()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(InstrumentClaim {
            merchant: parts.next()?.to_owned(),
            session,
            confirmed,
            attempts,
        })
    }
}

/// A claim as found: what it says, the store's time when it was read (ms),
/// and its stored form (what a replacement compares with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInstrument {
    pub claim: InstrumentClaim,
    pub now: u64,
    pub stored: String,
}
