//! Stateful simulations of the partner APIs the HTTP connectors speak,
//! served by `sandbox-partner --api walley|wepay` (see [`crate::walley`] and
//! [`crate::wepay`]). Each keeps its own ledger
//! of what it executed, so that tests can check that nothing ran twice, and
//! takes instructions on a `/_sim` path:
//!
//! | path | what |
//! |---|---|
//! | `POST /_sim/clock` `{"advance_seconds": n}` | moves the simulation's clock (expiries) |
//! | `POST /_sim/fail` `{"status": 503, "times": 2}` | the next API requests answer that status, executing nothing |
//! | `GET /_sim/ledger` | the executed actions and every API request received, with its raw body |
//!
//! Faults attached to an order (Walley) or a card (WePay) act on one kind of
//! call, a number of `times`:
//!
//! | effect | the simulator… |
//! |---|---|
//! | `decline` | refuses it (`422` Walley, `402` WePay) |
//! | `timeout` | executes it, then does not answer (the answer is lost) |
//! | `lost` | does not execute it and does not answer (the request is lost) |
//! | `alter` | executes it for one minor unit less than asked |
//! | `slow:<ms>` | executes and answers it that many milliseconds later (WePay) |
//! | `"503"`, any status | answers that status and executes nothing |

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use payment_orchestrator::domain::money::{Amount, Currency};

/// How long an answer that is "lost" is held back: longer than any
/// connector waits.
pub const HANG: Duration = Duration::from_secs(300);

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Decline,
    /// Executed; the answer never comes.
    Timeout,
    /// Not executed; no answer.
    Lost,
    /// This status, nothing executed.
    Status(u16),
    /// Executed for one minor unit less than asked (a partner that books
    /// another amount).
    Alter,
    /// Executed and answered this many milliseconds after it arrived (a
    /// slow partner, not a lost one).
    Slow(u64),
}

impl<'de> Deserialize<'de> for Effect {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "decline" => Effect::Decline,
            "timeout" => Effect::Timeout,
            "lost" => Effect::Lost,
            "alter" => Effect::Alter,
            slow if slow.starts_with("slow:") => Effect::Slow(
                slow["slow:".len()..]
                    .parse()
                    .map_err(|_| serde::de::Error::custom("slow:<milliseconds>"))?,
            ),
            status => Effect::Status(status.parse().map_err(|_| {
                serde::de::Error::custom("decline, timeout, lost, alter or an HTTP status")
            })?),
        })
    }
}

/// A fault on the calls named `on` (e.g. `capture`), `times` times.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub on: String,
    pub effect: Effect,
    #[serde(default = "once")]
    pub times: u32,
}

fn once() -> u32 {
    1
}

/// Takes the next fault for `call` off `faults`, if any.
pub fn take_fault(faults: &mut [Fault], call: &str) -> Option<Effect> {
    let fault = faults.iter_mut().find(|f| f.on == call && f.times > 0)?;
    fault.times -= 1;
    Some(fault.effect)
}

/// One API request as received.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The `X-Idempotency` header, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<String>,
    pub body: String,
}

/// Something the simulator executed: the ledger that must never show a
/// payment twice.
#[derive(Debug, Clone, Serialize)]
pub struct Executed {
    /// The order or checkout.
    pub on: String,
    /// `authorize`, `capture`, `refund`, `cancel`.
    pub kind: String,
    /// Decimal major units, as the request wrote them.
    pub amount: String,
    /// The request's reference (`actionReference`, `unique_id`), if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reference: String,
}

/// `GET /_sim/ledger`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    pub executed: Vec<Executed>,
    pub requests: Vec<Received>,
}

/// What every simulation shares: the clock, the injected failures and the
/// ledger.
#[derive(Debug, Default)]
pub struct Common {
    offset: Duration,
    failing: Option<(u16, u32)>,
    pub ledger: Ledger,
}

impl Common {
    /// The simulation's time.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset
    }

    /// A status the next request must answer instead (`/_sim/fail`).
    pub fn take_failure(&mut self) -> Option<u16> {
        let (status, times) = self.failing.as_mut()?;
        if *times == 0 {
            return None;
        }
        *times -= 1;
        Some(*status)
    }
}

/// Shared state behind a mutex never held across an await.
#[derive(Debug)]
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(Mutex::new(value)))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A handler that panicked leaves consistent data: each one changes
        // the state in one place.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a simulation exposes to the shared `/_sim` handlers.
pub trait Simulation: Send + 'static {
    fn common(&mut self) -> &mut Common;
}

#[derive(Debug, Deserialize)]
pub struct Advance {
    pub advance_seconds: u64,
}

#[derive(Debug, Deserialize)]
pub struct Failing {
    pub status: u16,
    pub times: u32,
}

pub async fn advance_clock<S: Simulation>(
    axum::extract::State(state): axum::extract::State<Shared<S>>,
    Json(advance): Json<Advance>,
) -> StatusCode {
    state.lock().common().offset += Duration::from_secs(advance.advance_seconds);
    StatusCode::NO_CONTENT
}

pub async fn fail_next<S: Simulation>(
    axum::extract::State(state): axum::extract::State<Shared<S>>,
    Json(failing): Json<Failing>,
) -> StatusCode {
    state.lock().common().failing = Some((failing.status, failing.times));
    StatusCode::NO_CONTENT
}

pub async fn ledger<S: Simulation>(
    axum::extract::State(state): axum::extract::State<Shared<S>>,
) -> Json<Ledger> {
    Json(state.lock().common().ledger.clone())
}

/// A JSON answer with a status.
pub fn answer<T: Serialize>(status: u16, body: &T) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// A major-unit amount in minor units, if it has no more decimals than the
/// currency has.
pub fn minor_units(amount: Decimal, currency: Currency) -> Option<Amount> {
    Amount::from_major(amount, currency).ok()
}

/// Minor units as decimal major units.
pub fn major_units(amount: Amount, currency: Currency) -> Decimal {
    amount.to_major(currency)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
