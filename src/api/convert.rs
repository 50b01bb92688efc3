//! Proto ⇄ domain at the edge. Requests are validated field by field: every
//! violation is collected (not just the first) and reported in one
//! INVALID_ARGUMENT with a BadRequest detail, before anything is touched.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use rust_decimal::Decimal;
use tonic::Status;
use tonic_types::FieldViolation;
use uuid::Uuid;

pub mod settlements;
pub mod webhooks;

use super::{error::invalid_argument, proto};
use crate::{
    domain::{
        amounts::{Amounts, Coverage},
        items::{self, ItemLine, ItemLineError, ItemLineInput},
        money::{Amount, Currency},
        operation::{Operation, OperationKind, PartnerTransaction, TriggeredBy},
        payment::{Leg, Payment, PaymentState, PaymentToken},
        priority::{Pattern, PriorityRule},
        session::{CaptureMode, HeaderValue, SessionStatus, SessionView, Webhook},
        status::{OperationStatus, TransactionStatus},
    },
    partners::Partners,
    payments::{
        CancelSession, CreateSession, DEFAULT_PAGE_SIZE, EventResult, IdempotencyKey, Idempotent,
        ListOperations, ListPayments, ListSessions, MAX_PAGE_SIZE, MAX_WAIT, OperationCommand,
        OperationFilter, OperationPage, OperationResult, PartnerEvent, PaymentFilter, PaymentPage,
        PaymentView, SessionFilter, SubmitSession,
    },
    webhooks::{Destinations, destinations},
};

