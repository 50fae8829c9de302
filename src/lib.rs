//! # Warden: a content-filtering DNS proxy for safeguarding
//!
//! A school, charity or youth service points its LAN's DNS at Warden. Every lookup is
//! answered: names on the organisation's categorised blocklists are blocked, everything
//! else is resolved upstream, and every block is recorded for the e-safety lead.
//!
//! ## How the pieces fit
//! The modules form a graph without cycles (`tests/module_graph.rs` checks it), with
//! [`config`] at the bottom.
//! - [`config`] reads the TOML file into typed data, one file per section: each value is
//!   parsed once into its real type (networks, time zone, times of day, upstream servers,
//!   URLs, bounded durations) and every error names `file:line` and the field. It imports
//!   nothing from the modules below, which take its typed values as they are.
//! - [`lists`] reads list files (hosts, plain, adblock, dnsmasq, unbound, RPZ, hashed;
//!   gzip or not) into rules, reporting every skipped line with its position.
//! - [`filter`] compiles the rules of all lists into one immutable [`filter::Matcher`]:
//!   a reversed-label trie whose nodes are keyed hashes of their label paths, in a
//!   cache-friendly table, answering "is this name blocked for these categories, and by
//!   which rule?" without allocating. The big lists form a base matcher that reloads
//!   share while none of them changes, the small ones an overlay rebuilt by every
//!   reload; [`filter::Layers`] consults both with one matcher's verdicts.
//! - [`engine`] bundles config + matcher + per-group category sets into one snapshot.
//!   Everything a query reads lives in that snapshot; a reload builds a new one off the
//!   query path and swaps it in atomically.
//! - [`dns`] is the query handler (the query path below) and the UDP/TCP listeners: UDP
//!   reads ordinary queries straight from the packet and answers refusals, blocks and
//!   cached answers inside its receive loop; the work they spawn is tracked
//!   ([`dns::tasks`]) so that a stop drains it (at most 2 s) before the audit log is
//!   sealed; [`upstream`] forwards allowed queries through `hickory-resolver`. DNS over
//!   TLS ([`dns::dot`]) and over HTTPS ([`dns::doh`]) take their queries through the
//!   same handler, with a device ID that chooses an enrolled device's group anywhere;
//!   [`tls`] keeps their certificate (the admin's files, re-read on renewal, or a
//!   self-signed one).
//! - [`audit`] records every block for the e-safety lead: coalesced in memory on the
//!   query path, written to SQLite by its own thread, hash-chained, purged on schedule.
//! - [`alerts`] tells the e-safety lead at once (webhook, email) about blocks in the
//!   categories that alert, reading the audit log off the query path, rate-limited per
//!   device and category, retried until delivered.
//! - [`fleet`] ships a site's sealed audit log to the trust's central PostgreSQL, exactly
//!   once and off the query path, and brings back the reviews written centrally; the
//!   trust's dashboard reads every site's rows through [`fleet::read`], each lead scoped
//!   to their sites, and [`fleet::retention`] purges them by the same rules as a site.
//! - [`policy`] says who is asking and what applies to them: client address → group and
//!   device name, the group's categories at this minute (schedules), safe-search
//!   rewrites and the built-in circumvention answers.
//! - [`reload`] rebuilds the snapshot on SIGHUP, a file change or `POST /reload` and
//!   swaps it in, refusing snapshots that fail to build or in which a list shrank
//!   suspiciously, and brings what was built from the config at start-up along (the
//!   forwarder, the TCP limits); [`restart`] names the settings only a restart applies,
//!   which a reload reports; [`sources`] downloads `url` lists into a last-good cache;
//!   [`memory`] hands each build's scratch memory back to the operating system.
//! - [`admin`] is the HTTP listener for [`metrics`] (Prometheus), health and reload;
//!   [`dashboard`] adds the e-safety lead's pages to it (sign-in, overview, events,
//!   reviews, CSV export, allow entries); [`blockpage`] tells a blocked user why.
//! - [`selftest`] checks, every few minutes and on demand, that each group's categories,
//!   safe search and circumvention answers are filtered as configured, by asking the
//!   DNS listener itself with a marker only this process can set; a new failure alerts.
//! - `localtime` shows stored UTC times in `[server] timezone` with their offset;
//!   `sync` holds the one poison-tolerant lock helper.
//! - [`serve`] wires a running daemon together in start-up order (and stops it in
//!   order: DNS drains, alerts save their cursor, the audit log is flushed); [`cli`] is the
//!   command line (`serve`, `check`, `lists stats|update`, `config check`, `reload`,
//!   `audit verify|list|summary|export|review`, `user add|remove|list`, `fleet
//!   verify|serve`); [`users`] edits the dashboard's `[[users]]` in the config file;
//!   [`serve_fleet`] runs the trust's dashboard over the central store, without DNS.
//!
//! ## One query's path ([`dns::Handler::answer_now`] over UDP, [`dns::Handler::resolve`] otherwise)
//! 0. the client must be in `[server] allow_networks` and within its rate limit;
//! 1. check the request: a standard query, one IN question (else NOTIMP/FORMERR/REFUSED);
//! 2. normalise the name once into the matcher's key form ([`name::key`]: lower case,
//!    any bytes kept, so an odd label still sits under its listed parents);
//! 3. find the client's group and its active categories (locked ones always on): with
//!    the name and the snapshot, one [`dns`] query context that the later stages share;
//! 4. the built-in circumvention names (DoH canary, Private Relay, DDR) get their answers;
//! 5. [`filter::Matcher::lookup`] (then the group's own allow and deny lists): blocked →
//!    answer locally in the configured mode, with an Extended DNS Error saying why, and
//!    record the block for the audit log;
//! 6. safe search: the search engine's safe host, as a CNAME;
//! 7. over UDP, an allowed answer kept in the answer cache ([`dns::cache`]) is sent as
//!    stored, patched for this asker; otherwise a task takes over
//!    ([`dns::Handler::answer_later`]);
//! 8. allowed → forward upstream ([`upstream::Forwarder`]: cache, in-flight sharing,
//!    failover, timeout, serve-stale);
//! 9. check the answer's CNAME chain against the matcher, so no listed name hides
//!    behind an allowed alias;
//! 10. DNS rebinding protection ([`policy::rebinding`]): a public name answered with a
//!     private, loopback or link-local address is blocked.

// The tour above links the crate's private modules too: read it with
// `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
pub mod alerts;
pub mod audit;
mod blockpage;
pub mod cli;
mod cli_args;
mod cli_daemon;
mod cli_device;
mod cli_policy;
mod cli_report;
mod cli_selftest;
pub mod config;
mod config_edit;
pub mod config_history;
pub mod dashboard;
mod devices;
pub mod dns;
pub mod engine;
pub mod filter;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod lists;
pub(crate) mod localtime;
pub mod memory;
pub mod metrics;
pub mod name;
pub(crate) mod policy;
mod profiles;
pub mod reload;
pub mod report;
pub mod requests;
mod restart;
pub mod secret;
pub mod selftest;
mod serve;
mod serve_fleet;
mod sources;
pub(crate) mod sync;
pub mod tls;
pub mod upstream;
mod users;
