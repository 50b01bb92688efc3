//! A UTC calendar day, `YYYY-MM-DD`: what settlements are dated by.

use std::{fmt, str::FromStr, time::SystemTime};

use serde::{Deserialize, Serialize};

/// A UTC calendar day, counted from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Day(i64);

impl Day {
    pub fn of(time: SystemTime) -> Day {
        let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Day(seconds.div_euclid(86_400))
    }

    pub fn from_days(days: i64) -> Day {
        Day(days)
    }

    pub fn days(self) -> i64 {
        self.0
    }

    /// The civil date (proleptic Gregorian), after Howard Hinnant's
    /// `civil_from_days`.
    fn civil(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (
            year,
            u32::try_from(month).unwrap_or(1),
            u32::try_from(day).unwrap_or(1),
        )
    }

    /// `days_from_civil`, the inverse of [`Day::civil`].
    fn from_civil(year: i64, month: u32, day: u32) -> Day {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400);
        let month = i64::from(month);
        let mp = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Day(era * 146_097 + doe - 719_468)
    }
}

/// A date that is not `YYYY-MM-DD` or not in the calendar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date of the form YYYY-MM-DD")]
pub struct BadDay(pub String);

impl FromStr for Day {
    type Err = BadDay;
    fn from_str(text: &str) -> Result<Day, BadDay> {
        let bad = || BadDay(text.to_owned());
        let parts: Vec<&str> = text.split('-').collect();
        let [year, month, day] = parts.as_slice() else {
            return Err(bad());
        };
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return Err(bad());
        }
        let year: i64 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        let day: u32 = day.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || day == 0 {
            return Err(bad());
        }
        let parsed = Day::from_civil(year, month, day);
        // 2023-02-30 would roll over into March: not a calendar date.
        (parsed.civil() == (year, month, day))
            .then_some(parsed)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

impl TryFrom<String> for Day {
    type Error = BadDay;
    fn try_from(text: String) -> Result<Day, BadDay> {
        text.parse()
    }
}

impl From<Day> for String {
    fn from(day: Day) -> String {
        day.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn days_print_and_parse_as_calendar_dates() {
        assert_eq!(Day::from_days(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_days(20_422).to_string(), "2025-11-30");
        assert_eq!(
            "2024-02-29".parse::<Day>().unwrap().to_string(),
            "2024-02-29"
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "",
            "2026-01-00",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 3 - 1);
        assert_eq!(Day::of(at), Day::from_days(2));
    }

    proptest! {
        #[test]
        fn every_day_of_years_1_to_9999_round_trips(days in -719_162i64..2_932_897) {
            let day = Day::from_days(days);
            prop_assert_eq!(day.to_string().parse::<Day>(), Ok(day));
        }
    }
}
