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
    /// Only payments with an open dispute.
    pub open_disputes: bool,
}

/// A request for one page of a listing.
#[derive(Debug, Clone)]
pub struct Listing<F> {
    pub filter: F,
    pub page_size: usize,
    pub page_token: Option<String>,
}

/// One page of a listing, and the token of the next one when more may follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

pub type ListPayments = Listing<PaymentFilter>;
pub type PaymentPage = Page<PaymentView>;
pub type ListOperations = Listing<OperationFilter>;
/// Each operation with its payment's header.
pub type OperationPage = Page<(Payment, Operation)>;
pub type ListSessions = Listing<SessionFilter>;
pub type SessionPage = Page<SessionView>;

/// A listing's filter.
pub trait Filter {
    /// What a page token is tied to: a token is only good for the filter
    /// it was issued under.
    fn filters(&self) -> String;
}

impl<F: Filter> Listing<F> {
    /// The page size, within bounds, and the cursor the page token names.
    fn start(&self) -> Result<(usize, Option<String>), PaymentError> {
        let cursor = self
            .page_token
            .as_deref()
            .map(|token| {
                page_token::cursor(&self.filter.filters(), token).ok_or_else(|| {
                    PaymentError::InvalidArgument {
                        field: "page_token".into(),
                        description: "not a page token of this listing \
                                      (filters must stay the same)"
                            .into(),
                    }
                })
            })
            .transpose()?;
        Ok((self.page_size.clamp(1, MAX_PAGE_SIZE), cursor))
    }
}

/// A filter of a listing read from a merchant's index: by order reference
/// and creation time.
pub trait IndexFilter: Filter {
    /// The order reference, the creation range (inclusive, exclusive) and
    /// whether the newest come first.
    fn index(&self) -> (Option<String>, Option<SystemTime>, Option<SystemTime>, bool);
}

impl<F: IndexFilter> Listing<F> {
    /// The page size, and the store query of `merchant`'s index the page
    /// starts with (read in batches of at least 100 entries).
    fn index_query(&self, merchant: &str) -> Result<(usize, ListQuery), PaymentError> {
        let (page_size, cursor) = self.start()?;
        let (order_reference, created_after, created_before, newest_first) = self.filter.index();
        let query = ListQuery {
            merchant: merchant.to_owned(),
            order_reference,
            created_after,
            created_before,
            cursor,
            newest_first,
            limit: page_size.max(100),
        };
        Ok((page_size, query))
    }
}

impl<T> Page<T> {
    /// `items`, continued after `cursor` if there is one.
    fn new(items: Vec<T>, cursor: Option<String>, filter: &impl Filter) -> Page<T> {
        Page {
            items,
            next_page_token: cursor.map(|c| page_token::issue(&filter.filters(), &c)),
        }
    }
}

impl IndexFilter for PaymentFilter {
    fn index(&self) -> (Option<String>, Option<SystemTime>, Option<SystemTime>, bool) {
        let order = self.order_reference.clone();
        (
            order,
            self.created_after,
            self.created_before,
            self.newest_first,
        )
    }
}

impl Filter for PaymentFilter {
    fn filters(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{}",
            self.order_reference,
            self.state,
            self.created_after,
            self.created_before,
            self.newest_first,
            self.open_disputes
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

impl Payments {
    pub async fn list_payments(
        &self,
        merchant: &str,
        request: ListPayments,
    ) -> Result<PaymentPage, PaymentError> {
        let (page_size, query) = request.index_query(merchant)?;
        let filter = request.filter;
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
                let header = &payment.header.value;
                (filter.state.is_none_or(|state| header.state() == state)
                    && (!filter.open_disputes || header.has_open_dispute()))
                .then(|| PaymentView::now(payment.header.value, payment.operations))
            },
        )
        .await?;
        Ok(Page::new(payments, cursor, &filter))
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

    /// Whether only open operations are asked for: then the due-queue has
    /// them all. One merchant's review queue is read from its operations
    /// instead, where a final operation a partner contradicted is flagged
    /// too.
    fn only_open(&self) -> bool {
        let every_merchants_review = self.requires_review == Some(true) && self.merchant.is_none();
        every_merchants_review || self.status.is_some_and(|s| !s.is_final())
    }
}

impl Filter for OperationFilter {
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
        let mut request = request;
        if let Viewer::Merchant(merchant) = viewer {
            if request
                .filter
                .merchant
                .as_deref()
                .is_some_and(|m| m != merchant)
            {
                return Ok(Page {
                    items: Vec::new(),
                    next_page_token: None,
                });
            }
            request.filter.merchant = Some(merchant.to_owned());
        }
        let (page_size, cursor) = request.start()?;
        let filter = request.filter;
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
        let next = more
            .then(|| matching.last().map(|(member, _, _)| member.clone()))
            .flatten();
        let operations = matching.into_iter().map(|(_, p, o)| (p, o)).collect();
        Ok(Page::new(operations, next, filter))
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
                            return Ok(Page::new(operations, last, filter));
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
                            return Ok(Page::new(operations, last, filter));
                        }
                    }
                }
                // Nothing more of this payment: a later page starts after it.
                last = Some(format!("{member}/0"));
            }
            if at_end {
                return Ok(Page::new(operations, None, filter));
            }
            if scanned >= MAX_SCANNED {
                return Ok(Page::new(operations, last, filter));
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

impl IndexFilter for SessionFilter {
    /// Newest first, always.
    fn index(&self) -> (Option<String>, Option<SystemTime>, Option<SystemTime>, bool) {
        let order = self.order_reference.clone();
        (order, self.created_after, self.created_before, true)
    }
}

impl Filter for SessionFilter {
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
        let (page_size, query) = request.index_query(merchant)?;
        let filter = request.filter;
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
        Ok(Page::new(sessions, cursor, &filter))
    }
}
