//! Line parsers: one per list syntax, and the per-line sniffing behind `format = "auto"`.
//!
//! A parser turns one line of text into zero or more [`ParsedRule`]s, or says why the
//! line was skipped. Nothing here fails the load: a bad line is a [`SkipReason`] that the
//! caller counts and reports with its position.
//!
//! Syntaxes understood (what each line becomes is written next to it):
//! - plain domains: `a.test` → a.test and its subdomains; `*.a.test` → the same (lists in
//!   this syntax mean "the domain and everything under it"; hagezi's wildcard and adblock
//!   files list identical name sets); `*.test` (a bare TLD) is refused.
//! - hosts: `0.0.0.0 a.test b.test # c` → a.test, b.test; `localhost` and friends are
//!   boilerplate and skipped.
//! - adblock: `||a.test^` → block; `@@||a.test^` → allow (exception); `$important` is the
//!   only modifier accepted; paths, other modifiers, regexes and cosmetic rules are skipped.
//! - dnsmasq: `address=/a.test/[ip|#]`, `server=/a.test/`, `local=/a.test/` → block (one
//!   rule per domain between the slashes); `server=/a.test/1.2.3.4` forwards, not blocks.
//! - unbound: `local-zone: "a.test." always_nxdomain` (and the other refusing types) →
//!   block; `transparent`-like types and `local-data:` are skipped.
//! - RPZ zone files: `a.test CNAME .`, `*.a.test CNAME .`, `CNAME *.`, `rpz-drop.`, local
//!   data (`A`, `AAAA`, …) → block; `CNAME rpz-passthru.` → allow; `$ORIGIN`/`$TTL`, SOA
//!   and NS records (also across parentheses) are directives.
//! - hashed: `sha256:<64 hex>` → the SHA-256 of a normalised name, for restricted lists.

use crate::name::{self, NameError};

/// How a list file is written (the `format` of a configured list).
pub use crate::config::Format;

/// The syntax a rule was written in: kept so the verdict can show the rule in the form
/// its list used, and because it decides whether the rule blocks or allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Syntax {
    Domain = 0,
    Wildcard,
    Hosts,
    Adblock,
    AdblockException,
    Dnsmasq,
    Unbound,
    Rpz,
    RpzPassthru,
    Hashed,
}

impl Syntax {
    /// Every syntax, indexed by its `u8` value.
    pub(crate) const ALL: [Syntax; 10] = [
        Syntax::Domain,
        Syntax::Wildcard,
        Syntax::Hosts,
        Syntax::Adblock,
        Syntax::AdblockException,
        Syntax::Dnsmasq,
        Syntax::Unbound,
        Syntax::Rpz,
        Syntax::RpzPassthru,
        Syntax::Hashed,
    ];

    /// Exceptions written inside a block list (`@@||x^`, `rpz-passthru.`) allow.
    pub(crate) fn is_exception(self) -> bool {
        matches!(self, Syntax::AdblockException | Syntax::RpzPassthru)
    }

    /// The rule in canonical form for `domain` (for hashed rules, the hash of `domain`).
    pub fn render(self, domain: &str) -> String {
        match self {
            Syntax::Domain => domain.to_string(),
            Syntax::Wildcard => format!("*.{domain}"),
            Syntax::Hosts => format!("0.0.0.0 {domain}"),
            Syntax::Adblock => format!("||{domain}^"),
            Syntax::AdblockException => format!("@@||{domain}^"),
            Syntax::Dnsmasq => format!("address=/{domain}/"),
            Syntax::Unbound => format!("local-zone: \"{domain}.\" always_nxdomain"),
            Syntax::Rpz => format!("{domain} CNAME ."),
            Syntax::RpzPassthru => format!("{domain} CNAME rpz-passthru."),
            Syntax::Hashed => format!("sha256:{}", hex::encode(sha256_of(domain))),
        }
    }
}

/// SHA-256 of a normalised name, as `sha256:` entries store it.
pub fn sha256_of(name: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes()).into()
}

/// What a rule matches: a normalised name, or the hash of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Name(String),
    Hash([u8; 32]),
}

/// One rule produced by a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRule {
    pub target: Target,
    pub syntax: Syntax,
}