const MAX_TEXT: usize = 255;
const MAX_ITEMS: usize = 1000;
const MAX_LEGS: usize = 10;
const MAX_RULES: usize = 20;
const MAX_METADATA: usize = 50;
const MAX_TOKEN: usize = 2048;
const MAX_URL: usize = 2048;
const MAX_HEADERS: usize = 10;
const MAX_HEADER_BYTES: usize = 4096;
const MAX_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Collects field violations while parsing a request.
#[derive(Debug, Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Status> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.into_status())
        }
    }

    /// For when a required value is missing (a violation was recorded).
    fn into_status(self) -> Status {
        invalid_argument(self.0)
    }

    fn idempotency_key(&mut self, key: &str) -> Option<IdempotencyKey> {
        match IdempotencyKey::parse(key) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.add("idempotency_key", problem);
                None
            }
        }
    }

    fn text(&mut self, field: &str, value: &str, required: bool) {
        let count = value.chars().count();
        if required && value.trim().is_empty() {
            self.add(field, "required");
        } else if count > MAX_TEXT {
            self.add(field, format!("at most {MAX_TEXT} characters"));
        } else if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// A timestamp filter, if given and valid.
    fn instant(
        &mut self,
        field: &str,
        value: Option<prost_types::Timestamp>,
    ) -> Option<std::time::SystemTime> {
        value.and_then(|t| {
            std::time::SystemTime::try_from(t)
                .map_err(|_| self.add(field, "not a valid timestamp"))
                .ok()
        })
    }

    /// A page size: 0 is the default, more than the maximum is the maximum
    /// (AIP-158), a negative one is refused.
    /// A page token as sent (read by the listing), bounded; `None` when
    /// empty.
    fn page_token(&mut self, token: String) -> Option<String> {
        if token.len() > 1024 {
            self.add("page_token", "not a page token of this listing");
        }
        (!token.is_empty()).then_some(token)
    }

    fn page_size(&mut self, requested: i32, default: usize, max: usize) -> usize {
        match usize::try_from(requested) {
            Ok(0) => default,
            Ok(size) => size.min(max),
            Err(_) => {
                self.add("page_size", "must not be negative");
                default
            }
        }
    }

    fn id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        match Uuid::try_parse(value) {
            Ok(id) => Some(id),
            Err(_) => {
                self.add(field, "must be a UUID");
                None
            }
        }
    }

    fn positive_amount(&mut self, field: &str, minor: i64) -> Option<Amount> {
        match Amount::from_minor(minor) {
            Ok(amount) if !amount.is_zero() => Some(amount),
            _ => {
                self.add(field, "must be a positive amount in minor units");
                None
            }
        }
    }

    fn amount(&mut self, field: &str, minor: i64) -> Option<Amount> {
        match Amount::from_minor(minor) {
            Ok(amount) => Some(amount),
            Err(_) => {
                self.add(field, "must not be negative");
                None
            }
        }
    }

    fn currency(&mut self, field: &str, code: &str) -> Option<Currency> {
        match Currency::parse(code) {
            Ok(currency) => Some(currency),
            Err(_) => {
                self.add(field, "must be an ISO 4217 alphabetic code such as EUR");
                None
            }
        }
    }

    /// Item lines, which must add up (net plus tax) to `amount` when given.
    /// `amount` is `None` when it is invalid or absent (`absent` names why
    /// lines cannot be checked against it).
    fn items(
        &mut self,
        field: &str,
        items: Vec<proto::ItemLine>,
        amount: Result<Option<Amount>, &str>,
    ) -> Vec<ItemLine> {
        if items.is_empty() {
            return Vec::new();
        }
        if items.len() > MAX_ITEMS {
            self.add(field, format!("at most {MAX_ITEMS} items"));
            return Vec::new();
        }
        let given = items.len();
        let lines = self.item_lines(field, items);
        match amount {
            Err(why) => self.add("amount", why),
            Ok(Some(amount)) if lines.len() == given => match items::total(&lines) {
                Ok(total) if total == amount => {}
                Ok(total) => self.add(
                    field,
                    format!("the lines add up to {total} (net plus tax), the amount is {amount}"),
                ),
                Err(_) => self.add(field, "the lines add up to more than an amount can hold"),
            },
            Ok(_) => {}
        }
        lines
    }

    fn item_lines(&mut self, field: &str, items: Vec<proto::ItemLine>) -> Vec<ItemLine> {
        let mut lines = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let at = |name: &str| format!("{field}[{index}].{name}");
            self.text(&at("sku_reference"), &item.sku_reference, true);
            self.text(&at("name"), &item.name, true);
            let unit_price = self.amount(&at("unit_price"), item.unit_price);
            let discount = self.amount(&at("discount_amount"), item.discount_amount);
            let tax_rate = match Decimal::from_str(item.tax_rate.trim()) {
                Ok(rate) => Some(rate),
                Err(_) if item.tax_rate.is_empty() => Some(Decimal::ZERO),
                Err(_) => {
                    self.add(
                        at("tax_rate"),
                        "must be a decimal percentage such as \"25.0\"",
                    );
                    None
                }
            };
            let (Some(unit_price), Some(discount_amount), Some(tax_rate)) =
                (unit_price, discount, tax_rate)
            else {
                continue;
            };
            let input = ItemLineInput {
                sku_reference: item.sku_reference,
                name: item.name,
                quantity: item.quantity,
                unit_price,
                tax_rate,
                discount_amount,
            };
            match ItemLine::compute(input) {
                Ok(line) => lines.push(line),
                Err(error) => {
                    let name = match error {
                        ItemLineError::Quantity => "quantity",
                        ItemLineError::TaxRate => "tax_rate",
                        ItemLineError::DiscountTooLarge => "discount_amount",
                        ItemLineError::Amount(_) => "unit_price",
                    };
                    self.add(at(name), error.to_string());
                }
            }
        }
        lines
    }

    fn priority(
        &mut self,
        rules: Vec<proto::PriorityRule>,
        partners: &Partners,
    ) -> Vec<PriorityRule> {
        if rules.len() > MAX_RULES {
            self.add("priority", format!("at most {MAX_RULES} rules"));
            return Vec::new();
        }
        let mut parsed = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            let partner_ok = rule.partner == "*" || partners.get(&rule.partner).is_some();
            if !partner_ok {
                self.add(
                    format!("priority[{index}].partner"),
                    "must be \"*\" or a configured partner",
                );
            }
            let method_ok = rule.method == "*" || partners.knows_method(&rule.method);
            if !method_ok {
                self.add(
                    format!("priority[{index}].method"),
                    "must be \"*\" or a payment method of a configured partner",
                );
            }
            if partner_ok && method_ok {
                parsed.push(PriorityRule::new(
                    Pattern::parse(&rule.partner),
                    Pattern::parse(&rule.method),
                ));
            }
        }
        parsed
    }
}

fn capture_mode(violations: &mut Violations, value: i32) -> CaptureMode {
    match proto::CaptureMode::try_from(value) {
        Ok(proto::CaptureMode::Manual) => CaptureMode::Manual,
        Ok(proto::CaptureMode::Automatic | proto::CaptureMode::Unspecified) => {
            CaptureMode::Automatic
        }
        Err(_) => {
            violations.add("capture_mode", "unknown capture mode");
            CaptureMode::Automatic
        }
    }
}

