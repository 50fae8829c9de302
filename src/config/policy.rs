//! `[categories.NAME]`, `[groups.NAME]` (with their schedules) and `[[clients]]`: what is
//! blocked for whom, and when.

use serde::Deserialize;
use toml::Spanned;

use super::blocking::BlockResponse;
use super::value::{Days, Mac, Net, TimeOfDay};

/// The built-in category of ways round the filter; defined even if the config does not.
pub const CIRCUMVENTION: &str = "circumvention";

/// The most categories one config may define: the matcher keeps a category set in 64
/// bits, one of which marks allow entries.
pub const MAX_CATEGORIES: usize = 63;

/// Categories that alert unless `alert = false`: the statutory ones and self-harm, which
/// the lead must hear about at once.
pub const ALERT_BY_DEFAULT: &[&str] = &["terrorism", "child-abuse", "self-harm"];

/// `[categories.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Statutory categories: on for every group, never overridden by an allow entry.
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub description: String,
    /// Tell the e-safety lead at once about a block in this category (webhook/email,
    /// `[alerts]`). Unset: on for the serious categories, [`ALERT_BY_DEFAULT`].
    #[serde(default)]
    pub alert: Option<bool>,
    /// Shown on the block page under the reason: where to get help (e.g. support lines
    /// for self-harm).
    #[serde(default)]
    pub signpost: String,
    /// A name on this category's lists that the self-test asks for to see it blocked
    /// (none: one is taken from the lists, which a hashed list cannot give).
    #[serde(default)]
    pub canary: Option<Spanned<String>>,
}

impl CategoryConfig {
    /// Whether a block in category `name` (configured as `self`) raises an alert.
    pub fn alerts(&self, name: &str) -> bool {
        self.alert
            .unwrap_or_else(|| self.locked || ALERT_BY_DEFAULT.contains(&name))
    }

    /// The built-in circumvention category, for a config that does not define it.
    pub(super) fn circumvention() -> CategoryConfig {
        CategoryConfig {
            locked: false,
            description: "Ways round the filter: DoH/DoT resolvers, VPNs, proxies, \
                          iCloud Private Relay (built in)"
                .to_string(),
            ..CategoryConfig::default()
        }
    }
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Categories blocked for this group (locked ones are added regardless).
    #[serde(default)]
    pub block: Vec<Spanned<String>>,
    /// Time windows that block (or allow) more categories.
    #[serde(default)]
    pub schedule: Vec<ScheduleConfig>,
    /// Block the built-in `circumvention` category (DoH canary, Private Relay, DDR and
    /// the circumvention lists). On unless turned off here.
    #[serde(default = "default_on")]
    pub circumvention: Spanned<bool>,
    /// Rewrite Google, Bing and DuckDuckGo to their safe-search addresses.
    #[serde(default)]
    pub safe_search: bool,
    /// YouTube restricted mode.
    #[serde(default)]
    pub youtube: YouTubeMode,
    /// How this group's blocked names are answered (default: `[blocking] response`).
    #[serde(default)]
    pub block_response: Option<BlockResponse>,
    /// Categories this group must always block (the locked ones are required anyway):
    /// the self-test fails while the group does not.
    #[serde(default)]
    pub required: Vec<Spanned<String>>,
}

/// YouTube's restricted modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YouTubeMode {
    #[default]
    Off,
    Moderate,
    Strict,
}

/// `[[groups.NAME.schedule]]`: in the window, `block` categories are added to the
/// group's and `allow` categories taken away (never a locked one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default)]
    pub block: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// `mon`…`sun`, or `weekdays`, `weekends`, `daily`.
    #[serde(default = "default_days")]
    pub days: Vec<Days>,
    /// Local start, `HH:MM`.
    pub from: Spanned<TimeOfDay>,
    /// Local end, `HH:MM`; earlier than `from` means the window runs past midnight.
    pub to: TimeOfDay,
}

impl ScheduleConfig {
    /// The days the window starts on, one bit per weekday (Monday = bit 0).
    pub(crate) fn day_mask(&self) -> u8 {
        self.days.iter().fold(0, |mask, d| mask | d.mask)
    }

    /// How the window reads in the config, for `warden check`: "weekdays 09:00-17:00".
    pub fn label(&self) -> String {
        let days: Vec<&str> = self.days.iter().map(|d| d.text.as_str()).collect();
        format!("{} {}-{}", days.join(","), self.from.get_ref(), self.to)
    }
}

fn default_on() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

fn default_days() -> Vec<Days> {
    vec![Days {
        mask: 0b111_1111,
        text: "daily".to_string(),
    }]
}

/// `[[clients]]`: an address, a network or a MAC address, and the group (and device
/// name) it belongs to. A MAC entry follows the device whatever address it has (the
/// MAC comes from a trusted forwarder's query or the DHCP leases).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `10.0.1.0/24`, `2001:db8::/64`, or one address.
    #[serde(default)]
    pub cidr: Option<Net>,
    /// `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac: Option<Spanned<Mac>>,
    pub group: Spanned<String>,
    /// A device name for the audit log (a label only, never a policy key).
    #[serde(default)]
    pub name: Option<String>,
}
