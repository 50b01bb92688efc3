//! `ListPayments`: walks the creation-ordered index of a merchant's payments
//! and filters by derived state.
//!
//! The state of a payment changes over time, so it is filtered on the loaded
//! payments; one call scans a bounded number of index entries and hands back a
//! page token where it stopped (a page may be short while more follow).

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{PaymentError, PaymentView, Payments};
use crate::{domain::payment::PaymentState, store::ListQuery};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Index entries one call may look at before returning a (possibly short) page.
const MAX_SCANNED: usize = 5000;

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub order_reference: Option<String>,
    pub state: Option<PaymentState>,
    pub created_after: Option<SystemTime>,
    pub created_before: Option<SystemTime>,
    pub newest_first: bool,
}

#[derive(Debug, Clone)]
pub struct ListPayments {
    pub filter: PaymentFilter,
    pub page_size: usize,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PaymentPage {
    pub payments: Vec<PaymentView>,
    pub next_page_token: Option<String>,
}

impl PaymentFilter {
    /// Ties a page token to the filters it was issued for.
    fn digest(&self) -> String {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            self.order_reference,
            self.state,
            self.created_after,
            self.created_before,
            self.newest_first
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

fn page_token(filter: &PaymentFilter, cursor: &str) -> String {
    hex::encode(format!("{}.{cursor}", filter.digest()))
}

fn cursor_of(filter: &PaymentFilter, token: &str) -> Result<String, PaymentError> {
    let invalid = || PaymentError::InvalidArgument {
        field: "page_token".into(),
        description: "not a page token of this listing (filters must stay the same)".into(),
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (digest, cursor) = text.split_once('.').ok_or_else(invalid)?;
    if digest != filter.digest() {
        return Err(invalid());
    }
    Ok(cursor.to_owned())
}

impl Payments {
    pub async fn list_payments(
        &self,
        merchant: &str,
        request: ListPayments,
    ) -> Result<PaymentPage, PaymentError> {
        let filter = request.filter;
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let mut query = ListQuery {
            merchant: merchant.to_owned(),
            order_reference: filter.order_reference.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            cursor: request
                .page_token
                .as_deref()
                .map(|token| cursor_of(&filter, token))
                .transpose()?,
            newest_first: filter.newest_first,
            limit: page_size.max(100),
        };
        let mut payments = Vec::new();
        let mut scanned = 0;
        loop {
            let batch = self.store.list_payments(&query).await?;
            // A short batch is the end of the index.
            let mut at_end = batch.len() < query.limit;
            let total = batch.len();
            for (index, listed) in batch.into_iter().enumerate() {
                scanned += 1;
                query.cursor = Some(listed.cursor);
                let wanted = listed.payment.filter(|p| {
                    filter
                        .state
                        .is_none_or(|state| p.header.value.state() == state)
                });
                if let Some(payment) = wanted {
                    payments.push(PaymentView::now(payment.header.value, payment.operations));
                    if payments.len() == page_size {
                        at_end &= index + 1 == total;
                        break;
                    }
                }
            }
            let next_page_token = || query.cursor.as_deref().map(|c| page_token(&filter, c));
            if at_end {
                return Ok(PaymentPage {
                    payments,
                    next_page_token: None,
                });
            }
            if payments.len() == page_size || scanned >= MAX_SCANNED {
                return Ok(PaymentPage {
                    payments,
                    next_page_token: next_page_token(),
                });
            }
        }
    }
}