/// A merchant's webhook: a URL the operator's rules allow (see
/// `webhooks::destinations`) and at most [`MAX_HEADERS`] headers of bounded
/// size, none that frames, routes or signs the request.
fn webhook(
    violations: &mut Violations,
    webhook: Option<proto::Webhook>,
    destinations: &Destinations,
) -> Option<Webhook> {
    let webhook = webhook?;
    if webhook.url.len() > MAX_URL || webhook.url.chars().any(char::is_whitespace) {
        violations.add(
            "webhook.url",
            "must be an absolute URL of at most 2048 characters",
        );
    } else if let Err(refusal) = destinations.check_url(&webhook.url) {
        violations.add("webhook.url", format!("refused: {refusal}"));
    }
    if webhook.headers.len() > MAX_HEADERS {
        violations.add("webhook.headers", format!("at most {MAX_HEADERS} headers"));
    }
    let size: usize = webhook
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        violations.add(
            "webhook.headers",
            format!("at most {MAX_HEADER_BYTES} bytes of names and values in all"),
        );
    }
    for (name, value) in &webhook.headers {
        let token = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        let field = format!("webhook.headers[{name:?}]");
        if !token {
            violations.add(field, "header names are 1-64 of A-Z a-z 0-9 - _");
        } else if let Some(reason) = destinations::header_refusal(name) {
            violations.add(field, format!("may not be set: it {reason}"));
        } else if value.len() > 1024 || value.bytes().any(|b| b.is_ascii_control()) {
            violations.add(field, "header values are at most 1024 visible characters");
        }
    }
    Some(Webhook {
        url: webhook.url,
        headers: webhook
            .headers
            .into_iter()
            .map(|(name, value)| (name, HeaderValue::new(value)))
            .collect(),
    })
}

fn expires_in(
    violations: &mut Violations,
    value: Option<prost_types::Duration>,
) -> Option<Duration> {
    let value = value?;
    match Duration::try_from(value) {
        Ok(duration) if !duration.is_zero() && duration <= MAX_EXPIRY => Some(duration),
        _ => {
            violations.add("expires_in", "must be positive and at most 24 hours");
            None
        }
    }
}

fn metadata(
    violations: &mut Violations,
    metadata: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    if metadata.len() > MAX_METADATA {
        violations.add("metadata", format!("at most {MAX_METADATA} pairs"));
    }
    for (key, value) in &metadata {
        if key.is_empty() || key.chars().count() > 64 {
            violations.add("metadata", "keys are 1-64 characters");
        }
        if value.chars().count() > 512 {
            violations.add(
                format!("metadata[{key}]"),
                "values are at most 512 characters",
            );
        }
    }
    metadata
}

pub fn create_session(
    request: proto::CreateSessionRequest,
    destinations: &Destinations,
) -> Result<Idempotent<CreateSession>, Status> {
    let mut v = Violations::default();
    let key = v.idempotency_key(&request.idempotency_key);
    v.text("order_reference", &request.order_reference, true);
    let amount = v.positive_amount("amount", request.amount);
    let currency = v.currency("currency", &request.currency);
    let capture_mode = capture_mode(&mut v, request.capture_mode);
    let items = v.items("items", request.items, Ok(amount));
    let webhook = webhook(&mut v, request.webhook, destinations);
    let expires_in = expires_in(&mut v, request.expires_in);
    let metadata = metadata(&mut v, request.metadata);
    let (Some(key), Some(amount), Some(currency)) = (key, amount, currency) else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: CreateSession {
            order_reference: request.order_reference,
            amount,
            currency,
            capture_mode,
            items,
            webhook,
            expires_in,
            metadata,
        },
    })
}

/// An optional currency filter: empty is none.
pub fn optional_currency(field: &str, code: &str) -> Result<Option<Currency>, Status> {
    if code.is_empty() {
        return Ok(None);
    }
    let mut v = Violations::default();
    let currency = v.currency(field, code);
    v.finish(|| currency)
}

pub fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    let mut v = Violations::default();
    match v.id(field, value) {
        Some(id) => Ok(id),
        None => Err(v.into_status()),
    }
}

pub fn submit_session(
    request: proto::SubmitSessionRequest,
    partners: &Partners,
) -> Result<Idempotent<SubmitSession>, Status> {
    let mut v = Violations::default();
    let session_id = v.id("session_id", &request.session_id);
    let key = v.idempotency_key(&request.idempotency_key);
    if request.split.is_empty() || request.split.len() > MAX_LEGS {
        v.add("split", format!("between 1 and {MAX_LEGS} legs"));
    }
    let mut legs = Vec::with_capacity(request.split.len());
    for (index, leg) in request.split.into_iter().enumerate() {
        let at = |name: &str| format!("split[{index}].{name}");
        let amount = v.positive_amount(&at("amount"), leg.amount);
        let partner = partners.get(&leg.partner);
        match partner {
            None => v.add(at("partner"), "not a configured partner"),
            Some(_) if !partners.supports(&leg.partner, &leg.method) => {
                v.add(at("method"), "not a payment method of this partner");
            }
            Some(_) => {}
        }
        // What the partner is configured with now stays with the leg.
        let (capabilities, authorization_lifetime) = partner
            .map(|p| (p.capabilities, p.authorization_lifetime))
            .unwrap_or_default();
        // The partner checks the token's content later (asynchronously).
        if leg.payment_token.is_empty() || leg.payment_token.len() > MAX_TOKEN {
            v.add(at("payment_token"), "required, at most 2048 characters");
        }
        if let Some(amount) = amount {
            legs.push(Leg {
                partner: leg.partner,
                method: leg.method,
                amount,
                token: PaymentToken::new(leg.payment_token),
                capabilities,
                authorization_lifetime,
            });
        }
    }
    if Amount::sum(legs.iter().map(|leg| leg.amount)).is_err() {
        v.add("split", "leg amounts overflow");
    }
    let (Some(session_id), Some(key)) = (session_id, key) else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: SubmitSession { session_id, legs },
    })
}

