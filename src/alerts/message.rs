//! What an alert says: the blocks it is about, and their wording for a non-technical
//! reader (the e-safety lead) as an email and as a webhook's JSON.
//!
//! The text stays in plain ASCII so mail clients show it as sent (7-bit, no encoding);
//! times are shown in the configured time zone, in words.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::json;

use super::limit::Held;
use super::sighting::{Key, Sighting};
use crate::config::Config;

/// An immediate alert or a digest of the blocks held after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Digest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Digest => "digest",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "alert" => Some(Kind::Alert),
            "digest" => Some(Kind::Digest),
            _ => None,
        }
    }
}

/// What a channel sends: an email's subject and text, a webhook's JSON (whose `text`
/// is the email's).
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub subject: String,
    pub text: String,
    pub json: serde_json::Value,
}

/// One message to the lead, sent on every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub key: Key,
    /// At least one, in the order they happened.
    pub sightings: Vec<Sighting>,
    /// Further blocks held but not listed.
    pub more: u64,
}

impl Message {
    pub fn alert(key: Key, sighting: Sighting) -> Message {
        Message {
            kind: Kind::Alert,
            key,
            sightings: vec![sighting],
            more: 0,
        }
    }

    pub fn digest(held: Held) -> Message {
        let mut sightings = held.sightings;
        // In the order they happened: the audit writer numbers the rows of one flush in
        // no particular order.
        sightings.sort_by(|a, b| (&a.time, a.id).cmp(&(&b.time, b.id)));
        Message {
            kind: Kind::Digest,
            key: held.key,
            sightings,
            more: held.more,
        }
    }

    /// The message as the channels send it.
    pub fn letter(&self, wording: &Wording) -> Letter {
        Letter {
            subject: self.subject(),
            text: self.text(wording),
            json: self.json(wording),
        }
    }

    /// The audit event ids, comma-separated (as recorded with each delivery).
    pub(crate) fn event_ids(&self) -> String {
        let ids: Vec<String> = self.sightings.iter().map(|s| s.id.to_string()).collect();
        ids.join(",")
    }

    /// The lowest event id in the message.
    pub(crate) fn first_id(&self) -> i64 {
        self.sightings.iter().map(|s| s.id).min().unwrap_or(0)
    }

    fn blocks(&self) -> u64 {
        self.sightings.len() as u64 + self.more
    }

    /// `10.0.0.7 (ipad-3)`, or the address alone when the device has no name.
    fn who(&self) -> String {
        let device = self.sightings.first().and_then(|s| s.device.as_deref());
        match device {
            Some(device) => format!("{} ({device})", self.key.client),
            None => self.key.client.clone(),
        }
    }

    pub(crate) fn subject(&self) -> String {
        let n = self.blocks();
        let plural = if n == 1 { "" } else { "s" };
        match (self.kind, self.key.is_overflow()) {
            (Kind::Alert, _) => format!(
                "Warden alert: {} block on {}",
                self.key.category,
                self.who()
            ),
            (Kind::Digest, false) => format!(
                "Warden alert summary: {n} more {} block{plural} on {}",
                self.key.category,
                self.who()
            ),
            (Kind::Digest, true) => {
                format!("Warden alert summary: {n} more block{plural} on several devices")
            }
        }
    }

    /// The email body (and the webhook's `text`).
    pub fn text(&self, wording: &Wording) -> String {
        let about = wording.about(&self.key.category);
        let mut out = match (self.kind, self.sightings.first()) {
            (Kind::Alert, Some(s)) => self.alert_text(s, &about, wording),
            _ => self.digest_text(&about, wording),
        };
        out.push_str("\n-- \nSent by Warden, the web filter.\n");
        out
    }

    /// The body of an immediate alert about `s`; `about` is the category's description.
    fn alert_text(&self, s: &Sighting, about: &str, wording: &Wording) -> String {
        let category = &self.key.category;
        let mut out =
            format!("Warden has blocked a website in the category \"{category}\"{about}.\n\n");
        out.push_str(&format!("What was blocked:  {}\n", s.name));
        out.push_str(&format!("When:              {}\n", wording.time(&s.time)));
        out.push_str(&format!(
            "Which device:      {}, group \"{}\"\n",
            self.device_words(s),
            s.group
        ));
        if let Some(user) = &s.user {
            out.push_str(&format!("Signed in as:      {user}\n"));
        }
        // A hashed list's entry says nothing to a reader (and is hashed so the list's
        // contents stay unreadable): name the list only.
        let entry = if s.rule.starts_with("sha256:") || s.rule == s.name {
            String::new()
        } else {
            format!(" (entry {})", s.rule)
        };
        out.push_str(&format!(
            "Why:               it is on the list \"{}\"{entry}\n\n",
            s.list
        ));
        out.push_str(
            "The device could not open it. A block does not by itself mean that\n\
             anyone did anything wrong: apps and pages sometimes load addresses in\n\
             the background.\n\n",
        );
        out.push_str(&format!(
            "What to do now: look at this event (number {}) in the Warden\n\
             dashboard:\n    {}\n\
             decide whether it needs action under your safeguarding policy, and\n\
             record your review there.\n\n",
            s.id,
            wording.link(s.id)
        ));
        if !wording.window.is_zero() {
            out.push_str(&format!(
                "If this device is blocked again in this category within {}, Warden\n\
                 will not send a message for each block: it sends one summary when\n\
                 that time is over.\n",
                humantime::format_duration(wording.window)
            ));
        }
        out
    }

