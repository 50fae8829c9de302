//! Values parsed from the config's text into their real types while it is read: a
//! network, a time zone, a time of day, a set of days, a URL, an origin, a domain name,
//! an email address. Each parses once here; the domain modules take the typed value and
//! never see the string again. A value that does not parse fails the load with its
//! `file:line` (the TOML parser keeps every value's position).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Why a value from the config is not what its field takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} {reason}")]
pub struct ValueError {
    pub text: String,
    pub reason: String,
}

impl ValueError {
    pub fn new(text: &str, reason: impl Into<String>) -> ValueError {
        ValueError {
            text: text.to_string(),
            reason: reason.into(),
        }
    }
}

/// Deserialize a string with `T::from_str`, reporting its error at the value's position.
fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = ValueError>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Implements `Deserialize` for a type through its `FromStr`.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_text(deserializer)
            }
        }
    )*};
}

deserialize_from_str!(
    Net, TimeZone, TimeOfDay, Days, HttpUrl, Origin, Domain, Mailbox, HostName, Mac
);

/// Deserialize a duration (`90s`, `12h`) and check it lies in `MIN_MS..=MAX_MS`
/// milliseconds (`u64::MAX`: no upper bound), so an out-of-range value fails the load
/// at its own line.
pub(super) fn duration_in<'de, D, const MIN_MS: u64, const MAX_MS: u64>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error>
where
    D: Deserializer<'de>,
{
    let value: std::time::Duration = humantime_serde::deserialize(deserializer)?;
    check_duration(value, MIN_MS, MAX_MS).map_err(serde::de::Error::custom)
}

/// [`duration_in`] for an optional field.
pub(super) fn optional_duration_in<'de, D, const MIN_MS: u64, const MAX_MS: u64>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error>
where
    D: Deserializer<'de>,
{
    duration_in::<D, MIN_MS, MAX_MS>(deserializer).map(Some)
}

fn check_duration(
    value: std::time::Duration,
    min_ms: u64,
    max_ms: u64,
) -> Result<std::time::Duration, String> {
    let show = |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms));
    let ms = value.as_millis();
    if ms < u128::from(min_ms) || ms > u128::from(max_ms) {
        let shown = humantime::format_duration(value);
        return Err(if max_ms == u64::MAX {
            format!("must be at least {}, not {shown}", show(min_ms))
        } else {
            format!(
                "must be between {} and {}, not {shown}",
                show(min_ms),
                show(max_ms)
            )
        });
    }
    Ok(value)
}

/// Deserialize a number and check it against `check`, which says what it must be.
pub(super) fn number_where<'de, D, T>(
    deserializer: D,
    ok: impl Fn(&T) -> bool,
    must: &str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + fmt::Display,
{
    let value = T::deserialize(deserializer)?;
    if ok(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be {must}, not {value}"
        )))
    }
}

/// An address or a network: `10.0.1.0/24`, `2001:db8::/64`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net(pub ipnet::IpNet);

impl FromStr for Net {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Net, ValueError> {
        let trimmed = text.trim();
        if let Ok(net) = trimmed.parse::<ipnet::IpNet>() {
            return Ok(Net(net));
        }
        trimmed
            .parse::<IpAddr>()
            .map(|ip| Net(ipnet::IpNet::from(ip)))
            .map_err(|_| {
                ValueError::new(text, "is neither an address nor a network like 10.0.1.0/24")
            })
    }
}

/// A 48-bit (Ethernet, Wi-Fi) MAC address: `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`
/// in either case, as configs, lease files and RADIUS `Calling-Station-Id` write it.
/// Shown lower case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address in `text`, if it is one (see [`Mac`]); also the 12 bare hex digits
    /// some controllers send (`AABBCCDDEEFF`).
    pub fn parse(text: &str) -> Option<Mac> {
        let text = text.trim();
        let mut out = [0u8; 6];
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            return Some(Mac(out));
        }
        let separator = if text.contains('-') { '-' } else { ':' };
        let mut parts = text.split(separator);
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }
}

impl FromStr for Mac {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Mac, ValueError> {
        Mac::parse(text)
            .ok_or_else(|| ValueError::new(text, "is not a MAC address like aa:bb:cc:dd:ee:ff"))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IANA time zone, e.g. `Europe/London`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl FromStr for TimeZone {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<TimeZone, ValueError> {
        text.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            ValueError::new(
                text,
                "is not an IANA time zone name such as \"Europe/London\"",
            )
        })
    }
}

/// A local wall-clock time, `HH:MM` from `00:00` to `24:00`, as minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub u16);