pub fn cancel_session(
    request: proto::CancelSessionRequest,
) -> Result<Idempotent<CancelSession>, Status> {
    let mut v = Violations::default();
    let session_id = v.id("session_id", &request.session_id);
    let key = v.idempotency_key(&request.idempotency_key);
    v.text("reason", &request.reason, false);
    let (Some(session_id), Some(key)) = (session_id, key) else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: CancelSession {
            session_id,
            reason: request.reason,
        },
    })
}

/// The fields capture, refund and void share.
pub struct OperationFields {
    pub payment_id: String,
    pub idempotency_key: String,
    pub amount: Option<i64>,
    pub merchant_reference: String,
    pub priority: Vec<proto::PriorityRule>,
    pub items: Vec<proto::ItemLine>,
    pub disable_fallback: bool,
    pub reason: String,
}

impl From<proto::CaptureRequest> for OperationFields {
    fn from(r: proto::CaptureRequest) -> Self {
        OperationFields {
            payment_id: r.payment_id,
            idempotency_key: r.idempotency_key,
            amount: r.amount,
            merchant_reference: r.merchant_reference,
            priority: r.priority,
            items: r.items,
            disable_fallback: r.disable_fallback,
            reason: String::new(),
        }
    }
}

impl From<proto::RefundRequest> for OperationFields {
    fn from(r: proto::RefundRequest) -> Self {
        OperationFields {
            payment_id: r.payment_id,
            idempotency_key: r.idempotency_key,
            amount: r.amount,
            merchant_reference: r.merchant_reference,
            priority: r.priority,
            items: r.items,
            disable_fallback: r.disable_fallback,
            reason: r.reason,
        }
    }
}

impl From<proto::VoidRequest> for OperationFields {
    fn from(r: proto::VoidRequest) -> Self {
        OperationFields {
            payment_id: r.payment_id,
            idempotency_key: r.idempotency_key,
            amount: r.amount,
            merchant_reference: r.merchant_reference,
            priority: r.priority,
            items: r.items,
            disable_fallback: r.disable_fallback,
            reason: r.reason,
        }
    }
}

pub fn operation(
    kind: OperationKind,
    fields: OperationFields,
    partners: &Partners,
) -> Result<Idempotent<OperationCommand>, Status> {
    let mut v = Violations::default();
    let payment_id = v.id("payment_id", &fields.payment_id);
    let key = v.idempotency_key(&fields.idempotency_key);
    let amount = fields
        .amount
        .map(|minor| v.positive_amount("amount", minor));
    v.text("merchant_reference", &fields.merchant_reference, false);
    v.text("reason", &fields.reason, false);
    let priority = v.priority(fields.priority, partners);
    let items_against = match amount {
        None => Err("required when items are given: the lines must add up to it"),
        Some(amount) => Ok(amount),
    };
    let items = v.items("items", fields.items, items_against);
    let (Some(payment_id), Some(key), Some(amount)) =
        (payment_id, key, amount.map_or(Some(None), |a| a.map(Some)))
    else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: OperationCommand {
            payment_id,
            kind,
            amount,
            priority,
            disable_fallback: fields.disable_fallback,
            merchant_reference: fields.merchant_reference,
            reason: fields.reason,
            items,
        },
    })
}

// ---- domain → proto ----

