//! Schedule windows: "block social and gaming on weekdays 09:00–17:00", in the
//! configured IANA time zone, evaluated for a given instant (so tests inject the clock).
//!
//! A window's days are the days it *starts* on: `fri 22:00–06:00` runs from Friday
//! night into Saturday morning. Times are local wall-clock times: a window at 09:00
//! starts at 09:00 in winter and in summer. On the night the clocks go forward, local
//! times that do not exist simply never occur; on the night they go back, the repeated
//! hour is inside a window whenever its wall-clock time is.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use crate::config::ScheduleConfig;
use crate::filter::CategorySet;

/// One window of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `i` = weekday `i` (Monday = 0) on which the window starts.
    days: u8,
    /// Minutes after local midnight.
    from: u16,
    to: u16,
    pub block: CategorySet,
    pub allow: CategorySet,
    /// How the window reads in the config, for `warden check`: "mon-fri 09:00-17:00".
    pub label: String,
}

impl Window {
    /// The window `schedule` describes (validated while the config loaded), with its
    /// categories as the matcher numbers them.
    pub fn new(schedule: &ScheduleConfig, block: CategorySet, allow: CategorySet) -> Window {
        Window {
            days: schedule.day_mask(),
            from: schedule.from.get_ref().0,
            to: schedule.to.0,
            block,
            allow,
            label: schedule.label(),
        }
    }

    /// Is the window open at local `weekday` (Monday = 0) and `minute` of the day?
    pub(crate) fn open_at(&self, weekday: u8, minute: u16) -> bool {
        let starts_on = |day: u8| self.days & (1 << day) != 0;
        if self.from < self.to {
            starts_on(weekday) && (self.from..self.to).contains(&minute)
        } else {
            // Past midnight: the evening part on its own day, the morning part on the
            // day after one of its days.
            let yesterday = (weekday + 6) % 7;
            (starts_on(weekday) && minute >= self.from)
                || (starts_on(yesterday) && minute < self.to)
        }
    }
}

/// Local weekday (Monday = 0) and minute of the day of `at` in `tz`.
pub fn local(at: DateTime<Utc>, tz: Tz) -> (u8, u16) {
    let local = at.with_timezone(&tz);
    let weekday = local.weekday().num_days_from_monday() as u8;
    (weekday, (local.hour() * 60 + local.minute()) as u16)
}