/// Why a line produced no rule. Stable keys group the diagnostics in `lists stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    IpAddress,
    Url,
    InvalidName(&'static str),
    TldWildcard,
    SingleLabel,
    HostsBoilerplate,
    AdblockUnsupported,
    NotBlocking,
    BadHash,
    WrongFormat,
    Unrecognised,
    NotUtf8,
    /// Longer than [`crate::lists::MAX_LINE_BYTES`]: no list entry is that long, and
    /// keeping such a line whole would let one endless line take any amount of memory.
    LineTooLong,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::IpAddress => "IP address, not a name",
            SkipReason::Url => "URL, not a name",
            SkipReason::InvalidName(key) => key,
            SkipReason::TldWildcard => "wildcard over a whole TLD",
            SkipReason::SingleLabel => "single-label name (would block a TLD)",
            SkipReason::HostsBoilerplate => "hosts boilerplate (localhost etc.)",
            SkipReason::AdblockUnsupported => {
                "adblock rule not usable for DNS (path, modifier, regex or cosmetic)"
            }
            SkipReason::NotBlocking => "resolver directive that does not block",
            SkipReason::BadHash => "malformed sha256 entry",
            SkipReason::WrongFormat => "line does not fit the list's declared format",
            SkipReason::Unrecognised => "unrecognised line",
            SkipReason::NotUtf8 => "not valid UTF-8",
            SkipReason::LineTooLong => "line longer than 64 KiB",
        }
    }
}

impl From<NameError> for SkipReason {
    fn from(e: NameError) -> Self {
        SkipReason::InvalidName(e.reason_key())
    }
}

/// What one line held, filled in by [`LineParser::parse`]. Reused across lines so that
/// parsing a large list does not allocate per line beyond the rules it keeps.
#[derive(Debug, Default)]
pub struct LineOutcome {
    pub rules: Vec<ParsedRule>,
    pub skips: Vec<SkipReason>,
    /// A comment, blank line or directive: nothing to count as an error.
    pub ignorable: bool,
}

impl LineOutcome {
    fn clear(&mut self) {
        self.rules.clear();
        self.skips.clear();
        self.ignorable = false;
    }
    fn skip(&mut self, reason: SkipReason) {
        self.skips.push(reason);
    }
    fn push(&mut self, target: Target, syntax: Syntax) {
        self.rules.push(ParsedRule { target, syntax });
    }
}

/// Parses lines of one list; stateful only for zone files (`$ORIGIN`, parentheses).
#[derive(Debug)]
pub struct LineParser {
    format: Format,
    origin: Option<String>,
    in_parens: bool,
}

impl LineParser {
    pub fn new(format: Format) -> Self {
        LineParser {
            format,
            origin: None,
            in_parens: false,
        }
    }