/// What the partners offer `merchant` (in `currency`, if given).
pub fn payment_methods(
    partners: &Partners,
    merchant: &str,
    currency: Option<Currency>,
) -> proto::ListPaymentMethodsResponse {
    let mut payment_methods = Vec::new();
    for (name, partner) in partners.iter() {
        if !partner.serves(merchant) || currency.is_some_and(|c| !partner.takes(c)) {
            continue;
        }
        let c = partner.capabilities;
        let mut methods = partner.methods.clone();
        methods.sort();
        for method in methods {
            payment_methods.push(proto::PaymentMethod {
                partner: name.to_owned(),
                method,
                currencies: partner
                    .currencies
                    .iter()
                    .map(|c| c.code().to_owned())
                    .collect(),
                capabilities: Some(proto::PartnerCapabilities {
                    partial_capture: c.partial_capture,
                    multiple_captures: c.multiple_captures,
                    partial_refund: c.partial_refund,
                    multiple_refunds: c.multiple_refunds,
                    partial_void: c.partial_void,
                    concurrent_refunds: c.concurrent_refunds,
                }),
                authorization_lifetime: prost_types::Duration::try_from(
                    partner.authorization_lifetime,
                )
                .ok(),
            });
        }
    }
    proto::ListPaymentMethodsResponse { payment_methods }
}

pub(crate) fn timestamp(time: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(time))
}

fn item_line(line: &ItemLine) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: line.sku_reference.clone(),
        name: line.name.clone(),
        quantity: line.quantity,
        unit_price: line.unit_price.minor(),
        tax_rate: line.tax_rate.to_string(),
        discount_amount: line.discount_amount.minor(),
        net_amount: line.net_amount.minor(),
        tax_amount: line.tax_amount.minor(),
    }
}

fn capture_mode_proto(mode: CaptureMode) -> proto::CaptureMode {
    match mode {
        CaptureMode::Automatic => proto::CaptureMode::Automatic,
        CaptureMode::Manual => proto::CaptureMode::Manual,
    }
}

pub fn session(view: &SessionView) -> proto::Session {
    let s = &view.session;
    let status = match view.status {
        SessionStatus::Open => proto::SessionStatus::Open,
        SessionStatus::Processing => proto::SessionStatus::Processing,
        SessionStatus::Submitted => proto::SessionStatus::Submitted,
        SessionStatus::Expired => proto::SessionStatus::Expired,
        SessionStatus::Cancelled => proto::SessionStatus::Cancelled,
    };
    proto::Session {
        id: s.id.to_string(),
        order_reference: s.order_reference.clone(),
        amount: s.amount.minor(),
        currency: s.currency.code().to_owned(),
        capture_mode: capture_mode_proto(s.capture_mode).into(),
        status: status.into(),
        items: s.items.iter().map(item_line).collect(),
        webhook: s.webhook.as_ref().map(|w| proto::Webhook {
            url: w.url.clone(),
            headers: w
                .headers
                .keys()
                .map(|name| (name.clone(), "<redacted>".to_owned()))
                .collect(),
        }),
        metadata: s.metadata.clone(),
        created_at: timestamp(s.created_at),
        updated_at: timestamp(s.updated_at),
        expires_at: timestamp(s.expires_at),
        payment_id: s.payment_id.map(|id| id.to_string()).unwrap_or_default(),
        cancellation_reason: s.cancellation_reason.clone(),
    }
}

fn operation_kind(kind: OperationKind) -> proto::OperationKind {
    match kind {
        OperationKind::Authorization => proto::OperationKind::Authorization,
        OperationKind::Capture => proto::OperationKind::Capture,
        OperationKind::Refund => proto::OperationKind::Refund,
        OperationKind::Void => proto::OperationKind::Void,
    }
}

fn operation_status(status: OperationStatus) -> proto::OperationStatus {
    match status {
        OperationStatus::Success => proto::OperationStatus::Success,
        OperationStatus::Pending => proto::OperationStatus::Pending,
        OperationStatus::Failure => proto::OperationStatus::Failure,
        OperationStatus::Conflict => proto::OperationStatus::Conflict,
        OperationStatus::Uncertain => proto::OperationStatus::Uncertain,
    }
}

fn transaction_status(status: TransactionStatus) -> proto::OperationStatus {
    match status {
        TransactionStatus::Success => proto::OperationStatus::Success,
        TransactionStatus::Pending => proto::OperationStatus::Pending,
        TransactionStatus::Failure => proto::OperationStatus::Failure,
        TransactionStatus::Uncertain => proto::OperationStatus::Uncertain,
    }
}

fn partner_transaction(payment: &Payment, tx: &PartnerTransaction) -> proto::PartnerTransaction {
    let leg = payment.legs.get(tx.leg);
    proto::PartnerTransaction {
        id: tx.id.to_string(),
        partner: leg.map(|l| l.partner.clone()).unwrap_or_default(),
        method: leg.map(|l| l.method.clone()).unwrap_or_default(),
        amount: tx.amount.minor(),
        status: transaction_status(tx.status).into(),
        partner_reference: tx.partner_reference.clone().unwrap_or_default(),
        partner_status: tx.partner_status.clone(),
        partner_status_description: tx.partner_status_description.clone(),
        created_at: timestamp(tx.created_at),
        updated_at: timestamp(tx.updated_at),
    }
}