    /// The body of a digest: what it is about, then one line per block held.
    fn digest_text(&self, about: &str, wording: &Wording) -> String {
        let mut out = self.digest_opening(about);
        for s in &self.sightings {
            out.push_str(&self.digest_line(s, wording));
        }
        if self.more > 0 {
            out.push_str(&format!("  and {} more not listed here.\n", self.more));
        }
        out.push_str(&format!(
            "\nWhat to do now: review these events in the Warden dashboard, starting\n\
             with:\n    {}\n\
             and record your reviews there.\n",
            wording.link(self.sightings.first().map_or(0, |s| s.id))
        ));
        out
    }

    /// The digest's first paragraph: how many blocks, of which device and category.
    fn digest_opening(&self, about: &str) -> String {
        let n = self.blocks();
        let category = &self.key.category;
        if self.key.is_overflow() {
            format!(
                "Warden blocked {n} more websites in categories that alert, on more\n\
                 devices than it tracks one by one, so they are listed together here.\n\n"
            )
        } else if let Some(s) = self.sightings.first() {
            format!(
                "Warden blocked {n} more website{} in the category \"{category}\"{about}\n\
                 on {}, group \"{}\", after its last alert.\n\n",
                if n == 1 { "" } else { "s" },
                self.device_words(s),
                s.group
            )
        } else {
            String::new()
        }
    }

    /// One block of a digest: when, what, how often (and on which device, in the
    /// overflow digest).
    fn digest_line(&self, s: &Sighting, wording: &Wording) -> String {
        let times = if s.count > 1 {
            format!(" ({} times)", s.count)
        } else {
            String::new()
        };
        let device = if self.key.is_overflow() {
            format!(" on {}", self.device_words(s))
        } else {
            String::new()
        };
        format!(
            "  {}  {}{times}{device}, event {}\n",
            wording.time(&s.time),
            s.name,
            s.id
        )
    }

    /// `ipad-3 (address 10.0.0.7)`, or `the device at 10.0.0.7`, with the MAC when
    /// known: `ipad-3 (address 10.0.0.7, MAC aa:bb:cc:dd:ee:01)`.
    fn device_words(&self, s: &Sighting) -> String {
        match (&s.device, &s.mac) {
            (Some(device), Some(mac)) => format!("{device} (address {}, MAC {mac})", s.client),
            (Some(device), None) => format!("{device} (address {})", s.client),
            (None, Some(mac)) => format!("the device at {} (MAC {mac})", s.client),
            (None, None) => format!("the device at {}", s.client),
        }
    }

    /// The webhook's body: the message's kind, key and wording, and every event.
    pub fn json(&self, wording: &Wording) -> serde_json::Value {
        let first = self.sightings.first();
        let events: Vec<serde_json::Value> = self
            .sightings
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "time": s.time,
                    "client_ip": s.client,
                    "device": s.device,
                    "mac": s.mac,
                    "user": s.user,
                    "group": s.group,
                    "name": s.name,
                    "categories": s.categories,
                    "list": s.list,
                    "rule": s.rule,
                    "count": s.count,
                    "link": format!("/events/{}", s.id),
                    "url": wording.dashboard.as_ref().map(|_| wording.link(s.id)),
                })
            })
            .collect();
        json!({
            "kind": self.kind.as_str(),
            "category": self.key.category,
            "client_ip": self.key.client,
            "device": first.and_then(|s| s.device.clone()),
            "mac": first.and_then(|s| s.mac.clone()),
            "user": first.and_then(|s| s.user.clone()),
            "group": first.map(|s| s.group.clone()),
            "subject": self.subject(),
            "text": self.text(wording),
            "events": events,
            "more": self.more,
        })
    }
}

/// What the wording needs from the configuration.
#[derive(Debug, Clone)]
pub struct Wording {
    /// `https://warden.school.lan` (no trailing slash), if configured.
    pub dashboard: Option<String>,
    pub timezone: Tz,
    /// Category descriptions from `[categories.NAME]`.
    pub descriptions: BTreeMap<String, String>,
    /// The rate window, to tell the reader what happens next.
    pub window: Duration,
}

