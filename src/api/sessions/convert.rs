//! Session requests in (checked field by field), payment methods out.

use std::{collections::BTreeMap, time::Duration};

use tonic::Status;

use super::super::{proto, violations::Violations};
use crate::{
    domain::{
        money::{Amount, Currency},
        payment::{Leg, PaymentToken},
        session::{CaptureMode, HeaderValue, SessionChange, SessionStatus, Webhook},
    },
    partners::{ConfiguredPartner, InstrumentUse, Partners},
    payments::{
        CancelSession, CreateSession, DEFAULT_PAGE_SIZE, Idempotent, ListSessions, MAX_PAGE_SIZE,
        Parent, SessionFilter, SubmitSession, UpdateSession,
    },
    webhooks::{Destinations, destinations},
};

const MAX_LEGS: usize = 10;
const MAX_METADATA: usize = 50;
const MAX_TOKEN: usize = 2048;
const MAX_URL: usize = 2048;
const MAX_HEADERS: usize = 10;
const MAX_HEADER_BYTES: usize = 4096;
const MAX_EXPIRY: Duration = Duration::from_secs(24 * 3600);

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
    let mut parents = Vec::with_capacity(request.split.len());
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
        let parent = parent(&mut v, &leg, index, partner);
        // One source of the instrument: a token, a parent payment or a
        // hosted checkout. The partner checks a token's content later.
        let sources = [
            !leg.payment_token.is_empty(),
            !leg.parent_payment_id.is_empty(),
            !leg.partner_checkout_id.is_empty(),
        ];
        if sources.iter().filter(|given| **given).count() > 1 {
            v.add(
                at("payment_token"),
                "give one of payment_token, parent_payment_id and partner_checkout_id",
            );
        } else if !leg.partner_checkout_id.is_empty() {
            if leg.partner_checkout_id.len() > MAX_TOKEN {
                v.add(at("partner_checkout_id"), "at most 2048 characters");
            }
        } else if leg.parent_payment_id.is_empty()
            && (leg.payment_token.is_empty() || leg.payment_token.len() > MAX_TOKEN)
        {
            v.add(at("payment_token"), "required, at most 2048 characters");
        } else if PaymentToken::looks_hosted(&leg.payment_token) {
            v.add(
                at("payment_token"),
                "a hosted checkout is named by partner_checkout_id",
            );
        }
        parents.push(parent);
        let token = if leg.partner_checkout_id.is_empty() {
            PaymentToken::new(leg.payment_token)
        } else {
            PaymentToken::hosted_checkout(&leg.partner_checkout_id)
        };
        if let Some(amount) = amount {
            legs.push(Leg {
                partner: leg.partner,
                method: leg.method,
                amount,
                token,
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
    if parents.iter().all(Option::is_none) {
        parents.clear();
    }
    v.finish(|| Idempotent {
        key,
        command: SubmitSession {
            session_id,
            legs,
            parents,
        },
    })
}

/// The earlier payment a leg reuses the instrument of: a well-formed id,
/// at a partner whose instruments outlive one payment.
fn parent(
    v: &mut Violations,
    leg: &proto::SplitLeg,
    index: usize,
    partner: Option<&ConfiguredPartner>,
) -> Option<Parent> {
    let at = |name: &str| format!("split[{index}].{name}");
    if leg.parent_payment_id.is_empty() {
        if !leg.parent_partner_transaction_id.is_empty() {
            v.add(
                at("parent_partner_transaction_id"),
                "goes with parent_payment_id",
            );
        }
        return None;
    }
    let payment = v.id(&at("parent_payment_id"), &leg.parent_payment_id);
    let transaction = (!leg.parent_partner_transaction_id.is_empty())
        .then(|| {
            v.id(
                &at("parent_partner_transaction_id"),
                &leg.parent_partner_transaction_id,
            )
        })
        .flatten();
    if partner.is_some_and(|p| p.adapter.instrument_use() == InstrumentUse::SingleUse) {
        v.add(
            at("parent_payment_id"),
            format!(
                "{} has no merchant-initiated payments: its instrument (an order) backs \
                 one payment; the shopper checks out again",
                leg.partner
            ),
        );
        return None;
    }
    Some(Parent {
        payment: payment?,
        transaction,
    })
}

/// The fields UpdateSession may change, as an update mask names them.
const UPDATABLE: [&str; 4] = ["amount", "items", "webhook", "metadata"];

/// AIP-134: the mask's fields take the request's values (`*`: all of them);
/// with no mask, the fields given a non-empty value.
pub fn update_session(
    request: proto::UpdateSessionRequest,
    destinations: &Destinations,
) -> Result<Idempotent<UpdateSession>, Status> {
    let mut v = Violations::default();
    let session_id = v.id("session_id", &request.session_id);
    let key = v.idempotency_key(&request.idempotency_key);
    let paths = match request.update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths,
        _ => UPDATABLE
            .iter()
            .zip([
                request.amount != 0,
                !request.items.is_empty(),
                request.webhook.is_some(),
                !request.metadata.is_empty(),
            ])
            .filter(|(_, given)| *given)
            .map(|(field, _)| (*field).to_owned())
            .collect(),
    };
    let mut masked = std::collections::BTreeSet::new();
    for path in &paths {
        match path.as_str() {
            "*" => masked.extend(UPDATABLE),
            field => match UPDATABLE.iter().find(|f| **f == field) {
                Some(field) => {
                    masked.insert(*field);
                }
                None => v.add(
                    "update_mask",
                    format!("{path:?} cannot change; amount, items, webhook and metadata can"),
                ),
            },
        }
    }
    if paths.is_empty() {
        v.add("update_mask", "names nothing to change");
    }
    let amount = masked
        .contains("amount")
        .then(|| v.positive_amount("amount", request.amount))
        .flatten();
    // Without a new amount the lines are checked against the session's.
    let items = masked
        .contains("items")
        .then(|| v.items("items", request.items, Ok(amount)));
    let webhook = masked
        .contains("webhook")
        .then(|| webhook(&mut v, request.webhook, destinations));
    let metadata = masked
        .contains("metadata")
        .then(|| metadata(&mut v, request.metadata));
    let (Some(session_id), Some(key)) = (session_id, key) else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: UpdateSession {
            session_id,
            change: SessionChange {
                amount,
                items,
                webhook,
                metadata,
            },
        },
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

pub fn list_sessions(request: proto::ListSessionsRequest) -> Result<ListSessions, Status> {
    let mut v = Violations::default();
    let order_reference = (!request.order_reference.is_empty()).then(|| {
        v.text("order_reference", &request.order_reference, false);
        request.order_reference.clone()
    });
    let status = v
        .parsed(
            "status",
            proto::SessionStatus::try_from(request.status),
            "unknown session status",
        )
        .and_then(|status| match status {
            proto::SessionStatus::Unspecified => None,
            proto::SessionStatus::Open => Some(SessionStatus::Open),
            proto::SessionStatus::Processing => Some(SessionStatus::Processing),
            proto::SessionStatus::Submitted => Some(SessionStatus::Submitted),
            proto::SessionStatus::Expired => Some(SessionStatus::Expired),
            proto::SessionStatus::Cancelled => Some(SessionStatus::Cancelled),
        });
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
        // Not offered to shoppers while its circuit is open.
        if !partners.health().offered(name) {
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

pub fn start_partner_checkout(
    request: &proto::StartPartnerCheckoutRequest,
) -> Result<(uuid::Uuid, String), Status> {
    let mut v = Violations::default();
    let session_id = v.id("session_id", &request.session_id);
    if request.partner.is_empty() {
        v.add("partner", "required");
    }
    let Some(session_id) = session_id else {
        return Err(v.into_status());
    };
    v.finish(|| (session_id, request.partner.clone()))
}
