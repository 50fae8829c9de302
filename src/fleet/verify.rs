//! `warden fleet verify`: the promise `audit verify` makes on a site, made centrally. For
//! each site, its rows are walked in chain order from the first: no position missing, none
//! whose hash does not follow from the row before it (an edited row), and the last one
//! the head the site last reported (rows cut off the end). The rows are read a page at a
//! time, so a year of 50 sites is walked in bounded memory.

use tokio_postgres::Client;

use super::connect::Settings;
use super::FleetError;
use crate::audit::outbox::{genesis, SealedRow};

/// Rows read per page of the walk.
const PAGE: i64 = 5_000;

/// What the walk found for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteVerdict {
    pub site: String,
    /// Rows walked.
    pub rows: u64,
    /// `None`: intact. Otherwise the first problem, naming the row.
    pub problem: Option<String>,
}

/// Walk every site's chain.
pub async fn verify(client: &Client, settings: &Settings) -> Result<Vec<SiteVerdict>, FleetError> {
    let failed = |e| settings.database_error(e);
    let sites = client
        .query(
            "SELECT site, head_seq, head_hash FROM sites ORDER BY site",
            &[],
        )
        .await
        .map_err(failed)?;
    let mut verdicts = Vec::with_capacity(sites.len());
    for site in sites {
        let (name, head_seq, head_hash): (String, i64, String) =
            (site.get(0), site.get(1), site.get(2));
        verdicts.push(walk(client, settings, name, head_seq, &head_hash).await?);
    }
    Ok(verdicts)
}

async fn walk(
    client: &Client,
    settings: &Settings,
    site: String,
    head_seq: i64,
    head_hash: &str,
) -> Result<SiteVerdict, FleetError> {
    let mut verdict = SiteVerdict {
        site,
        rows: 0,
        problem: None,
    };
    let mut previous = genesis();
    let mut expected = 1i64;
    loop {
        let page = read_page(client, settings, &verdict.site, expected - 1).await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            if let Some(problem) = check(row, expected, &previous) {
                verdict.problem = Some(problem);
                return Ok(verdict);
            }
            previous = row.hash.clone();
            expected += 1;
            verdict.rows += 1;
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    let walked = expected - 1;
    if walked != head_seq || (walked > 0 && previous != head_hash) {
        verdict.problem = Some(format!(
            "the chain ends at seq {walked}, but the site last reported seq {head_seq}: \
             rows were deleted from the end"
        ));
    }
    Ok(verdict)
}

/// The first problem with `row`, expected at position `expected` after `previous`.
fn check(row: &SealedRow, expected: i64, previous: &str) -> Option<String> {
    if row.seq != expected {
        return Some(format!(
            "seq {expected} is missing (the next row held is seq {}): a row was deleted",
            row.seq
        ));
    }
    if !row.follows(previous) {
        return Some(format!(
            "seq {} (local id {}) does not match its hash: the row was changed",
            row.seq, row.id
        ));
    }
    None
}

async fn read_page(
    client: &Client,
    settings: &Settings,
    site: &str,
    after: i64,
) -> Result<Vec<SealedRow>, FleetError> {
    let rows = client
        .query(
            "SELECT local_id, seq, first_seen, last_seen, count, client_ip, device, grp, name, \
             qtype, categories, locked, list, line, rule, response, cname, outcome, salt, \
             personal, hash, purged, mac, user_name, sources FROM events WHERE site = $1 \
             AND seq > $2 \
             ORDER BY seq LIMIT $3",
            &[&site, &after, &PAGE],
        )
        .await
        .map_err(|e| settings.database_error(e))?;
    rows.iter()
        .map(|r| {
            Ok(SealedRow {
                id: r.try_get(0)?,
                seq: r.try_get(1)?,
                first_seen: r.try_get(2)?,
                last_seen: r.try_get(3)?,
                count: r.try_get(4)?,
                client_ip: r.try_get(5)?,
                device: r.try_get(6)?,
                grp: r.try_get(7)?,
                name: r.try_get(8)?,
                qtype: r.try_get(9)?,
                categories: r.try_get(10)?,
                locked: r.try_get(11)?,
                list: r.try_get(12)?,
                line: r.try_get(13)?,
                rule: r.try_get(14)?,
                response: r.try_get(15)?,
                cname: r.try_get(16)?,
                outcome: r.try_get(17)?,
                salt: r.try_get(18)?,
                personal: r.try_get(19)?,
                hash: r.try_get(20)?,
                purged: r.try_get(21)?,
                mac: r.try_get(22)?,
                user_name: r.try_get(23)?,
                sources: r.try_get(24)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(|e| settings.database_error(e))
}