impl Wording {
    pub fn from_config(config: &Config) -> Wording {
        Wording {
            dashboard: config
                .alerts
                .dashboard_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_string()),
            timezone: config.server.tz(),
            descriptions: config
                .categories
                .iter()
                .map(|(name, c)| (name.clone(), c.description.clone()))
                .collect(),
            window: config.alerts.rate_window,
        }
    }

    /// ` (Unlawful terrorist content)`: the description of `category`, if it has one.
    fn about(&self, category: &str) -> String {
        self.descriptions
            .get(category)
            .filter(|d| !d.is_empty())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    }

    /// The dashboard page of event `id` (its path when no dashboard URL is configured).
    pub fn link(&self, id: i64) -> String {
        match &self.dashboard {
            Some(base) => format!("{base}/events/{id}"),
            None => format!("/events/{id}"),
        }
    }

    /// An RFC 3339 time in words in the local time zone: `Sunday 22 November 2026 at
    /// 09:14:03 GMT`. Shown as stored if it cannot be read.
    pub fn time(&self, rfc3339: &str) -> String {
        match chrono::DateTime::parse_from_rfc3339(rfc3339) {
            Ok(t) => t
                .with_timezone(&self.timezone)
                .format("%A %-d %B %Y at %H:%M:%S %Z")
                .to_string(),
            Err(_) => rfc3339.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(id: i64, name: &str) -> Sighting {
        Sighting {
            id,
            time: "2026-07-01T08:14:03.120Z".into(),
            client: "10.0.0.7".into(),
            device: Some("ipad-3".into()),
            group: "pupils".into(),
            name: name.into(),
            categories: "terrorism".into(),
            list: "ctiru".into(),
            rule: name.into(),
            count: 2,
            mac: None,
            user: None,
        }
    }

    #[test]
    fn an_alert_names_the_signed_in_user_and_the_mac_when_known() {
        let mut s = sighting(7, "bad.test");
        s.mac = Some("aa:bb:cc:dd:ee:01".into());
        s.user = Some("pupil7".into());
        let message = Message::alert(Key::new("10.0.0.7", "terrorism"), s);
        let text = message.text(&wording());
        assert!(
            text.contains("ipad-3 (address 10.0.0.7, MAC aa:bb:cc:dd:ee:01)"),
            "{text}"
        );
        assert!(text.contains("Signed in as:      pupil7"), "{text}");
        let json = message.json(&wording());
        assert_eq!(json["user"], "pupil7");
        assert_eq!(json["events"][0]["mac"], "aa:bb:cc:dd:ee:01");
    }

    fn wording() -> Wording {
        Wording {
            dashboard: Some("https://warden.school.test".into()),
            timezone: chrono_tz::Europe::London,
            descriptions: BTreeMap::from([(
                "terrorism".into(),
                "Unlawful terrorist content".into(),
            )]),
            window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn an_alert_says_what_when_which_device_and_what_to_do_in_plain_ascii() {
        let m = Message::alert(Key::new("10.0.0.7", "terrorism"), sighting(12, "bad.test"));
        assert_eq!(
            m.subject(),
            "Warden alert: terrorism block on 10.0.0.7 (ipad-3)"
        );
        let text = m.text(&wording());
        for want in [
            "category \"terrorism\" (Unlawful terrorist content)",
            "What was blocked:  bad.test",
            "Wednesday 1 July 2026 at 09:14:03 BST",
            "ipad-3 (address 10.0.0.7), group \"pupils\"",
            "https://warden.school.test/events/12",
            "within 1h",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(text.is_ascii());
        let body = m.json(&wording());
        assert_eq!(body["kind"], "alert");
        assert_eq!(body["events"][0]["name"], "bad.test");
        assert_eq!(body["events"][0]["link"], "/events/12");
        assert_eq!(
            body["events"][0]["url"],
            "https://warden.school.test/events/12"
        );
        assert_eq!(m.event_ids(), "12");
    }

    #[test]
    fn a_digest_lists_every_block_and_counts_the_rest() {
        let m = Message::digest(Held {
            key: Key::new("10.0.0.7", "terrorism"),
            sightings: vec![
                sighting(13, "b.test"),
                Sighting {
                    // Numbered after b.test by the writer, but seen first.
                    time: "2026-07-01T08:14:02.000Z".into(),
                    ..sighting(15, "c.test")
                },
            ],
            more: 3,
        });
        assert_eq!(
            m.subject(),
            "Warden alert summary: 5 more terrorism blocks on 10.0.0.7 (ipad-3)"
        );
        let text = m.text(&Wording {
            dashboard: None,
            ..wording()
        });
        assert!(text.contains("b.test (2 times), event 13"), "{text}");
        assert!(text.contains("c.test (2 times), event 15"), "{text}");
        assert!(text.contains("and 3 more not listed"), "{text}");
        let (b, c) = (text.find("b.test").unwrap(), text.find("c.test").unwrap());
        assert!(c < b, "in the order they happened:\n{text}");
        assert!(text.contains("    /events/15\n"), "{text}");
        assert_eq!((m.event_ids().as_str(), m.first_id()), ("15,13", 13));
    }
}
