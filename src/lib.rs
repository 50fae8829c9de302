//! # Warden: a content-filtering DNS proxy for safeguarding
//!
//! A school, charity or youth service points its LAN's DNS at Warden. Every lookup is
//! answered: names on the organisation's categorised blocklists are blocked, everything
//! else is resolved upstream, and every block is recorded for the e-safety lead.
//!
//! ## How the pieces fit
//! - [`config`] reads the TOML file and validates it (errors name `file:line`).
//! - [`lists`] reads list files (hosts, plain, adblock, dnsmasq, unbound, RPZ, hashed;
//!   gzip or not) into rules, reporting every skipped line with its position.
//! - [`filter`] compiles the rules of all lists into one immutable [`filter::Matcher`]:
//!   a finite state transducer over reversed names, answering "is this name blocked for
//!   these categories, and by which rule?" without allocating.
//! - [`engine`] bundles config + matcher + per-group category sets into one snapshot.
//!   Everything a query reads lives in that snapshot; a reload builds a new one off the
//!   query path and swaps it in atomically.
//! - [`cli`] is the command line (`serve`, `check`, `lists stats`, `config check`).
//!
//! ## One query's path
//! 1. normalise the name once ([`name::normalize_into`]: lower case, no trailing dot);
//! 2. find the client's group and its active categories (locked ones always on);
//! 3. [`filter::Matcher::lookup`] → allowed, or blocked with categories and rule;
//! 4. blocked: answer locally; allowed: forward upstream.

pub mod cli;
pub mod config;
pub mod engine;
pub mod filter;
pub mod lists;
pub mod name;
