//! Times as people read them. The audit log keeps RFC 3339 UTC text (its hash chain is
//! over that text, and the CSV/JSON exports keep it, for machines); the dashboard and the
//! command line's human output show each time in the configured zone (`[server]
//! timezone`) with its offset, `2026-07-01 14:03:22 +01:00`, so a reader neither converts
//! nor guesses across a clock change. A date a person types (`2026-07-01`) is a day in
//! that zone, from its local midnight.

use std::borrow::Cow;
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::Config;

/// The zone times are shown in: `[server] timezone` (Europe/London by default).
pub fn zone(config: &Config) -> Tz {
    config.server.tz()
}

/// An instant in `tz`, with its offset: `2026-07-01 14:03:22 +01:00`.
pub(crate) fn show_instant(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A stored RFC 3339 time (`2026-07-01T13:03:22.120Z`) in `tz`; text that is not RFC 3339
/// is shown as it is, so nothing stored is ever hidden.
pub fn show(rfc3339: &str, tz: Tz) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(at) => show_instant(at.with_timezone(&Utc), tz),
        Err(_) => rfc3339.to_string(),
    }
}

/// A system time in `tz`, with its offset.
pub(crate) fn show_system(at: SystemTime, tz: Tz) -> String {
    show_instant(DateTime::<Utc>::from(at), tz)
}

/// The day an instant falls on in `tz`.
pub fn day_of(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The first instant of `day` in `tz`: its midnight, the earlier one if the clocks go
/// back over midnight, or the first hour that exists if they skip it.
pub(crate) fn start_of_day(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    // A zone skips at most a few hours; bounded, and UTC midnight if all else fails.
    for hour in 0..24 {
        let local = day.and_time(NaiveTime::MIN) + TimeDelta::hours(hour);
        if let Some(at) = tz.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    day.and_time(NaiveTime::MIN).and_utc()
}

/// A time as a person typed it, with a bare date (`2026-07-01`) made the start of that
/// day in `tz` (as RFC 3339 UTC); anything else (`7d`, a full RFC 3339 time, a typo) is
/// passed on unchanged for the audit filter's parser to take or refuse.
pub(crate) fn local_dates(text: &str, tz: Tz) -> Cow<'_, str> {
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(day) if text.len() == 10 => Cow::Owned(
            start_of_day(day, tz)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        ),
        _ => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn london_is_plus_nothing_in_winter_and_plus_one_in_summer() {
        let london = chrono_tz::Europe::London;
        assert_eq!(
            show("2026-01-15T09:30:05.120Z", london),
            "2026-01-15 09:30:05 +00:00"
        );
        assert_eq!(
            show("2026-07-01T13:03:22.000Z", london),
            "2026-07-01 14:03:22 +01:00"
        );
        // The clocks go forward at 01:00 UTC on the last Sunday of March.
        assert_eq!(
            show("2026-03-29T00:59:59Z", london),
            "2026-03-29 00:59:59 +00:00"
        );
        assert_eq!(
            show("2026-03-29T01:00:00Z", london),
            "2026-03-29 02:00:00 +01:00"
        );
    }

    #[test]
    fn other_zones_show_their_own_offset() {
        let at = "2026-07-01T08:33:22.500Z";
        assert_eq!(
            show(at, chrono_tz::Asia::Kolkata),
            "2026-07-01 14:03:22 +05:30"
        );
        assert_eq!(
            show(at, chrono_tz::America::New_York),
            "2026-07-01 04:33:22 -04:00"
        );
        assert_eq!(show(at, chrono_tz::UTC), "2026-07-01 08:33:22 +00:00");
        assert_eq!(show("not a time", chrono_tz::UTC), "not a time");
    }

    #[test]
    fn a_typed_date_is_local_midnight() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            local_dates("2026-07-01", chrono_tz::Europe::London),
            "2026-06-30T23:00:00Z"
        );
        assert_eq!(
            local_dates("2026-07-01", chrono_tz::Asia::Kolkata),
            "2026-06-30T18:30:00Z"
        );
        assert_eq!(
            local_dates("2026-01-01", chrono_tz::Europe::London),
            "2026-01-01T00:00:00Z"
        );
        for other in ["7d", "2026-07-01T10:00:00Z", "2026-13-01", "2026-7-1"] {
            assert_eq!(local_dates(other, chrono_tz::Europe::London), other);
        }
        // Havana skips midnight when its clocks go forward (8 March 2026): the day starts
        // at 01:00 local, 05:00 UTC.
        let havana = chrono_tz::America::Havana;
        assert_eq!(
            start_of_day(day("2026-03-08"), havana).to_rfc3339(),
            "2026-03-08T05:00:00+00:00"
        );
        assert_eq!(
            day_of(
                "2026-07-01T20:00:00Z".parse().unwrap(),
                chrono_tz::Asia::Kolkata
            ),
            day("2026-07-02")
        );
    }
}
