//! Who is calling: API keys (kept as their SHA-256), the role each grants,
//! and the interceptor that turns a bearer key into a request extension.

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The merchant a request was authenticated as (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant(pub String);

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Sessions and payments of one merchant.
    Merchant(String),
    /// `AdminService`, across merchants.
    Admin,
    /// `PartnerEventService`, for these partners (`None`: every partner).
    PartnerNotifier(Option<Vec<String>>),
}

/// The partners a partner-notifier key speaks for, `None`: all (a request
/// extension of `PartnerEventService`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier(pub Option<Vec<String>>);

/// A request authenticated with an admin key (a request extension of
/// services open to merchants and admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator;

/// The role a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    Merchant,
    Admin,
    /// A merchant (its own data) or an admin (everyone's).
    MerchantOrAdmin,
    PartnerNotifier,
}

/// API keys by their SHA-256 (hex); the key material itself is never kept.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    roles_by_hash: HashMap<String, Role>,
}

impl ApiKeys {
    /// From `(sha256 hex of the key, role)` pairs.
    pub fn from_hashes(pairs: impl IntoIterator<Item = (String, Role)>) -> Self {
        ApiKeys {
            roles_by_hash: pairs
                .into_iter()
                .map(|(hash, role)| (hash.to_ascii_lowercase(), role))
                .collect(),
        }
    }

    pub fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn role(&self, key: &str) -> Option<&Role> {
        self.roles_by_hash.get(&Self::hash(key))
    }

    /// The merchant an `authorization` header's key belongs to, if any.
    pub fn merchant_of(&self, authorization: &str) -> Option<&str> {
        let key = authorization.strip_prefix("Bearer ")?;
        match self.role(key.trim())? {
            Role::Merchant(merchant) => Some(merchant),
            _ => None,
        }
    }

    /// Every merchant some key belongs to.
    pub fn merchants(&self) -> impl Iterator<Item = &str> {
        self.roles_by_hash.values().filter_map(|role| match role {
            Role::Merchant(merchant) => Some(merchant.as_str()),
            _ => None,
        })
    }

    /// A tonic interceptor for a service that needs `required`:
    /// `authorization: Bearer <key>`; an unknown key is UNAUTHENTICATED, a
    /// known key of another role PERMISSION_DENIED.
    pub fn interceptor(
        self: Arc<Self>,
        required: Required,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |mut request: Request<()>| {
            let role = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .and_then(|key| self.role(key.trim()))
                .ok_or_else(|| Status::unauthenticated("missing or invalid API key"))?;
            match (required, role) {
                (Required::Merchant | Required::MerchantOrAdmin, Role::Merchant(merchant)) => {
                    tracing::Span::current().record("merchant", merchant.as_str());
                    let merchant = Merchant(merchant.clone());
                    request.extensions_mut().insert(merchant);
                }
                (Required::MerchantOrAdmin, Role::Admin) => {
                    request.extensions_mut().insert(Operator);
                }
                (Required::Admin, Role::Admin) => {}
                (Required::PartnerNotifier, Role::PartnerNotifier(partners)) => {
                    request.extensions_mut().insert(Notifier(partners.clone()));
                }
                _ => {
                    return Err(Status::permission_denied(
                        "this API key may not call this service",
                    ));
                }
            }
            Ok(request)
        }
    }
}

/// The merchant a request was authenticated as.
pub fn merchant<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Merchant>()
        .map(|m| m.0.clone())
        // Only reachable if a service were mounted without the interceptor.
        .ok_or_else(|| Status::unauthenticated("missing or invalid API key"))
}
