//! The partner port: what the orchestrator needs from a payment partner, and
//! how a partner's failures are classified.
//!
//! - [`PartnerError::Declined`]: a definitive no. Nothing moved.
//! - [`PartnerError::Unavailable`]: nothing happened; safe to retry.
//! - [`PartnerError::Unknown`]: it may have happened (timeout, reset, 5xx
//!   after send). The transaction becomes UNCERTAIN and keeps its reservation.
//!
//! [`Partners`] holds the configured partners and applies each one's timeout
//! and the short retry of unavailable answers within that deadline.

pub mod grpc;
pub mod sandbox;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::domain::{
    capabilities::Capabilities,
    money::{Amount, Currency},
    operation::OperationKind,
    payment::PaymentToken,
};

/// One call to a partner. `idempotency_key` is derived from the operation and
/// the leg, so a re-send can never execute twice.
#[derive(Debug, Clone)]
pub struct PartnerRequest {
    pub kind: OperationKind,
    pub idempotency_key: String,
    pub amount: Amount,
    pub currency: Currency,
    pub method: String,
    /// The shopper's token (authorizations).
    pub token: PaymentToken,
    /// The partner's reference of the leg's authorization (captures, refunds
    /// and voids).
    pub authorization_reference: Option<String>,
}

/// A partner's accepted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerAnswer {
    /// `false` when the partner accepted the request but decides later.
    pub settled: bool,
    pub reference: String,
    pub partner_status: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerError {
    #[error("declined by the partner ({code})")]
    Declined { code: String, description: String },
    #[error("partner unavailable, nothing happened")]
    Unavailable { description: String },
    #[error("partner outcome unknown")]
    Unknown { description: String },
}

/// What a partner knows of a request, by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The partner never received it: safe to re-send with the same key.
    NotFound,
    Found(Result<PartnerAnswer, PartnerError>),
}

#[async_trait]
pub trait Partner: Send + Sync + std::fmt::Debug {
    /// Checks a token before anything is sent (e.g. the sandbox's scenario
    /// language). The message is shown to the caller: never echo the token.
    async fn check_token(&self, _token: &str) -> Result<(), String> {
        Ok(())
    }

    async fn authorize(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError>;
    async fn capture(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError>;
    async fn refund(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError>;
    async fn void(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError>;
    async fn lookup(&self, idempotency_key: &str) -> Result<Lookup, PartnerError>;
}

/// A configured partner: the adapter, the methods it takes and its deadline.
#[derive(Debug, Clone)]
pub struct ConfiguredPartner {
    pub adapter: Arc<dyn Partner>,
    pub methods: Vec<String>,
    pub timeout: Duration,
    /// What it supports; routing offers its legs only what they can take.
    pub capabilities: Capabilities,
}

/// Every configured partner by name.
#[derive(Debug, Clone, Default)]
pub struct Partners {
    by_name: BTreeMap<String, ConfiguredPartner>,
}

/// First pause between retries of an unavailable partner; doubles each time.
const RETRY_BASE: Duration = Duration::from_millis(20);
const MAX_ATTEMPTS: u32 = 4;

impl Partners {
    pub fn new(by_name: BTreeMap<String, ConfiguredPartner>) -> Self {
        Partners { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&ConfiguredPartner> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn supports(&self, partner: &str, method: &str) -> bool {
        self.get(partner)
            .is_some_and(|p| p.methods.iter().any(|m| m == method))
    }

    pub fn knows_method(&self, method: &str) -> bool {
        self.by_name
            .values()
            .any(|p| p.methods.iter().any(|m| m == method))
    }

    /// Asks a partner what it knows of a request, within its deadline.
    pub async fn lookup(
        &self,
        partner: &str,
        idempotency_key: &str,
    ) -> Result<Lookup, PartnerError> {
        let Some(configured) = self.get(partner) else {
            return Err(PartnerError::Unavailable {
                description: format!("partner {partner} is not configured"),
            });
        };
        tokio::time::timeout(
            configured.timeout,
            configured.adapter.lookup(idempotency_key),
        )
        .await
        .unwrap_or_else(|_| {
            Err(PartnerError::Unknown {
                description: "no answer to the status lookup in time".into(),
            })
        })
    }

    /// Sends one request within the partner's deadline. Unavailable answers
    /// are retried with exponential backoff while the deadline allows; a
    /// deadline that passes with a request on the wire is `Unknown`.
    pub async fn send(
        &self,
        partner: &str,
        request: &PartnerRequest,
    ) -> Result<PartnerAnswer, PartnerError> {
        let Some(configured) = self.get(partner) else {
            return Err(PartnerError::Unavailable {
                description: format!("partner {partner} is not configured"),
            });
        };
        let started = std::time::Instant::now();
        let result = self.send_within_deadline(configured, request).await;
        let outcome = match &result {
            Ok(answer) if answer.settled => "succeeded",
            Ok(_) => "pending",
            Err(PartnerError::Declined { .. }) => "declined",
            Err(PartnerError::Unavailable { .. }) => "unavailable",
            Err(PartnerError::Unknown { .. }) => "unknown",
        };
        metrics::histogram!(
            "partner_request_seconds",
            "partner" => partner.to_owned(),
            "kind" => request.kind.as_str(),
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    async fn send_within_deadline(
        &self,
        configured: &ConfiguredPartner,
        request: &PartnerRequest,
    ) -> Result<PartnerAnswer, PartnerError> {
        let deadline = tokio::time::Instant::now() + configured.timeout;
        let adapter = &configured.adapter;
        let mut attempt = 0;
        loop {
            let call = async {
                match request.kind {
                    OperationKind::Authorization => adapter.authorize(request).await,
                    OperationKind::Capture => adapter.capture(request).await,
                    OperationKind::Refund => adapter.refund(request).await,
                    OperationKind::Void => adapter.void(request).await,
                }
            };
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(PartnerError::Unknown {
                        description: "no answer within the partner's timeout".into(),
                    });
                }
            };
            attempt += 1;
            match result {
                Err(PartnerError::Unavailable { .. }) if attempt < MAX_ATTEMPTS => {
                    let pause = RETRY_BASE * 2u32.pow(attempt - 1);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return result;
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}