    /// Parse one line (without its line terminator) into `out`.
    pub fn parse(&mut self, raw: &str, out: &mut LineOutcome) {
        out.clear();
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            out.ignorable = true;
            return;
        }
        if self.in_parens {
            // Inside a multi-line SOA record: nothing here is a rule.
            if strip_zone_comment(line).contains(')') {
                self.in_parens = false;
            }
            out.ignorable = true;
            return;
        }
        let syntax = match self.format {
            Format::Auto => sniff(line),
            Format::Hosts => LineKind::Hosts,
            Format::Domains => LineKind::Domain,
            Format::Adblock => LineKind::Adblock,
            Format::Dnsmasq => LineKind::Dnsmasq,
            Format::Unbound => LineKind::Unbound,
            Format::Rpz => LineKind::Rpz,
            Format::Hashed => LineKind::Hashed,
        };
        // Comment syntax depends on the format: `#` starts dnsmasq's `address=/x/#`
        // target, `!` is adblock's comment, `;` is the zone-file one.
        let is_comment = match syntax {
            LineKind::Comment => true,
            LineKind::Adblock => {
                line.starts_with('!')
                    || line.starts_with('[')
                    || (line.starts_with('#') && !is_cosmetic(line))
            }
            LineKind::Rpz => line.starts_with(';') || line.starts_with('#'),
            _ => line.starts_with('#'),
        };
        if is_comment {
            out.ignorable = true;
            return;
        }
        match syntax {
            LineKind::Comment => out.ignorable = true,
            LineKind::Domain => parse_domain_line(strip_inline_comment(line), out),
            LineKind::Hosts => parse_hosts_line(strip_inline_comment(line), out),
            LineKind::Adblock => parse_adblock_line(line, out),
            LineKind::Dnsmasq => parse_dnsmasq_line(strip_inline_comment(line), out),
            LineKind::Unbound => parse_unbound_line(strip_inline_comment(line), out),
            LineKind::Rpz => self.parse_rpz_line(strip_zone_comment(line), out),
            LineKind::Hashed => parse_hashed_line(strip_inline_comment(line), out),
        }
    }

    fn parse_rpz_line(&mut self, line: &str, out: &mut LineOutcome) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(&owner) = tokens.first() else {
            out.ignorable = true;
            return;
        };
        if owner.starts_with('$') {
            self.rpz_directive(&tokens);
            out.ignorable = true;
            return;
        }
        // owner [ttl] [class] type rdata...
        let mut rest = tokens[1..]
            .iter()
            .copied()
            .skip_while(|tok| tok.chars().all(|c| c.is_ascii_digit()) || is_class(tok));
        let Some(rtype) = rest.next() else {
            out.skip(SkipReason::WrongFormat);
            return;
        };
        let rtype = rtype.to_ascii_uppercase();
        if rtype == "SOA" || rtype == "NS" {
            if line.contains('(') && !line.contains(')') {
                self.in_parens = true;
            }
            out.ignorable = true;
            return;
        }
        if owner == "@" {
            out.ignorable = true;
            return;
        }
        if !is_rr_type(&rtype) {
            out.skip(SkipReason::WrongFormat);
            return;
        }
        let syntax = match rpz_action(&rtype, rest.next().unwrap_or("")) {
            Ok(syntax) => syntax,
            Err(reason) => {
                out.skip(reason);
                return;
            }
        };
        let relative = self.relative_owner(owner);
        if [".rpz-ip", ".rpz-nsdname", ".rpz-nsip", ".rpz-client-ip"]
            .iter()
            .any(|t| relative.ends_with(t))
        {
            out.skip(SkipReason::NotBlocking);
            return;
        }
        match domain_token(&relative) {
            Ok((name, _)) => out.push(Target::Name(name), syntax),
            Err(reason) => out.skip(reason),
        }
    }

    /// A zone file directive: `$ORIGIN` sets the origin of the owners that follow;
    /// the others (`$TTL`, `$INCLUDE`, which is not followed) change nothing here.
    fn rpz_directive(&mut self, tokens: &[&str]) {
        if tokens[0].eq_ignore_ascii_case("$ORIGIN") {
            self.origin = tokens
                .get(1)
                .map(|o| o.trim_end_matches('.').to_ascii_lowercase());
        }
    }

    /// An RPZ owner name relative to the zone: an absolute owner loses the `$ORIGIN`.
    fn relative_owner(&self, owner: &str) -> String {
        let owner = owner.to_ascii_lowercase();
        match owner.strip_suffix('.') {
            Some(absolute) => match &self.origin {
                Some(origin) => absolute
                    .strip_suffix(origin.as_str())
                    .and_then(|s| s.strip_suffix('.'))
                    .unwrap_or(absolute)
                    .to_string(),
                None => absolute.to_string(),
            },
            None => owner,
        }
    }
}

/// What an RPZ record of type `rtype` (upper case) with `rdata` does to its owner: a
/// block (any local data redirects the name, and so does a walled-garden CNAME), an
/// exception (`rpz-passthru.`), or nothing a DNS filter can do (`rpz-tcp-only.`).
fn rpz_action(rtype: &str, rdata: &str) -> Result<Syntax, SkipReason> {
    if rtype != "CNAME" {
        return Ok(Syntax::Rpz); // local data: the name is answered locally, i.e. redirected
    }
    match rdata.to_ascii_lowercase().as_str() {
        "." | "*." | "rpz-drop." => Ok(Syntax::Rpz),
        "rpz-passthru." => Ok(Syntax::RpzPassthru),
        "rpz-tcp-only." => Err(SkipReason::NotBlocking),
        _ => Ok(Syntax::Rpz), // a walled-garden redirect is still a block
    }
}

/// What a line looks like, for `format = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Comment,
    Domain,
    Hosts,
    Adblock,
    Dnsmasq,
    Unbound,
    Rpz,
    Hashed,
}

