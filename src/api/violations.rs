//! The one helper every request parser uses: field violations are collected
//! (not just the first) and reported in one INVALID_ARGUMENT with a
//! BadRequest detail, before anything is touched. The field parsers that
//! several services share live here too.

use std::str::FromStr;

use rust_decimal::Decimal;
use tonic::Status;
use tonic_types::FieldViolation;
use uuid::Uuid;

use super::{error::invalid_argument, proto};
use crate::{
    domain::{
        items::{self, ItemLine, ItemLineError, ItemLineInput},
        money::{Amount, Currency},
        priority::{Pattern, PriorityRule},
    },
    partners::Partners,
    payments::{IdempotencyKey, page_token},
};

const MAX_TEXT: usize = 255;
const MAX_ITEMS: usize = 1000;
const MAX_RULES: usize = 20;

/// Collects field violations while parsing a request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Status> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.into_status())
        }
    }

    /// For when a required value is missing (a violation was recorded).
    pub fn into_status(self) -> Status {
        invalid_argument(self.0)
    }

    pub fn idempotency_key(&mut self, key: &str) -> Option<IdempotencyKey> {
        match IdempotencyKey::parse(key) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.add("idempotency_key", problem);
                None
            }
        }
    }

    pub fn text(&mut self, field: &str, value: &str, required: bool) {
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
    pub fn instant(
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

    /// A page token as sent (read by the listing), bounded; `None` when
    /// empty.
    pub fn page_token(&mut self, token: String) -> Option<String> {
        if token.len() > 1024 {
            self.add("page_token", "not a page token of this listing");
        }
        (!token.is_empty()).then_some(token)
    }

    /// A page size: 0 is the default, more than the maximum is the maximum
    /// (AIP-158), a negative one is refused.
    pub fn page_size(&mut self, requested: i32, default: usize, max: usize) -> usize {
        match usize::try_from(requested) {
            Ok(0) => default,
            Ok(size) => size.min(max),
            Err(_) => {
                self.add("page_size", "must not be negative");
                default
            }
        }
    }

    /// The cursor of `token` for `filters`; a violation when it was issued
    /// for other filters (or is no token).
    pub fn cursor(&mut self, filters: &str, token: &str) -> Option<String> {
        if token.is_empty() {
            return None;
        }
        let cursor = page_token::cursor(filters, token);
        if cursor.is_none() {
            self.add(
                "page_token",
                "not a page token of this listing (filters must stay the same)",
            );
        }
        cursor
    }

    /// What `parsed` holds, or a violation of `field` saying `description`.
    pub fn parsed<T, E>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
        description: &str,
    ) -> Option<T> {
        parsed.map_err(|_| self.add(field, description)).ok()
    }

    pub fn id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        self.parsed(field, Uuid::try_parse(value), "must be a UUID")
    }

    pub fn positive_amount(&mut self, field: &str, minor: i64) -> Option<Amount> {
        match Amount::from_minor(minor) {
            Ok(amount) if !amount.is_zero() => Some(amount),
            _ => {
                self.add(field, "must be a positive amount in minor units");
                None
            }
        }
    }

    pub fn amount(&mut self, field: &str, minor: i64) -> Option<Amount> {
        self.parsed(field, Amount::from_minor(minor), "must not be negative")
    }

    pub fn currency(&mut self, field: &str, code: &str) -> Option<Currency> {
        let description = "must be an ISO 4217 alphabetic code such as EUR";
        self.parsed(field, Currency::parse(code), description)
    }
}

// ---- field parsers several services share ----

impl Violations {
    /// Item lines, which must add up (net plus tax) to `amount` when given.
    /// `amount` is `None` when it is invalid or absent (`absent` names why
    /// lines cannot be checked against it).
    pub fn items(
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

    pub fn priority(
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