/// The categories a group blocks at `at`: its own plus every open window's `block`,
/// minus every open window's `allow` (so a lunch-time `allow` window punches a hole in
/// a school-day `block` window), plus the locked ones, always. Also returns the open
/// windows.
pub fn active(
    base: CategorySet,
    locked: CategorySet,
    windows: &[Window],
    at: DateTime<Utc>,
    tz: Tz,
) -> (CategorySet, Vec<&Window>) {
    let (weekday, minute) = local(at, tz);
    let open: Vec<&Window> = windows
        .iter()
        .filter(|w| w.open_at(weekday, minute))
        .collect();
    let added = open
        .iter()
        .fold(CategorySet::EMPTY, |s, w| s.union(w.block));
    let removed = open
        .iter()
        .fold(CategorySet::EMPTY, |s, w| s.union(w.allow));
    let set = CategorySet(base.union(added).0 & !removed.0).union(locked);
    (set, open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn set(bits: u64) -> CategorySet {
        CategorySet(bits)
    }

    /// A window as the config would give it.
    fn window(
        days: &[&str],
        from: &str,
        to: &str,
        block: CategorySet,
        allow: CategorySet,
    ) -> Window {
        let days: Vec<String> = days.iter().map(|d| format!("{d:?}")).collect();
        let text = format!(
            "days = [{}]\nfrom = {from:?}\nto = {to:?}\nblock = [\"x\"]\n",
            days.join(", ")
        );
        let schedule: ScheduleConfig = toml::from_str(&text).unwrap();
        Window::new(&schedule, block, allow)
    }

    fn london(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::Europe::London
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn table_of_windows_and_instants() {
        let tz = chrono_tz::Europe::London;
        let school = window(&["weekdays"], "09:00", "17:00", set(0b10), set(0));
        let night = window(&["fri", "sat"], "22:00", "06:00", set(0b100), set(0));
        let lunch = window(&["weekdays"], "12:00", "13:00", set(0), set(0b10));
        let windows = [school, night, lunch];
        let base = set(0b1);
        let locked = set(1 << 40);
        // 2026-11-23 is a Monday.
        let cases = [
            (london(2026, 11, 23, 8, 59), 0b1, "Monday before school"),
            (london(2026, 11, 23, 9, 0), 0b11, "Monday 09:00 sharp"),
            (
                london(2026, 11, 23, 12, 30),
                0b1,
                "lunch allows the school category",
            ),
            (london(2026, 11, 23, 16, 59), 0b11, "Monday 16:59"),
            (london(2026, 11, 23, 17, 0), 0b1, "Monday 17:00: closed"),
            (london(2026, 11, 28, 10, 0), 0b1, "Saturday morning"),
            (london(2026, 11, 27, 23, 0), 0b101, "Friday night"),
            (
                london(2026, 11, 28, 5, 59),
                0b101,
                "Saturday early, from Friday's window",
            ),
            (
                london(2026, 11, 29, 5, 59),
                0b101,
                "Sunday early, from Saturday's window",
            ),
            (
                london(2026, 11, 30, 1, 0),
                0b1,
                "Monday early: Sunday has no night window",
            ),
            (
                london(2026, 11, 27, 6, 30),
                0b1,
                "Friday 06:30: no window yet",
            ),
        ];
        for (at, want, what) in cases {
            let (got, _) = active(base, locked, &windows, at, tz);
            assert_eq!(got, set(want).union(locked), "{what}");
        }
        // Thursday night has no night window: Friday 05:00 is outside every window.
        let (got, open) = active(base, locked, &windows, london(2026, 11, 27, 5, 0), tz);
        assert_eq!(got, base.union(locked));
        assert!(open.is_empty());
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        let tz = chrono_tz::Europe::London;
        let school = window(&["daily"], "09:00", "17:00", set(0b10), set(0));
        let windows = [school];
        // 09:30 local is 09:30 UTC in winter and 08:30 UTC in summer.
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 9, 30, 0).unwrap();
        let summer_same_utc = Utc.with_ymd_and_hms(2026, 7, 15, 9, 30, 0).unwrap();
        let summer_early_utc = Utc.with_ymd_and_hms(2026, 7, 15, 8, 30, 0).unwrap();
        let summer_late_utc = Utc.with_ymd_and_hms(2026, 7, 15, 16, 30, 0).unwrap();
        let on = set(0b10);
        assert_eq!(
            active(CategorySet::EMPTY, CategorySet::EMPTY, &windows, winter, tz).0,
            on
        );
        assert_eq!(
            active(
                CategorySet::EMPTY,
                CategorySet::EMPTY,
                &windows,
                summer_same_utc,
                tz
            )
            .0,
            on
        );
        assert_eq!(
            active(
                CategorySet::EMPTY,
                CategorySet::EMPTY,
                &windows,
                summer_early_utc,
                tz
            )
            .0,
            on
        );
        // 16:30 UTC in summer is 17:30 local: closed.
        assert!(active(
            CategorySet::EMPTY,
            CategorySet::EMPTY,
            &windows,
            summer_late_utc,
            tz
        )
        .0
        .is_empty());
        // The night the clocks go forward (2026-03-29, 01:00 UTC → 02:00 BST) and back
        // (2026-10-25, 02:00 BST → 01:00 GMT): a 00:30–01:30 window.
        let small = [window(&["sun"], "00:30", "01:30", set(0b10), set(0))];
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 29, h, m, 0).unwrap();
        assert_eq!(
            active(
                CategorySet::EMPTY,
                CategorySet::EMPTY,
                &small,
                at(0, 45),
                tz
            )
            .0,
            on
        );
        // 01:00 UTC is 02:00 BST: 01:00–01:59 local never happened, the window is over.
        assert!(
            active(CategorySet::EMPTY, CategorySet::EMPTY, &small, at(1, 0), tz)
                .0
                .is_empty()
        );
        let back = |h, m| Utc.with_ymd_and_hms(2026, 10, 25, h, m, 0).unwrap();
        // 00:15 UTC = 01:15 BST, and 01:15 UTC = 01:15 GMT: both inside 00:30–01:30.
        assert_eq!(
            active(
                CategorySet::EMPTY,
                CategorySet::EMPTY,
                &small,
                back(0, 15),
                tz
            )
            .0,
            on
        );
        assert_eq!(
            active(
                CategorySet::EMPTY,
                CategorySet::EMPTY,
                &small,
                back(1, 15),
                tz
            )
            .0,
            on
        );
        assert!(active(
            CategorySet::EMPTY,
            CategorySet::EMPTY,
            &small,
            back(1, 45),
            tz
        )
        .0
        .is_empty());
    }

    #[test]
    fn a_window_cannot_unblock_a_locked_category() {
        let tz = chrono_tz::Europe::London;
        let locked = set(0b1000);
        let w = [window(&["daily"], "00:00", "24:00", set(0), set(0b1001))];
        let (got, _) = active(set(0b1), locked, &w, Utc::now(), tz);
        assert_eq!(
            got, locked,
            "allow removed category 0, never the locked one"
        );
    }
}
