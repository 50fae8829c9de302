//! A self-test run and its checks' results, as the runner makes them, the history keeps
//! them and `POST /selftest` answers with them.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub group: String,
    /// A category, or `safe-search` / `youtube`.
    pub category: String,
    /// What was checked: the name asked, or empty for a check decided from the config.
    pub check: String,
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

impl Outcome {
    /// `pupils / adult (canary.example)`: the check in a line.
    pub fn label(&self) -> String {
        match self.check.is_empty() {
            true => format!("{} / {}", self.group, self.category),
            false => format!("{} / {} ({})", self.group, self.category, self.check),
        }
    }
}

/// One run's results.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    #[serde(serialize_with = "as_rfc3339")]
    pub at: SystemTime,
    pub trigger: String,
    pub outcomes: Vec<Outcome>,
}

fn as_rfc3339<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::audit::rfc3339(*at))
}

impl Run {
    pub fn passed(&self) -> u32 {
        self.outcomes.iter().filter(|o| o.ok).count() as u32
    }

    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.ok)
    }

    /// The run in words: `14 of 14 checks pass at 2026-12-06T10:42:00.000Z`, then
    /// `; failing: pupils / adult (canary.test), …` when some do not (a trust's dashboard
    /// shows it per site).
    pub fn summary(&self) -> String {
        let total = self.outcomes.len();
        let failing: Vec<String> = self
            .outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(Outcome::label)
            .collect();
        let mut words = match failing.len() {
            0 => format!("{total} of {total} checks pass"),
            n => format!("{n} of {total} checks fail"),
        };
        words.push_str(&format!(" at {}", crate::audit::rfc3339(self.at)));
        if !failing.is_empty() {
            words.push_str(&format!("; failing: {}", failing.join(", ")));
        }
        words
    }

    /// `ok` per (group, category): a pair passes only if every check of it passed.
    pub fn by_category(&self) -> Vec<(String, String, bool)> {
        let mut pairs: BTreeMap<(String, String), bool> = BTreeMap::new();
        for o in &self.outcomes {
            *pairs
                .entry((o.group.clone(), o.category.clone()))
                .or_insert(true) &= o.ok;
        }
        pairs.into_iter().map(|((g, c), ok)| (g, c, ok)).collect()
    }
}