pub fn operation_proto(payment: &Payment, op: &Operation) -> proto::Operation {
    proto::Operation {
        id: op.id.to_string(),
        payment_id: payment.id.to_string(),
        kind: operation_kind(op.kind).into(),
        amount: op.amount.minor(),
        status: operation_status(op.status).into(),
        merchant_reference: op.merchant_reference.clone(),
        triggered_by: match op.triggered_by {
            TriggeredBy::Merchant => proto::TriggeredBy::Merchant,
            TriggeredBy::System => proto::TriggeredBy::System,
        }
        .into(),
        partner_transactions: op
            .transactions
            .iter()
            .map(|tx| partner_transaction(payment, tx))
            .collect(),
        requires_review: op.requires_review,
        created_at: timestamp(op.created_at),
        updated_at: timestamp(op.updated_at),
        reason: op.reason.clone(),
        items: op.items.iter().map(item_line).collect(),
        history: op
            .history
            .iter()
            .map(|entry| proto::OperationHistoryEntry {
                at: timestamp(entry.at),
                note: entry.note.clone(),
            })
            .collect(),
    }
}

fn amounts(a: &Amounts) -> proto::Amounts {
    proto::Amounts {
        total_authorized: a.authorized.minor(),
        total_captured: a.captured.minor(),
        total_refunded: a.refunded.minor(),
        total_voided: a.voided.minor(),
        available_to_capture: a.available_to_capture().minor(),
        available_to_refund: a.available_to_refund().minor(),
        available_to_void: a.available_to_void().minor(),
        authorize_pending: a.authorize_pending.minor(),
        capture_pending: a.capture_pending.minor(),
        refund_pending: a.refund_pending.minor(),
        void_pending: a.void_pending.minor(),
    }
}

fn coverage(c: Coverage) -> i32 {
    match c {
        Coverage::Not => proto::Coverage::Not,
        Coverage::Partially => proto::Coverage::Partially,
        Coverage::Totally => proto::Coverage::Totally,
    }
    .into()
}

/// A payment as the view shows it: the header's fixed part, the snapshot's
/// amounts and state, and the operations the view carries.
pub fn payment(view: &PaymentView) -> proto::Payment {
    let payment = &view.header;
    let totals = view.snapshot.totals;
    let overview = view.snapshot.overview();
    let state = match view.snapshot.state() {
        PaymentState::Authorizing => proto::PaymentState::Authorizing,
        PaymentState::Failed => proto::PaymentState::Failed,
        PaymentState::PartiallyRefunded => proto::PaymentState::PartiallyRefunded,
        PaymentState::Refunded => proto::PaymentState::Refunded,
        PaymentState::PartiallyCaptured => proto::PaymentState::PartiallyCaptured,
        PaymentState::Captured => proto::PaymentState::Captured,
        PaymentState::Voided => proto::PaymentState::Voided,
        PaymentState::Authorized => proto::PaymentState::Authorized,
    };
    let of_kind = |kind| {
        view.operations
            .iter()
            .filter(|op| op.kind == kind)
            .map(|op| operation_proto(payment, op))
            .collect()
    };
    proto::Payment {
        id: payment.id.to_string(),
        session_id: payment.session_id.to_string(),
        order_reference: payment.order_reference.clone(),
        amount: payment.amount.minor(),
        currency: payment.currency.code().to_owned(),
        capture_mode: capture_mode_proto(payment.capture_mode).into(),
        state: state.into(),
        split: payment
            .legs
            .iter()
            .map(|leg| proto::PaymentLeg {
                partner: leg.partner.clone(),
                method: leg.method.clone(),
                amount: leg.amount.minor(),
            })
            .collect(),
        authorization: view
            .operations
            .iter()
            .find(|op| op.kind == OperationKind::Authorization)
            .map(|op| operation_proto(payment, op)),
        captures: of_kind(OperationKind::Capture),
        refunds: of_kind(OperationKind::Refund),
        voids: of_kind(OperationKind::Void),
        amounts: Some(amounts(&totals)),
        overview: Some(proto::Overview {
            consumed: coverage(overview.consumed),
            captured: coverage(overview.captured),
            voided: coverage(overview.voided),
            refunded: coverage(overview.refunded),
        }),
        allowed_operations: view
            .snapshot
            .allowed_operations()
            .into_iter()
            .map(|kind| operation_kind(kind).into())
            .collect(),
        created_at: timestamp(payment.created_at),
        updated_at: timestamp(view.snapshot.updated_at),
    }
}

pub fn operation_result(result: &OperationResult) -> proto::OperationResult {
    proto::OperationResult {
        operation: Some(operation_proto(&result.payment.header, &result.operation)),
        payment: Some(payment(&result.payment)),
    }
}

