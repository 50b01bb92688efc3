//! A sandbox scenario: what the payment token asks the sandbox to do (see
//! the table in the parent module).

use std::{str::FromStr, time::Duration};

use crate::{clock::parse_duration, domain::operation::OperationKind};

/// What the sandbox does with one kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    #[default]
    Success,
    Decline,
    Pending,
    PendingDecline,
    Timeout,
    Lost,
    Error,
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "success" => Outcome::Success,
            "decline" => Outcome::Decline,
            "pending" => Outcome::Pending,
            "pending_decline" => Outcome::PendingDecline,
            "timeout" => Outcome::Timeout,
            "lost" => Outcome::Lost,
            "error" => Outcome::Error,
            other => return Err(format!("unknown sandbox outcome {other:?}")),
        })
    }
}

/// A parsed payment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    outcomes: [Outcome; 4],
    pub(super) latency: Duration,
    pub(super) lookup_latency: Duration,
    pub(super) pending_lookups: u32,
    pub(super) lookups_fail: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            outcomes: [Outcome::Success; 4],
            latency: Duration::ZERO,
            lookup_latency: Duration::ZERO,
            pending_lookups: 1,
            lookups_fail: false,
        }
    }
}

fn slot(kind: OperationKind) -> usize {
    match kind {
        OperationKind::Authorization => 0,
        OperationKind::Capture => 1,
        OperationKind::Refund => 2,
        OperationKind::Void => 3,
    }
}

impl Scenario {
    /// Parses a token. Without `=` it is an ordinary token; with `=` every
    /// pair must parse. Errors name the pair's key, never the whole token.
    pub fn parse(token: &str) -> Result<Scenario, String> {
        let mut scenario = Scenario::default();
        if !token.contains('=') {
            return Ok(scenario);
        }
        for pair in token.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| "sandbox scenario pairs must look like key=value".to_owned())?;
            match key.trim() {
                "authorize" => scenario.outcomes[0] = value.trim().parse()?,
                "capture" => scenario.outcomes[1] = value.trim().parse()?,
                "refund" => scenario.outcomes[2] = value.trim().parse()?,
                "void" => scenario.outcomes[3] = value.trim().parse()?,
                "latency" => scenario.latency = latency(value.trim())?,
                "lookup_latency" => scenario.lookup_latency = latency(value.trim())?,
                "lookup" => match value.trim() {
                    "error" => scenario.lookups_fail = true,
                    "success" => scenario.lookups_fail = false,
                    _ => return Err("lookup must be error or success".to_owned()),
                },
                // Names the instrument (a card): the same scenario on two
                // cards is two instruments, which two payers may hold.
                "card" => {}
                "pending_lookups" => {
                    scenario.pending_lookups = value
                        .trim()
                        .parse()
                        .map_err(|_| "pending_lookups must be a whole number".to_owned())?;
                }
                other => return Err(format!("unknown sandbox scenario key {other:?}")),
            }
        }
        Ok(scenario)
    }

    pub(super) fn outcome(&self, kind: OperationKind) -> Outcome {
        self.outcomes[slot(kind)]
    }
}

/// A latency: the settings' duration grammar, at most 60s.
fn latency(text: &str) -> Result<Duration, String> {
    let latency =
        parse_duration(text).map_err(|_| format!("latency {text:?} must look like 20ms or 2s"))?;
    if latency > Duration::from_secs(60) {
        return Err("latency must be at most 60s".into());
    }
    Ok(latency)
}
