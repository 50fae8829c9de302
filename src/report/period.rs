//! The report's period: `--since 12m` (months), `52w`, `90d`, `1y`, or a date
//! (`2025-09-01`, the start of that day in `[server] timezone`). It ends now.

use std::time::SystemTime;

use chrono::{DateTime, Months, NaiveDate, Utc};
use chrono_tz::Tz;

/// Why a period could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--since {text:?}: {reason} (write 12m, 52w, 90d, 1y or a date such as 2025-09-01)")]
pub struct PeriodError {
    text: String,
    reason: &'static str,
}

/// The longest period a report covers: the self-test and config history are kept about
/// this long, and a review looks back a year.
const MAX_MONTHS: u32 = 36;

/// The start of the period `text` names, counted back from `now` in `tz`.
pub fn since(text: &str, now: SystemTime, tz: Tz) -> Result<SystemTime, PeriodError> {
    let error = |reason| PeriodError {
        text: text.to_string(),
        reason,
    };
    let now_local = DateTime::<Utc>::from(now).with_timezone(&tz);
    let trimmed = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        let start = crate::localtime::start_of_day(day, tz);
        if start > now_local {
            return Err(error("is in the future"));
        }
        return Ok(SystemTime::from(start));
    }
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| error("has no unit"))?;
    let (number, unit) = trimmed.split_at(split);
    let n: u32 = number
        .parse()
        .map_err(|_| error("does not start with a number"))?;
    if n == 0 {
        return Err(error("is an empty period"));
    }
    let months = match unit {
        "m" | "mo" | "months" => n,
        "y" | "years" => n.saturating_mul(12),
        "w" | "weeks" => return back_days(now_local, n.saturating_mul(7), &error),
        "d" | "days" => return back_days(now_local, n, &error),
        _ => return Err(error("has an unknown unit")),
    };
    if months > MAX_MONTHS {
        return Err(error("is longer than 3 years"));
    }
    now_local
        .checked_sub_months(Months::new(months))
        .map(SystemTime::from)
        .ok_or_else(|| error("goes back too far"))
}

fn back_days(
    now: DateTime<Tz>,
    days: u32,
    error: &dyn Fn(&'static str) -> PeriodError,
) -> Result<SystemTime, PeriodError> {
    if days > MAX_MONTHS * 31 {
        return Err(error("is longer than 3 years"));
    }
    now.checked_sub_days(chrono::Days::new(u64::from(days)))
        .map(SystemTime::from)
        .ok_or_else(|| error("goes back too far"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn periods_count_back_in_calendar_units_or_start_on_a_date() {
        let now = at("2026-12-06T10:00:00Z");
        let tz: Tz = "Europe/London".parse().unwrap();
        assert_eq!(since("12m", now, tz), Ok(at("2025-12-06T10:00:00Z")));
        assert_eq!(since("1y", now, tz), Ok(at("2025-12-06T10:00:00Z")));
        assert_eq!(since("2w", now, tz), Ok(at("2026-11-22T10:00:00Z")));
        assert_eq!(since("30d", now, tz), Ok(at("2026-11-06T10:00:00Z")));
        // A date starts at local midnight (British Summer Time in September).
        assert_eq!(since("2026-09-01", now, tz), Ok(at("2026-08-31T23:00:00Z")));
        for bad in ["", "m", "0m", "12x", "37m", "2027-01-01", "-3m", "1200d"] {
            let err = since(bad, now, tz).unwrap_err().to_string();
            assert!(err.starts_with("--since"), "{bad}: {err}");
        }
    }
}
