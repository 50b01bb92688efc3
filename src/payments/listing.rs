//! `ListPayments`: walks the creation-ordered index of a merchant's payments
//! and filters by derived state.
//!
//! The state of a payment changes over time, so it is filtered on the loaded
//! payments; one call scans a bounded number of index entries and hands back a
//! page token where it stopped (a page may be short while more follow).
//!
//! `ListOperations`, newest first, from one of two sources: the operations
//! still open (every one is on the due-queue until it is final) when the
//! filter asks only for open ones — the review queue (`requires_review`),
//! PENDING, UNCERTAIN — across merchants for operators; otherwise the
//! merchant's payments, newest first, a bounded number per call.

use std::time::SystemTime;

use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream};
use uuid::Uuid;

use super::{PaymentError, PaymentView, Payments, Viewer, page_token};
use crate::{
    domain::{
        operation::{Operation, OperationKind},
        payment::{Payment, PaymentState},
        session::{SessionStatus, SessionView},
        status::OperationStatus,
    },
    store::{ListQuery, StoreError, listing_member},
};

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
    /// What a page token is tied to.
    fn filters(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            self.order_reference,
            self.state,
            self.created_after,
            self.created_before,
            self.newest_first
        )
    }
}

/// Walks a creation-ordered listing from `query`, batch by batch, keeping
/// what `keep` turns into an item, until `page_size` items, the end, or
/// [`MAX_SCANNED`] entries looked at; with the cursor to continue from when
/// more may follow. Members whose record is gone are skipped.
async fn scan<R, T>(
    mut query: ListQuery,
    page_size: usize,
    fetch: impl Fn(ListQuery) -> BoxFuture<'static, Result<Vec<(String, Option<R>)>, StoreError>>,
    mut keep: impl FnMut(R) -> Option<T>,
) -> Result<(Vec<T>, Option<String>), PaymentError> {
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let batch = fetch(query.clone()).await?;
        // A short batch is the end of the index.
        let mut at_end = batch.len() < query.limit;
        let total = batch.len();
        for (index, (cursor, record)) in batch.into_iter().enumerate() {
            scanned += 1;
            query.cursor = Some(cursor);
            if let Some(item) = record.and_then(&mut keep) {
                items.push(item);
                if items.len() == page_size {
                    at_end &= index + 1 == total;
                    break;
                }
            }
        }
        if at_end {
            return Ok((items, None));
        }
        if items.len() == page_size || scanned >= MAX_SCANNED {
            return Ok((items, query.cursor));
        }
    }
}

/// The cursor of a page token issued for `filters`.
fn cursor_of(filters: &str, token: &str) -> Result<String, PaymentError> {
    page_token::cursor(filters, token).ok_or_else(|| PaymentError::InvalidArgument {
        field: "page_token".into(),
        description: "not a page token of this listing (filters must stay the same)".into(),
    })
}

impl Payments {
    pub async fn list_payments(
        &self,
        merchant: &str,
        request: ListPayments,
    ) -> Result<PaymentPage, PaymentError> {
        let filter = request.filter;
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let query = ListQuery {
            merchant: merchant.to_owned(),
            order_reference: filter.order_reference.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            cursor: request
                .page_token
                .as_deref()
                .map(|token| cursor_of(&filter.filters(), token))
                .transpose()?,
            newest_first: filter.newest_first,
            limit: page_size.max(100),
        };
        let (payments, cursor) = scan(
            query,
            page_size,
            |query| {
                let store = self.store.clone();
                async move {
                    let batch = store.list_payments(&query).await?;
                    Ok(batch.into_iter().map(|l| (l.cursor, l.payment)).collect())
                }
                .boxed()
            },
            |payment| {
                (filter
                    .state
                    .is_none_or(|state| payment.header.value.state() == state))
                .then(|| PaymentView::now(payment.header.value, payment.operations))
            },
        )
        .await?;
        Ok(PaymentPage {
            payments,
            next_page_token: cursor.map(|c| page_token::issue(&filter.filters(), &c)),
        })
    }
}

