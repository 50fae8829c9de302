//! Safe search: the names of Google, Bing, DuckDuckGo and YouTube that are answered with
//! a CNAME to the provider's enforced-safe-search host (plus that host's addresses), so
//! every client OS and browser accepts the answer.
//!
//! Google publishes the domains its search runs on (`google.com/supported_domains`);
//! each is rewritten with and without `www.`. Sources: Google's "Lock SafeSearch for
//! devices and networks", Bing's "Block adult content with SafeSearch" (strict.bing.com),
//! DuckDuckGo's safe-search DNS help (safe.duckduckgo.com), and Google's "Restrict
//! YouTube content on your network" for the five YouTube names.

use crate::config::YouTubeMode;

/// Google's search domains (from google.com/supported_domains), without `www.`.
const GOOGLE: &[&str] = &[
    "google.com",
    "google.ad",
    "google.ae",
    "google.com.af",
    "google.com.ag",
    "google.al",
    "google.am",
    "google.co.ao",
    "google.com.ar",
    "google.as",
    "google.at",
    "google.com.au",
    "google.az",
    "google.ba",
    "google.com.bd",
    "google.be",
    "google.bf",
    "google.bg",
    "google.com.bh",
    "google.bi",
    "google.bj",
    "google.com.bn",
    "google.com.bo",
    "google.com.br",
    "google.bs",
    "google.bt",
    "google.co.bw",
    "google.by",
    "google.com.bz",
    "google.ca",
    "google.cd",
    "google.cf",
    "google.cg",
    "google.ch",
    "google.ci",
    "google.co.ck",
    "google.cl",
    "google.cm",
    "google.cn",
    "google.com.co",
    "google.co.cr",
    "google.com.cu",
    "google.cv",
    "google.com.cy",
    "google.cz",
    "google.de",
    "google.dj",
    "google.dk",
    "google.dm",
    "google.com.do",
    "google.dz",
    "google.com.ec",
    "google.ee",
    "google.com.eg",
    "google.es",
    "google.com.et",
    "google.fi",
    "google.com.fj",
    "google.fm",
    "google.fr",
    "google.ga",
    "google.ge",
    "google.gg",
    "google.com.gh",
    "google.com.gi",
    "google.gl",
    "google.gm",
    "google.gr",
    "google.com.gt",
    "google.gy",
    "google.com.hk",
    "google.hn",
    "google.hr",
    "google.ht",
    "google.hu",
    "google.co.id",
    "google.ie",
    "google.co.il",
    "google.im",
    "google.co.in",
    "google.iq",
    "google.is",
    "google.it",
    "google.je",
    "google.com.jm",
    "google.jo",
    "google.co.jp",
    "google.co.ke",
    "google.com.kh",
    "google.ki",
    "google.kg",
    "google.co.kr",
    "google.com.kw",
    "google.kz",
    "google.la",
    "google.com.lb",
    "google.li",
    "google.lk",
    "google.co.ls",
    "google.lt",
    "google.lu",
    "google.lv",
    "google.com.ly",
    "google.co.ma",
    "google.md",
    "google.me",
    "google.mg",
    "google.mk",
    "google.ml",
    "google.com.mm",
    "google.mn",
    "google.com.mt",
    "google.mu",
    "google.mv",
    "google.mw",
    "google.com.mx",
    "google.com.my",
    "google.co.mz",
    "google.com.na",
    "google.com.ng",
    "google.com.ni",
    "google.ne",
    "google.nl",
    "google.no",
    "google.com.np",
    "google.nr",
    "google.nu",
    "google.co.nz",
    "google.com.om",
    "google.com.pa",
    "google.com.pe",
    "google.com.pg",
    "google.com.ph",
    "google.com.pk",
    "google.pl",
    "google.pn",
    "google.com.pr",
    "google.ps",
    "google.pt",
    "google.com.py",
    "google.com.qa",
    "google.ro",
    "google.ru",
    "google.rw",
    "google.com.sa",
    "google.com.sb",
    "google.sc",
    "google.se",
    "google.com.sg",
    "google.sh",
    "google.si",
    "google.sk",
    "google.com.sl",
    "google.sn",
    "google.so",
    "google.sm",
    "google.sr",
    "google.st",
    "google.com.sv",
    "google.td",
    "google.tg",
    "google.co.th",
    "google.com.tj",
    "google.tl",
    "google.tm",
    "google.tn",
    "google.to",
    "google.com.tr",
    "google.tt",
    "google.com.tw",
    "google.co.tz",
    "google.com.ua",
    "google.co.ug",
    "google.co.uk",
    "google.com.uy",
    "google.co.uz",
    "google.com.vc",
    "google.co.ve",
    "google.co.vi",
    "google.com.vn",
    "google.vu",
    "google.ws",
    "google.rs",
    "google.co.za",
    "google.co.zm",
    "google.co.zw",
    "google.cat",
];

const YOUTUBE: &[&str] = &[
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
];

/// The safe-search host to answer for `name` (normalised), if the group's settings
/// rewrite it.
pub fn target(name: &str, safe_search: bool, youtube: YouTubeMode) -> Option<&'static str> {
    if youtube != YouTubeMode::Off && YOUTUBE.contains(&name) {
        return Some(match youtube {
            YouTubeMode::Strict => "restrict.youtube.com",
            _ => "restrictmoderate.youtube.com",
        });
    }
    if !safe_search {
        return None;
    }
    let bare = name.strip_prefix("www.").unwrap_or(name);
    match bare {
        "bing.com" => Some("strict.bing.com"),
        "duckduckgo.com" | "start.duckduckgo.com" => Some("safe.duckduckgo.com"),
        _ if GOOGLE.contains(&bare) => Some("forcesafesearch.google.com"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_by_setting() {
        let t = |n| target(n, true, YouTubeMode::Strict);
        assert_eq!(t("www.google.com"), Some("forcesafesearch.google.com"));
        assert_eq!(t("google.co.uk"), Some("forcesafesearch.google.com"));
        assert_eq!(t("www.google.com.au"), Some("forcesafesearch.google.com"));
        assert_eq!(t("www.bing.com"), Some("strict.bing.com"));
        assert_eq!(t("duckduckgo.com"), Some("safe.duckduckgo.com"));
        assert_eq!(t("m.youtube.com"), Some("restrict.youtube.com"));
        assert_eq!(
            target("youtubei.googleapis.com", false, YouTubeMode::Moderate),
            Some("restrictmoderate.youtube.com")
        );
        // Not search front doors, or not asked for.
        assert_eq!(t("mail.google.com"), None);
        assert_eq!(t("google.evil.test"), None);
        assert_eq!(t("forcesafesearch.google.com"), None);
        assert_eq!(target("www.google.com", false, YouTubeMode::Strict), None);
        assert_eq!(target("www.youtube.com", true, YouTubeMode::Off), None);
        assert_eq!(GOOGLE.len(), 187);
    }
}
