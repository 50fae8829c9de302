//! A site in a trust's fleet (`[fleet]`): its sealed audit rows shipped to the trust's
//! central PostgreSQL, exactly once, off the query path ([`ship`]), into a store that
//! keeps each site's chain as shipped ([`central`]). DNS never depends on it: the site's
//! SQLite log is the buffer through any outage.

pub mod central;
pub mod connect;
pub mod edit;
mod error;
pub mod follow;
pub mod outcomes;
pub mod policy;
pub mod read;
pub mod retention;
pub mod ship;
pub mod verify;

pub use connect::Settings;
pub use error::FleetError;