pub fn list_operations(request: proto::ListOperationsRequest) -> Result<ListOperations, Status> {
    let mut v = Violations::default();
    let status = match proto::OperationStatus::try_from(request.status) {
        Ok(proto::OperationStatus::Unspecified) => None,
        Ok(status) => [
            OperationStatus::Success,
            OperationStatus::Pending,
            OperationStatus::Failure,
            OperationStatus::Conflict,
            OperationStatus::Uncertain,
        ]
        .into_iter()
        .find(|s| operation_status(*s) == status),
        Err(_) => {
            v.add("status", "unknown operation status");
            None
        }
    };
    let kind = match proto::OperationKind::try_from(request.kind) {
        Ok(proto::OperationKind::Unspecified) => None,
        Ok(kind) => [
            OperationKind::Authorization,
            OperationKind::Capture,
            OperationKind::Refund,
            OperationKind::Void,
        ]
        .into_iter()
        .find(|k| operation_kind(*k) == kind),
        Err(_) => {
            v.add("kind", "unknown operation kind");
            None
        }
    };
    let mut optional_text = |field: &str, value: String| {
        (!value.is_empty()).then(|| {
            v.text(field, &value, false);
            value
        })
    };
    let merchant_reference = optional_text("merchant_reference", request.merchant_reference);
    let partner_reference = optional_text("partner_reference", request.partner_reference);
    let merchant = optional_text("merchant", request.merchant);
    let created_after = v.instant("created_after", request.created_after);
    let created_before = v.instant("created_before", request.created_before);
    let page_size = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let page_token = v.page_token(request.page_token);
    v.finish(|| ListOperations {
        filter: OperationFilter {
            status,
            kind,
            requires_review: request.requires_review,
            created_after,
            created_before,
            merchant_reference,
            partner_reference,
            merchant,
        },
        page_size,
        page_token,
    })
}

pub fn list_sessions(request: proto::ListSessionsRequest) -> Result<ListSessions, Status> {
    let mut v = Violations::default();
    let order_reference = (!request.order_reference.is_empty()).then(|| {
        v.text("order_reference", &request.order_reference, false);
        request.order_reference.clone()
    });
    let status = match proto::SessionStatus::try_from(request.status) {
        Ok(proto::SessionStatus::Unspecified) => None,
        Ok(proto::SessionStatus::Open) => Some(SessionStatus::Open),
        Ok(proto::SessionStatus::Processing) => Some(SessionStatus::Processing),
        Ok(proto::SessionStatus::Submitted) => Some(SessionStatus::Submitted),
        Ok(proto::SessionStatus::Expired) => Some(SessionStatus::Expired),
        Ok(proto::SessionStatus::Cancelled) => Some(SessionStatus::Cancelled),
        Err(_) => {
            v.add("status", "unknown session status");
            None
        }
    };
    let created_after = v.instant("created_after", request.created_after);
    let created_before = v.instant("created_before", request.created_before);
    let page_size = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let page_token = v.page_token(request.page_token);
    v.finish(|| ListSessions {
        filter: SessionFilter {
            order_reference,
            status,
            created_after,
            created_before,
        },
        page_size,
        page_token,
    })
}

pub fn operation_page(page: &OperationPage) -> proto::ListOperationsResponse {
    proto::ListOperationsResponse {
        operations: page
            .operations
            .iter()
            .map(|(payment, operation)| operation_proto(payment, operation))
            .collect(),
        next_page_token: page.next_page_token.clone().unwrap_or_default(),
    }
}

pub fn list_payments(request: proto::ListPaymentsRequest) -> Result<ListPayments, Status> {
    let mut v = Violations::default();
    if !request.order_reference.is_empty() {
        v.text("order_reference", &request.order_reference, false);
    }
    let state = match proto::PaymentState::try_from(request.state) {
        Ok(proto::PaymentState::Unspecified) => None,
        Ok(state) => Some(payment_state(state)),
        Err(_) => {
            v.add("state", "unknown payment state");
            None
        }
    };
    let created_after = v.instant("created_after", request.created_after);
    let created_before = v.instant("created_before", request.created_before);
    let page_size = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let newest_first = match proto::ListOrder::try_from(request.order) {
        Ok(proto::ListOrder::OldestFirst) => false,
        Ok(_) => true,
        Err(_) => {
            v.add("order", "unknown order");
            true
        }
    };
    let page_token = v.page_token(request.page_token);
    v.finish(|| ListPayments {
        filter: PaymentFilter {
            order_reference: Some(request.order_reference).filter(|r| !r.is_empty()),
            state,
            created_after,
            created_before,
            newest_first,
        },
        page_size,
        page_token,
    })
}

