//! Walley's report API: a page of it as JSON, and a settlement's header as
//! the port lists it.

use super::{
    Walley, unavailable,
    wire::{self, Problem, ReportPage, SettlementSummary},
};
use crate::{
    domain::{money::Amount, settlement::Control},
    partners::{PartnerError, SettlementReport, http},
};

impl Walley {
    /// A page of the report API, as JSON.
    pub(super) async fn report<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<ReportPage<T>, PartnerError> {
        let url = self.url(path);
        let (status, body) = self
            .exchange(|token| {
                self.client
                    .get(&url)
                    .query(query)
                    .bearer_auth(token.expose())
                    .header("Accept", "application/json")
            })
            .await
            .map_err(|error| match error {
                // Reading changes nothing: whatever happened, try later.
                PartnerError::Unknown { description } => PartnerError::Unavailable { description },
                other => other,
            })?;
        match status.as_u16() {
            200 => serde_json::from_slice(&body).map_err(|_| PartnerError::Unavailable {
                description: "the partner's report could not be read".into(),
            }),
            404 | 422 => {
                let problem = serde_json::from_slice::<Problem>(&body).unwrap_or_default();
                Err(PartnerError::Declined {
                    code: if problem.code.is_empty() {
                        status.as_u16().to_string()
                    } else {
                        problem.code
                    },
                    description: format!(
                        "the report API answered {}: {}",
                        status.as_u16(),
                        if problem.title.is_empty() {
                            "the query was refused"
                        } else {
                            &problem.title
                        }
                    ),
                })
            }
            409 => Err(unavailable(
                "a report request with the same idempotency key is in progress; try later",
            )),
            401 => Err(unavailable("the partner refused our credentials")),
            _ => Err(unavailable(&format!(
                "the partner's report API answered {status}"
            ))),
        }
    }
}

/// A settlement as the port lists it; its day is the last day it covers.
/// Its header's `captured` and `refunded` (negative) are what its lines
/// must add up to.
pub(super) fn report_of(summary: &SettlementSummary) -> Result<SettlementReport, PartnerError> {
    let unreadable = |what: &str| PartnerError::Unavailable {
        description: format!("settlement {} has an unreadable {what}", summary.id),
    };
    let currency = crate::domain::money::Currency::parse(&summary.currency)
        .map_err(|_| unreadable("currency"))?;
    let captured =
        http::minor_signed(summary.captured, currency).ok_or_else(|| unreadable("captured"))?;
    let refunded =
        http::minor_signed(summary.refunded, currency).ok_or_else(|| unreadable("refunded"))?;
    Ok(SettlementReport {
        reference: summary.id.clone(),
        payout_reference: summary.reference.clone(),
        date: wire::report_day(&summary.end_date).ok_or_else(|| unreadable("endDate"))?,
        currency,
        fees: Amount::ZERO,
        control: Control {
            captured: Some(captured),
            refunded: Some(-refunded),
            // The lines' own page says how many there are.
            count: None,
        },
    })
}