fn sniff(line: &str) -> LineKind {
    if line.starts_with('#') {
        return if is_cosmetic(line) {
            LineKind::Adblock
        } else {
            LineKind::Comment
        };
    }
    if line.starts_with(';') {
        return LineKind::Comment;
    }
    if line.starts_with('!') || line.starts_with('[') {
        return LineKind::Adblock;
    }
    if starts_with_ignore_case(line, "sha256:") {
        return LineKind::Hashed;
    }
    if line.starts_with('|') || line.starts_with("@@") || line.starts_with('/') {
        return LineKind::Adblock;
    }
    if ["address=", "server=/", "local=/"]
        .iter()
        .any(|p| line.starts_with(p))
    {
        return LineKind::Dnsmasq;
    }
    if line.starts_with('$') {
        return LineKind::Rpz;
    }
    let content = strip_inline_comment(line);
    let mut tokens = content.split_whitespace();
    let first = tokens.next().unwrap_or("");
    let rest: Vec<&str> = tokens.take(3).collect();
    // An address first (`::` ends in a colon too) makes a hosts line.
    if !rest.is_empty() && name::is_ip_address(first) {
        return LineKind::Hosts;
    }
    if first.ends_with(':') && first.len() > 1 {
        return LineKind::Unbound;
    }
    if rest.is_empty() {
        return if content.contains("##") || content.contains("#@#") {
            LineKind::Adblock
        } else {
            LineKind::Domain
        };
    }
    if rest.iter().any(|t| is_rr_type(&t.to_ascii_uppercase())) {
        return LineKind::Rpz;
    }
    LineKind::Domain // several words with no structure: the domain parser says why not
}

fn is_cosmetic(line: &str) -> bool {
    ["##", "#@#", "#?#", "#$#", "#%#"]
        .iter()
        .any(|m| line.contains(m))
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn is_class(tok: &str) -> bool {
    matches!(tok.to_ascii_uppercase().as_str(), "IN" | "CH" | "HS")
}

fn is_rr_type(upper: &str) -> bool {
    matches!(
        upper,
        "CNAME" | "A" | "AAAA" | "TXT" | "MX" | "SOA" | "NS" | "PTR" | "SRV" | "HTTPS" | "SVCB"
    )
}

/// Remove a trailing `# comment` that follows whitespace (so `address=/x/#` survives).
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'#' && bytes[i - 1].is_ascii_whitespace() {
            return line[..i].trim_end();
        }
    }
    line
}

fn strip_zone_comment(line: &str) -> &str {
    match line.find(';') {
        Some(i) => line[..i].trim_end(),
        None => line,
    }
}

/// Interpret one token as a list entry: `*.` prefix, IP and URL checks, normalisation,
/// and the refusal of single labels. Returns the name and whether it was a wildcard.
fn domain_token(token: &str) -> Result<(String, bool), SkipReason> {
    let (body, wildcard) = match token.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (token, false),
    };
    if token.contains("://") || body.contains('/') {
        return Err(SkipReason::Url);
    }
    if name::is_ip_address(body) || name::is_ip_address(body.trim_matches(['[', ']'])) {
        return Err(SkipReason::IpAddress);
    }
    let normalised = name::normalize(body)?;
    if !normalised.contains('.') {
        return Err(if wildcard {
            SkipReason::TldWildcard
        } else {
            SkipReason::SingleLabel
        });
    }
    Ok((normalised, wildcard))
}

fn parse_domain_line(line: &str, out: &mut LineOutcome) {
    let mut tokens = line.split_whitespace();
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        out.skip(SkipReason::Unrecognised);
        return;
    };
    match domain_token(token) {
        Ok((name, wildcard)) => {
            let syntax = if wildcard {
                Syntax::Wildcard
            } else {
                Syntax::Domain
            };
            out.push(Target::Name(name), syntax);
        }
        Err(reason) => out.skip(reason),
    }
}

/// Names that hosts files carry for the machine itself, never as blocks.
const HOSTS_BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