fn payment_state(state: proto::PaymentState) -> PaymentState {
    match state {
        proto::PaymentState::Authorizing | proto::PaymentState::Unspecified => {
            PaymentState::Authorizing
        }
        proto::PaymentState::Failed => PaymentState::Failed,
        proto::PaymentState::PartiallyRefunded => PaymentState::PartiallyRefunded,
        proto::PaymentState::Refunded => PaymentState::Refunded,
        proto::PaymentState::PartiallyCaptured => PaymentState::PartiallyCaptured,
        proto::PaymentState::Captured => PaymentState::Captured,
        proto::PaymentState::Voided => PaymentState::Voided,
        proto::PaymentState::Authorized => PaymentState::Authorized,
    }
}

pub fn payment_page(page: &PaymentPage) -> proto::ListPaymentsResponse {
    proto::ListPaymentsResponse {
        payments: page.payments.iter().map(payment).collect(),
        next_page_token: page.next_page_token.clone().unwrap_or_default(),
    }
}

/// `WaitOperation`: the id, and the timeout (default 30 s, capped at 60 s).
pub fn wait(request: &proto::WaitOperationRequest) -> Result<(Uuid, Duration), Status> {
    let mut v = Violations::default();
    let id = v.id("operation_id", &request.operation_id);
    let timeout = match request.timeout.map(Duration::try_from) {
        None => Duration::from_secs(30),
        Some(Ok(timeout)) => timeout.min(MAX_WAIT),
        Some(Err(_)) => {
            v.add("timeout", "must be a non-negative duration");
            Duration::ZERO
        }
    };
    match id {
        Some(id) => v.finish(|| (id, timeout)),
        None => Err(v.into_status()),
    }
}

/// Operator outcomes: one final status per open partner transaction.
pub type Outcomes = Vec<(Uuid, TransactionStatus)>;

pub fn resolve_operation(
    request: proto::ResolveOperationRequest,
) -> Result<(Uuid, Outcomes, String), Status> {
    let mut v = Violations::default();
    let id = v.id("operation_id", &request.operation_id);
    v.text("reason", &request.reason, true);
    if request.outcomes.is_empty() {
        v.add("outcomes", "one outcome per open partner transaction");
    }
    let mut outcomes = Vec::new();
    for (index, outcome) in request.outcomes.iter().enumerate() {
        let field = format!("outcomes[{index}].partner_transaction_id");
        let tx = v.id(&field, &outcome.partner_transaction_id);
        let status = match proto::OperationStatus::try_from(outcome.status) {
            Ok(proto::OperationStatus::Success) => Some(TransactionStatus::Success),
            Ok(proto::OperationStatus::Failure) => Some(TransactionStatus::Failure),
            _ => {
                v.add(format!("outcomes[{index}].status"), "SUCCESS or FAILURE");
                None
            }
        };
        if let (Some(tx), Some(status)) = (tx, status) {
            outcomes.push((tx, status));
        }
    }
    match id {
        Some(id) => v.finish(|| (id, outcomes, request.reason)),
        None => Err(v.into_status()),
    }
}

pub fn partner_event(
    request: proto::NotifyPartnerEventRequest,
    partners: &Partners,
) -> Result<PartnerEvent, Status> {
    let mut v = Violations::default();
    if partners.get(&request.partner).is_none() {
        v.add("partner", "not a configured partner");
    }
    v.text("event_id", &request.event_id, true);
    v.text("idempotency_key", &request.idempotency_key, true);
    let succeeded = match proto::PartnerEventOutcome::try_from(request.outcome) {
        Ok(proto::PartnerEventOutcome::Succeeded) => true,
        Ok(proto::PartnerEventOutcome::Declined) => false,
        _ => {
            v.add("outcome", "SUCCEEDED or DECLINED");
            false
        }
    };
    v.text("partner_reference", &request.partner_reference, false);
    v.text("partner_status", &request.partner_status, false);
    v.finish(|| PartnerEvent {
        partner: request.partner,
        event_id: request.event_id,
        idempotency_key: request.idempotency_key,
        succeeded,
        reference: request.partner_reference,
        partner_status: request.partner_status,
        description: request.description,
    })
}

pub fn notify_response(result: EventResult) -> proto::NotifyPartnerEventResponse {
    let result = match result {
        EventResult::Applied => proto::NotifyResult::Applied,
        EventResult::Duplicate => proto::NotifyResult::Duplicate,
        EventResult::IgnoredFinal => proto::NotifyResult::IgnoredFinal,
        EventResult::UnknownTransaction => proto::NotifyResult::UnknownTransaction,
    };
    proto::NotifyPartnerEventResponse {
        result: result.into(),
    }
}
