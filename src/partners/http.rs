//! What the HTTP connectors share: the client, amounts on the wire, and what
//! a failed exchange means.
//!
//! A request that could not be sent (no connection, TLS refused) is
//! `Unavailable`: nothing reached the partner. Once bytes may have left (a
//! timeout, a reset, a body that does not parse), it is `Unknown`.

use std::time::Duration;

use rust_decimal::Decimal;

use super::PartnerError;
use crate::domain::money::{Amount, Currency};

/// A client trusting the system's roots and `ca_pem` (a private CA) when
/// given. Redirects are not followed: a partner API does not redirect a
/// payment request, and following one could re-send it elsewhere.
pub fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("payment-orchestrator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    builder.build()
}

/// An exchange that produced no HTTP answer.
pub fn exchange_error(error: &reqwest::Error) -> PartnerError {
    if error.is_connect() {
        PartnerError::Unavailable {
            description: "could not connect to the partner; nothing was sent".into(),
        }
    } else if error.is_timeout() {
        PartnerError::Unknown {
            description: "no answer from the partner in time".into(),
        }
    } else {
        PartnerError::Unknown {
            description: "the exchange with the partner broke off".into(),
        }
    }
}

/// An answer whose body is not what the API documents: the request may
/// have been executed.
pub fn unreadable(status: reqwest::StatusCode) -> PartnerError {
    PartnerError::Unknown {
        description: format!("the partner answered {status} with a body that does not parse"),
    }
}

/// Minor units as the decimal major-unit amount the APIs take (`12345` BHD
/// is `12.345`, `1200` JPY is `1200`), exactly.
pub fn major(amount: Amount, currency: Currency) -> Decimal {
    amount.to_major(currency)
}

/// Signed major units in minor units (a report's deductions are negative);
/// `None` for more decimals than the currency has, or out of range.
pub fn minor_signed(major: Decimal, currency: Currency) -> Option<i64> {
    let magnitude = Amount::from_major(major.abs(), currency).ok()?.minor();
    Some(if major.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    })
}

/// A partner's major-unit amount in minor units; `Unknown` when it does not
/// fit the currency (the partner and we disagree on what happened).
pub fn minor(major: Decimal, currency: Currency) -> Result<Amount, PartnerError> {
    Amount::from_major(major, currency).map_err(|error| PartnerError::Unknown {
        description: format!("the partner reported an amount we cannot book: {error}"),
    })
}

/// A time as RFC 3339 (`2026-12-07T10:00:00Z`), if it reads as one.
pub fn rfc3339(text: &str) -> Option<std::time::SystemTime> {
    let timestamp: prost_types::Timestamp = text.parse().ok()?;
    std::time::SystemTime::try_from(timestamp).ok()
}
