//! Where the time and chance come from. The domain never reads a clock or
//! draws a number: the use cases ask a [`Clock`] and a [`Chance`] and pass
//! what they got in. Tests drive a [`ManualClock`]; a simulation injects a
//! seeded [`Chance`] so that one seed replays exactly.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// Random draws: jitter of retry times, and ids that only need to be
/// unique (lease holders).
pub trait Chance: Send + Sync + std::fmt::Debug {
    /// A number in `[0, 1)`.
    fn fraction(&self) -> f64;
    /// A 128-bit number for an id.
    fn bits(&self) -> u128;
}

/// The process's own random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadChance;

impl Chance for ThreadChance {
    fn fraction(&self) -> f64 {
        rand::random_range(0.0..1.0)
    }

    fn bits(&self) -> u128 {
        rand::random()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// The current manual time (what [`Clock::now`] answers).
    pub fn now_time(&self) -> SystemTime {
        Clock::now(self)
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The one duration grammar of settings and scenarios: a whole number
/// and a unit, `500ms`, `10s`, `30m`, `24h`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?}: expected a number with ms, s, m, h or d");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(invalid)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86400),
        _ => Err(invalid()),
    }
}