/// Open operations one call considers at most (the review queue is short;
/// a longer one is a page of the most recent ones' kind).
pub const MAX_OPEN_CONSIDERED: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub status: Option<OperationStatus>,
    pub kind: Option<OperationKind>,
    pub requires_review: Option<bool>,
    /// Inclusive.
    pub created_after: Option<SystemTime>,
    /// Exclusive.
    pub created_before: Option<SystemTime>,
    pub merchant_reference: Option<String>,
    /// One of its partner transactions has this partner reference.
    pub partner_reference: Option<String>,
    /// Only this merchant's (operators; a merchant sees only its own).
    pub merchant: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ListOperations {
    pub filter: OperationFilter,
    pub page_size: usize,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OperationPage {
    /// Each with its payment's header.
    pub operations: Vec<(Payment, Operation)>,
    pub next_page_token: Option<String>,
}

impl OperationFilter {
    fn admits(&self, payment: &Payment, operation: &Operation) -> bool {
        self.merchant
            .as_ref()
            .is_none_or(|m| *m == payment.merchant)
            && self.status.is_none_or(|s| s == operation.status)
            && self.kind.is_none_or(|k| k == operation.kind)
            && self
                .requires_review
                .is_none_or(|r| r == operation.requires_review)
            && self.created_after.is_none_or(|t| operation.created_at >= t)
            && self.created_before.is_none_or(|t| operation.created_at < t)
            && self
                .merchant_reference
                .as_ref()
                .is_none_or(|r| *r == operation.merchant_reference)
            && self.partner_reference.as_ref().is_none_or(|r| {
                operation
                    .transactions
                    .iter()
                    .any(|tx| tx.partner_reference.as_ref() == Some(r))
            })
    }

    /// Whether only open operations can match: then the due-queue has them
    /// all.
    fn only_open(&self) -> bool {
        self.requires_review == Some(true) || self.status.is_some_and(|s| !s.is_final())
    }

    fn filters(&self) -> String {
        format!(
            "ops|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.status,
            self.kind,
            self.requires_review,
            self.created_after,
            self.created_before,
            self.merchant_reference,
            self.partner_reference,
            self.merchant
        )
    }
}

impl Payments {
    /// Operations newest first. A merchant sees only its own (asking for
    /// another merchant's gets nothing); an operator lists the open ones
    /// across merchants, or any of one merchant's.
    pub async fn list_operations(
        &self,
        viewer: Viewer<'_>,
        request: ListOperations,
    ) -> Result<OperationPage, PaymentError> {
        let mut filter = request.filter;
        if let Viewer::Merchant(merchant) = viewer {
            if filter.merchant.as_deref().is_some_and(|m| m != merchant) {
                return Ok(OperationPage {
                    operations: Vec::new(),
                    next_page_token: None,
                });
            }
            filter.merchant = Some(merchant.to_owned());
        }
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let cursor = request
            .page_token
            .as_deref()
            .map(|token| cursor_of(&filter.filters(), token))
            .transpose()?;
        if filter.only_open() {
            return self.open_operations_page(&filter, page_size, cursor).await;
        }
        let Some(merchant) = filter.merchant.clone() else {
            return Err(PaymentError::InvalidArgument {
                field: "merchant".into(),
                description: "operators list the open operations of every merchant \
                              (requires_review, PENDING, UNCERTAIN) or any operations of one"
                    .into(),
            });
        };
        self.merchant_operations_page(&merchant, &filter, page_size, cursor)
            .await
    }

    /// From the due-queue: every open operation, newest first.
    async fn open_operations_page(
        &self,
        filter: &OperationFilter,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<OperationPage, PaymentError> {
        let open = self.store.open_operations(MAX_OPEN_CONSIDERED).await?;
        let loaded: Vec<_> = stream::iter(open)
            .map(|(payment, operation)| self.store.operation(payment, operation))
            .buffer_unordered(64)
            .collect()
            .await;
        let mut matching = Vec::new();
        for found in loaded {
            if let Some((header, operation)) = found?
                && filter.admits(&header.value, &operation)
            {
                let member = listing_member(operation.created_at, operation.id);
                if cursor.as_ref().is_none_or(|c| member < *c) {
                    matching.push((member, header.value, operation));
                }
            }
        }
        matching.sort_by(|a, b| b.0.cmp(&a.0));
        let more = matching.len() > page_size;
        matching.truncate(page_size);
        let next_page_token = more
            .then(|| {
                matching
                    .last()
                    .map(|(m, _, _)| page_token::issue(&filter.filters(), m))
            })
            .flatten();
        Ok(OperationPage {
            operations: matching.into_iter().map(|(_, p, o)| (p, o)).collect(),
            next_page_token,
        })
    }

    /// From the merchant's payments, newest first, and each payment's
    /// operations newest first. The cursor is `<payment member>/<sequence>`:
    /// the last operation handed out.
    async fn merchant_operations_page(
        &self,
        merchant: &str,
        filter: &OperationFilter,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<OperationPage, PaymentError> {
        let invalid = || PaymentError::InvalidArgument {
            field: "page_token".into(),
            description: "not a page token of this listing".into(),
        };
        let mut operations = Vec::new();
        let mut last: Option<String> = None;
        // Resume inside the payment the last page stopped in.
        let mut after_payment = None;
        if let Some(cursor) = &cursor {
            let (member, sequence) = cursor.rsplit_once('/').ok_or_else(invalid)?;
            let sequence: u32 = sequence.parse().map_err(|_| invalid())?;
            let id = member
                .split_once(':')
                .and_then(|(_, id)| Uuid::try_parse(id).ok())
                .ok_or_else(invalid)?;
            if let Some(payment) = self.store.payment(id).await? {
                let mut rest: Vec<&Operation> = payment
                    .operations
                    .iter()
                    .filter(|op| op.sequence < sequence)
                    .collect();
                rest.sort_by_key(|op| std::cmp::Reverse(op.sequence));
                for op in rest {
                    if filter.admits(&payment.header.value, op) {
                        operations.push((payment.header.value.clone(), op.clone()));
                        last = Some(format!("{member}/{}", op.sequence));
                        if operations.len() == page_size {
                            return Ok(OperationPage {
                                operations,
                                next_page_token: last
                                    .map(|c| page_token::issue(&filter.filters(), &c)),
                            });
                        }
                    }
                }
            }
            after_payment = Some(member.to_owned());
        }
        let mut query = ListQuery {
            merchant: merchant.to_owned(),
            order_reference: None,
            created_after: None,
            created_before: filter.created_before,
            cursor: after_payment,
            newest_first: true,
            limit: 100,
        };
        let mut scanned = 0;
        loop {
            let batch = self.store.list_payments(&query).await?;
            let at_end = batch.len() < query.limit;
            for listed in batch {
                scanned += 1;
                let member = listed.cursor.clone();
                query.cursor = Some(listed.cursor);
                let Some(payment) = listed.payment else {
                    continue;
                };
                let mut ops: Vec<&Operation> = payment.operations.iter().collect();
                ops.sort_by_key(|op| std::cmp::Reverse(op.sequence));
                for op in ops {
                    if filter.admits(&payment.header.value, op) {
                        operations.push((payment.header.value.clone(), op.clone()));
                        last = Some(format!("{member}/{}", op.sequence));
                        if operations.len() == page_size {
                            return Ok(OperationPage {
                                operations,
                                next_page_token: last
                                    .map(|c| page_token::issue(&filter.filters(), &c)),
                            });
                        }
                    }
                }
                // Nothing more of this payment: a later page starts after it.
                last = Some(format!("{member}/0"));
            }
            if at_end {
                return Ok(OperationPage {
                    operations,
                    next_page_token: None,
                });
            }
            if scanned >= MAX_SCANNED {
                return Ok(OperationPage {
                    operations,
                    next_page_token: last.map(|c| page_token::issue(&filter.filters(), &c)),
                });
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub order_reference: Option<String>,
    pub status: Option<SessionStatus>,
    pub created_after: Option<SystemTime>,
    pub created_before: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct ListSessions {
    pub filter: SessionFilter,
    pub page_size: usize,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionPage {
    pub sessions: Vec<SessionView>,
    pub next_page_token: Option<String>,
}

impl SessionFilter {
    fn filters(&self) -> String {
        format!(
            "sessions|{:?}|{:?}|{:?}|{:?}",
            self.order_reference, self.status, self.created_after, self.created_before
        )
    }
}

impl Payments {
    /// A merchant's sessions, newest first, by order reference and status
    /// (as of now: an OPEN session past its expiry is EXPIRED). One call
    /// scans a bounded number of index entries, like ListPayments.
    pub async fn list_sessions(
        &self,
        merchant: &str,
        request: ListSessions,
    ) -> Result<SessionPage, PaymentError> {
        let filter = request.filter;
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let cursor = request
            .page_token
            .as_deref()
            .map(|token| cursor_of(&filter.filters(), token))
            .transpose()?;
        let query = ListQuery {
            merchant: merchant.to_owned(),
            order_reference: filter.order_reference.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            cursor,
            newest_first: true,
            limit: page_size.max(100),
        };
        let now = self.clock.now();
        let (sessions, cursor) = scan(
            query,
            page_size,
            |query| {
                let store = self.store.clone();
                async move {
                    let batch = store.list_sessions(&query).await?;
                    Ok(batch.into_iter().map(|l| (l.cursor, l.session)).collect())
                }
                .boxed()
            },
            |session| {
                let view = session.value.view_at(now);
                filter
                    .status
                    .is_none_or(|status| view.status == status)
                    .then_some(view)
            },
        )
        .await?;
        Ok(SessionPage {
            sessions,
            next_page_token: cursor.map(|c| page_token::issue(&filter.filters(), &c)),
        })
    }
}