fn parse_hosts_line(line: &str, out: &mut LineOutcome) {
    let mut tokens = line.split_whitespace();
    let ip = tokens.next().unwrap_or("");
    if !name::is_ip_address(ip) {
        out.skip(SkipReason::WrongFormat);
        return;
    }
    let mut any = false;
    for token in tokens {
        any = true;
        if HOSTS_BOILERPLATE.contains(&token.to_ascii_lowercase().as_str()) {
            out.skip(SkipReason::HostsBoilerplate);
            continue;
        }
        match domain_token(token) {
            Ok((name, _)) => out.push(Target::Name(name), Syntax::Hosts),
            Err(reason) => out.skip(reason),
        }
    }
    if !any {
        out.skip(SkipReason::WrongFormat);
    }
}

fn parse_adblock_line(line: &str, out: &mut LineOutcome) {
    let (body, exception) = match line.strip_prefix("@@") {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    if is_cosmetic(body) || body.starts_with('/') {
        out.skip(SkipReason::AdblockUnsupported);
        return;
    }
    let Some(rest) = body.strip_prefix("||") else {
        // A bare domain in an adblock list blocks like a domain-list line.
        if !exception && !body.contains(['^', '$', '|']) {
            parse_domain_line(body, out);
        } else {
            out.skip(SkipReason::AdblockUnsupported);
        }
        return;
    };
    let (pattern, modifiers) = match rest.split_once('$') {
        Some((p, m)) => (p, Some(m)),
        None => (rest, None),
    };
    if let Some(modifiers) = modifiers {
        if !modifiers
            .split(',')
            .all(|m| m.trim().eq_ignore_ascii_case("important"))
        {
            out.skip(SkipReason::AdblockUnsupported);
            return;
        }
    }
    let domain = pattern
        .strip_suffix("^|")
        .or_else(|| pattern.strip_suffix('^'))
        .unwrap_or(pattern);
    if domain.contains(['/', '^', '*', '|', '?', '=']) {
        out.skip(SkipReason::AdblockUnsupported);
        return;
    }
    match domain_token(domain) {
        Ok((name, _)) => {
            let syntax = if exception {
                Syntax::AdblockException
            } else {
                Syntax::Adblock
            };
            out.push(Target::Name(name), syntax);
        }
        Err(reason) => out.skip(reason),
    }
}

fn parse_dnsmasq_line(line: &str, out: &mut LineOutcome) {
    let Some((key, value)) = line.split_once('=') else {
        out.skip(SkipReason::WrongFormat);
        return;
    };
    let key = key.trim();
    if !matches!(key, "address" | "server" | "local") {
        out.skip(SkipReason::NotBlocking);
        return;
    }
    let Some(value) = value.trim().strip_prefix('/') else {
        out.skip(SkipReason::WrongFormat);
        return;
    };
    let mut parts: Vec<&str> = value.split('/').collect();
    let target = parts.pop().unwrap_or("");
    if parts.is_empty() {
        out.skip(SkipReason::WrongFormat);
        return;
    }
    // `server=/x/1.2.3.4` sends x to another resolver: routing, not blocking.
    if key != "address" && !target.is_empty() {
        out.skip(SkipReason::NotBlocking);
        return;
    }
    for domain in parts {
        if domain == "#" || domain.is_empty() {
            out.skip(SkipReason::TldWildcard);
            continue;
        }
        match domain_token(domain.trim_start_matches('.')) {
            Ok((name, _)) => out.push(Target::Name(name), Syntax::Dnsmasq),
            Err(reason) => out.skip(reason),
        }
    }
}

fn parse_unbound_line(line: &str, out: &mut LineOutcome) {
    let Some((key, value)) = line.split_once(':') else {
        out.skip(SkipReason::WrongFormat);
        return;
    };
    match key.trim() {
        "server" | "remote-control" | "forward-zone" | "stub-zone" => {
            out.ignorable = true;
        }
        "local-zone" => {
            let mut tokens = value.split_whitespace();
            let zone = tokens.next().unwrap_or("").trim_matches('"');
            let zone_type = tokens.next().unwrap_or("");
            let blocks = matches!(
                zone_type,
                "deny"
                    | "refuse"
                    | "static"
                    | "redirect"
                    | "always_nxdomain"
                    | "always_refuse"
                    | "always_null"
                    | "always_deny"
                    | "inform_deny"
                    | "inform_redirect"
            );
            if !blocks {
                out.skip(SkipReason::NotBlocking);
                return;
            }
            match domain_token(zone) {
                Ok((name, _)) => out.push(Target::Name(name), Syntax::Unbound),
                Err(reason) => out.skip(reason),
            }
        }
        _ => out.skip(SkipReason::NotBlocking),
    }
}

fn parse_hashed_line(line: &str, out: &mut LineOutcome) {
    let Some(hex_text) = line
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sha256:"))
        .map(|_| line[7..].trim())
    else {
        out.skip(SkipReason::WrongFormat);
        return;
    };
    let mut hash = [0u8; 32];
    if hex_text.len() != 64 || hex::decode_to_slice(hex_text, &mut hash).is_err() {
        out.skip(SkipReason::BadHash);
        return;
    }
    out.push(Target::Hash(hash), Syntax::Hashed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: Format, lines: &[&str]) -> Vec<(Vec<ParsedRule>, Vec<SkipReason>, bool)> {
        let mut parser = LineParser::new(format);
        let mut out = LineOutcome::default();
        lines
            .iter()
            .map(|l| {
                parser.parse(l, &mut out);
                (out.rules.clone(), out.skips.clone(), out.ignorable)
            })
            .collect()
    }

    fn names(format: Format, line: &str) -> Vec<String> {
        parse(format, &[line])[0]
            .0
            .iter()
            .map(|r| match &r.target {
                Target::Name(n) => n.clone(),
                Target::Hash(h) => hex::encode(h),
            })
            .collect()
    }

    #[test]
    fn explicit_formats_refuse_other_syntaxes() {
        assert_eq!(
            parse(Format::Hosts, &["a.test"])[0].1,
            vec![SkipReason::WrongFormat]
        );
        assert_eq!(
            parse(Format::Hashed, &["a.test"])[0].1,
            vec![SkipReason::WrongFormat]
        );
        assert_eq!(names(Format::Domains, "a.test"), vec!["a.test"]);
    }

    #[test]
    fn dnsmasq_forms() {
        assert_eq!(
            names(Format::Auto, "address=/a.test/0.0.0.0"),
            vec!["a.test"]
        );
        assert_eq!(names(Format::Auto, "address=/a.test/"), vec!["a.test"]);
        assert_eq!(names(Format::Auto, "address=/a.test/#"), vec!["a.test"]);
        assert_eq!(names(Format::Auto, "server=/a.test/"), vec!["a.test"]);
        assert_eq!(
            names(Format::Auto, "local=/a.test/b.test/"),
            vec!["a.test", "b.test"]
        );
        assert_eq!(
            parse(Format::Auto, &["server=/a.test/1.2.3.4"])[0].1,
            vec![SkipReason::NotBlocking]
        );
    }

    #[test]
    fn rpz_origin_and_soa_parentheses() {
        let lines = [
            "$ORIGIN rpz.local.",
            "@ IN SOA ns. host. (",
            "  1 ; serial",
            "  3600 )",
            "a.test.rpz.local. CNAME .",
            "b.test 300 IN CNAME rpz-passthru.",
            "*.c.test CNAME *.",
            "d.test A 10.0.0.1",
        ];
        let got = parse(Format::Rpz, &lines);
        assert!(got[..4]
            .iter()
            .all(|(r, s, ign)| r.is_empty() && s.is_empty() && *ign));
        assert_eq!(got[4].0[0].target, Target::Name("a.test".into()));
        assert_eq!(got[5].0[0].syntax, Syntax::RpzPassthru);
        assert_eq!(got[6].0[0].target, Target::Name("c.test".into()));
        assert_eq!(got[7].0[0].syntax, Syntax::Rpz);
    }

    #[test]
    fn hashed_entries_decode() {
        let hash = sha256_of("a.test");
        let line = format!("sha256:{}", hex::encode_upper(hash));
        assert_eq!(
            parse(Format::Auto, &[&line])[0].0[0].target,
            Target::Hash(hash)
        );
        assert_eq!(
            parse(Format::Auto, &["sha256:abcd"])[0].1,
            vec![SkipReason::BadHash]
        );
    }

    #[test]
    fn renders_rules_in_their_syntax() {
        assert_eq!(Syntax::Adblock.render("a.test"), "||a.test^");
        assert_eq!(Syntax::Wildcard.render("a.test"), "*.a.test");
        assert!(Syntax::Hashed.render("a.test").starts_with("sha256:"));
    }
}