impl FromStr for TimeOfDay {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<TimeOfDay, ValueError> {
        let bad = || ValueError::new(text, "is not a time of day HH:MM (00:00 to 24:00)");
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(TimeOfDay(h * 60 + m))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Days of the week, bit `i` = weekday `i` (Monday = 0), with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Days {
    pub mask: u8,
    pub text: String,
}

impl FromStr for Days {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Days, ValueError> {
        let mask =
            match text.to_ascii_lowercase().as_str() {
                "mon" | "monday" => 1,
                "tue" | "tuesday" => 1 << 1,
                "wed" | "wednesday" => 1 << 2,
                "thu" | "thursday" => 1 << 3,
                "fri" | "friday" => 1 << 4,
                "sat" | "saturday" => 1 << 5,
                "sun" | "sunday" => 1 << 6,
                "weekdays" => 0b001_1111,
                "weekends" => 0b110_0000,
                "daily" | "everyday" => 0b111_1111,
                _ => return Err(ValueError::new(
                    text,
                    "is not one of mon, tue, wed, thu, fri, sat, sun, weekdays, weekends, daily",
                )),
            };
        Ok(Days {
            mask,
            text: text.to_string(),
        })
    }
}

/// An `https://` (or `http://`) URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub reqwest::Url);

impl FromStr for HttpUrl {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<HttpUrl, ValueError> {
        reqwest::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .map(HttpUrl)
            .ok_or_else(|| ValueError::new(text, "is not an https:// (or http://) URL"))
    }
}

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// An origin: `http(s)://host[:port]`, nothing more (`allow_redirect_to`). Kept in its
/// serialised form (`https://cdn.example`, the port only when not the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(pub String);

impl FromStr for Origin {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Origin, ValueError> {
        let url = reqwest::Url::parse(text).map_err(|_| ValueError::new(text, "is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(ValueError::new(
                text,
                "must be an http:// or https:// origin, e.g. \"https://cdn.example\"",
            ));
        }
        let bare = url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        if !bare {
            return Err(ValueError::new(
                text,
                "must be an origin only (scheme, host and port), without a path, query or user",
            ));
        }
        Ok(Origin(url.origin().ascii_serialization()))
    }
}

/// A name (or address) the admin listener answers to (`[dashboard] hosts`): lower case,
/// no trailing dot, no port, scheme or path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(pub String);

impl FromStr for HostName {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<HostName, ValueError> {
        let trimmed = text.trim();
        if trimmed.contains("://") || trimmed.contains('/') {
            return Err(ValueError::new(
                text,
                "must be a host name or address only, without a scheme or path",
            ));
        }
        let bare = trimmed
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Some(name) = crate::name::host_name(bare) {
            return Ok(HostName(name));
        }
        let with_port = trimmed.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok()
                && crate::name::host_name(host.trim_start_matches('[').trim_end_matches(']'))
                    .is_some()
        });
        Err(ValueError::new(
            text,
            if with_port {
                ": give the name without a port (a name listed here is answered on any port)"
            } else {
                "is not a host name (letters, digits, '-', '_', dots) or an IP address"
            },
        ))
    }
}

/// A domain name, normalised (lower case, punycode, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain(String);

impl FromStr for Domain {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Domain, ValueError> {
        crate::name::normalize(text)
            .map(Domain)
            .map_err(|e| ValueError::new(text, format!("is not a domain name: {e}")))
    }
}

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, optionally with a display name: `Warden <warden@school.example>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox(pub lettre::message::Mailbox);

impl FromStr for Mailbox {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Mailbox, ValueError> {
        text.parse::<lettre::message::Mailbox>()
            .map(Mailbox)
            .map_err(|_| ValueError::new(text, "is not an email address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_once_into_their_types() {
        assert_eq!(
            "10.0.5.9".parse::<Net>().unwrap().0.to_string(),
            "10.0.5.9/32"
        );
        assert!("10.0.0/8".parse::<Net>().is_err());
        assert_eq!("09:30".parse::<TimeOfDay>().unwrap(), TimeOfDay(570));
        assert_eq!("24:00".parse::<TimeOfDay>().unwrap().to_string(), "24:00");
        for bad in ["9", "25:00", "24:01", "12:5", ":30", "ab:cd"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
        assert_eq!("Weekends".parse::<Days>().unwrap().mask, 0b110_0000);
        assert!("someday".parse::<Days>().is_err());
        assert_eq!(
            "https://cdn.example:443".parse::<Origin>().unwrap().0,
            "https://cdn.example"
        );
        assert!("https://cdn.example/path".parse::<Origin>().is_err());
        assert!("ftp://x.example".parse::<HttpUrl>().is_err());
        assert_eq!("Ex.Org.".parse::<Domain>().unwrap().as_str(), "ex.org");
        assert!("Warden <w@school.example>".parse::<Mailbox>().is_ok());
        assert!("not an address".parse::<Mailbox>().is_err());
        assert!("Mars/Olympus".parse::<TimeZone>().is_err());
        let host = |t: &str| t.parse::<HostName>().map(|h| h.0);
        assert_eq!(host("Warden.School.Lan").unwrap(), "warden.school.lan");
        assert_eq!(host("[fd00::2]").unwrap(), "fd00::2");
        assert_eq!(host("192.168.1.2").unwrap(), "192.168.1.2");
        let port = host("warden.lan:8053").unwrap_err().to_string();
        assert!(port.contains("without a port"), "{port}");
        let scheme = host("https://warden.lan/").unwrap_err().to_string();
        assert!(scheme.contains("without a scheme"), "{scheme}");
        assert!(host("").is_err() && host("two words").is_err());
    }
}
