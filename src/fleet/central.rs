//! The trust's central store in PostgreSQL: its schema (versioned migrations, applied by
//! whichever site connects first, under a lock), each site's registration, and the
//! batches of sealed rows shipped into it.
//!
//! `events` keeps each site's chain as shipped: every column the chain hashes, as the
//! site stored it (times as the site's RFC 3339 text, so the central copy hashes
//! exactly as the local one), keyed by (site, seq). It is partitioned by month of
//! `at` (the first seen time as a timestamp), so a year of 50 sites is 12 tables a
//! dashboard range touches only part of, and retention can drop whole months.

use std::collections::HashSet;
use std::time::SystemTime;

use tokio_postgres::{Client, Transaction};

use super::connect::Settings;
use super::FleetError;
use crate::audit::outbox::{Record, RecordTable, SealedRow, ShippedReview};

/// Each step takes the central schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sites (
    site          text PRIMARY KEY,
    instance      bigint NOT NULL,
    head_seq      bigint NOT NULL DEFAULT 0,
    head_hash     text NOT NULL DEFAULT '',
    shipped_at    timestamptz,
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE events (
    site        text NOT NULL,
    seq         bigint NOT NULL,
    local_id    bigint NOT NULL,
    at          timestamptz NOT NULL,
    first_seen  text NOT NULL,
    last_seen   text NOT NULL,
    count       bigint NOT NULL,
    client_ip   text NOT NULL,
    device      text,
    grp         text NOT NULL,
    name        text NOT NULL,
    qtype       text NOT NULL,
    categories  text NOT NULL,
    locked      bigint NOT NULL,
    list        text NOT NULL,
    line        bigint NOT NULL,
    rule        text NOT NULL,
    response    text NOT NULL,
    cname       text,
    outcome     text NOT NULL,
    salt        text,
    personal    text,
    hash        text NOT NULL,
    purged      bigint NOT NULL,
    PRIMARY KEY (site, seq, at)
) PARTITION BY RANGE (at);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_site_at ON events (site, at);
CREATE INDEX events_categories_at ON events (categories, at);
"#,
    r#"
CREATE TABLE reviews (
    site        text NOT NULL,
    local_id    bigint NOT NULL,
    event_seq   bigint NOT NULL,
    at          text NOT NULL,
    by          text NOT NULL,
    outcome     text NOT NULL,
    note        text NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX reviews_event ON reviews (site, event_seq);
"#,
    r#"
CREATE TABLE signins (
    site        text NOT NULL,
    local_id    bigint NOT NULL,
    at          text NOT NULL,
    "user"      text NOT NULL,
    client_ip   text NOT NULL,
    result      text NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE TABLE allow_changes (
    site        text NOT NULL,
    local_id    bigint NOT NULL,
    at          text NOT NULL,
    by          text NOT NULL,
    action      text NOT NULL,
    name        text NOT NULL,
    reason      text NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE TABLE alert_deliveries (
    site        text NOT NULL,
    local_id    bigint NOT NULL,
    at          text NOT NULL,
    channel     text NOT NULL,
    kind        text NOT NULL,
    category    text NOT NULL,
    client_ip   text NOT NULL,
    event_ids   text NOT NULL,
    attempt     bigint NOT NULL,
    result      text NOT NULL,
    error       text,
    PRIMARY KEY (site, local_id)
);
"#,
    // The fleet dashboard: an id per central row for its pages (a site's ids and seqs
    // repeat across sites), the review state kept on the row (as the site keeps it), the
    // longest span of any row (a `since` bound on last_seen reads first_seen from there),
    // reviews written centrally (sent back to their site), and the dashboard's sign-ins.
    r#"
CREATE SEQUENCE event_ids;
ALTER TABLE events ADD COLUMN id bigint NOT NULL DEFAULT nextval('event_ids');
ALTER TABLE events ADD COLUMN reviewed boolean NOT NULL DEFAULT false;
UPDATE events e SET reviewed = true
    WHERE EXISTS (SELECT 1 FROM reviews r WHERE r.site = e.site AND r.event_seq = e.seq);
CREATE INDEX events_id ON events (id);
DROP INDEX events_categories_at;
CREATE INDEX events_live_categories ON events (categories, at) WHERE purged = 0;
CREATE TABLE category_sets (categories text PRIMARY KEY);
INSERT INTO category_sets SELECT DISTINCT categories FROM events;
CREATE INDEX events_reviewed ON events (at) WHERE purged = 0 AND reviewed;
DROP INDEX events_site_at;
CREATE INDEX events_site_live ON events (site, at) WHERE purged = 0;
-- A school's lead (one site) asks for its serious blocks: without the site first, a
-- site with none would read every site's rows of the category to find that out.
CREATE INDEX events_site_categories ON events (site, categories, at) WHERE purged = 0;
CREATE INDEX events_client ON events (client_ip, at) WHERE purged = 0;
CREATE INDEX events_device ON events (device, at) WHERE purged = 0;
-- Rollups the overview reads instead of a month of rows: blocks of live rows per site,
-- first-seen hour (UTC) and category set; live unreviewed rows per site. Kept by
-- statement triggers from each statement's rows (a shipped batch, a review, a purge).
CREATE TABLE tally_hour (
    site        text NOT NULL,
    hour        timestamptz NOT NULL,
    categories  text NOT NULL,
    blocks      bigint NOT NULL,
    PRIMARY KEY (site, hour, categories)
);
CREATE INDEX tally_hour_hour ON tally_hour (hour);
CREATE TABLE tally_site (
    site        text PRIMARY KEY,
    unreviewed  bigint NOT NULL
);
CREATE FUNCTION tally_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_hour
        SELECT site, date_trunc('hour', at), categories, sum(count) FROM new_rows
        WHERE purged = 0 AND outcome = 'blocked' GROUP BY 1, 2, 3
        ON CONFLICT (site, hour, categories)
        DO UPDATE SET blocks = tally_hour.blocks + excluded.blocks;
    INSERT INTO tally_site
        SELECT site, count(*) FROM new_rows WHERE purged = 0 AND NOT reviewed GROUP BY 1
        ON CONFLICT (site) DO UPDATE SET unreviewed = tally_site.unreviewed + excluded.unreviewed;
    RETURN NULL;
END $$;
CREATE FUNCTION tally_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_hour
        SELECT site, hour, categories, sum(n) FROM (
            SELECT site, date_trunc('hour', at) AS hour, categories, count AS n FROM new_rows
                WHERE purged = 0 AND outcome = 'blocked'
            UNION ALL
            SELECT site, date_trunc('hour', at), categories, -count FROM old_rows
                WHERE purged = 0 AND outcome = 'blocked'
        ) d GROUP BY 1, 2, 3 HAVING sum(n) <> 0
        ON CONFLICT (site, hour, categories)
        DO UPDATE SET blocks = tally_hour.blocks + excluded.blocks;
    INSERT INTO tally_site
        SELECT site, sum(n) FROM (
            SELECT site, 1 AS n FROM new_rows WHERE purged = 0 AND NOT reviewed
            UNION ALL
            SELECT site, -1 FROM old_rows WHERE purged = 0 AND NOT reviewed
        ) d GROUP BY 1 HAVING sum(n) <> 0
        ON CONFLICT (site) DO UPDATE SET unreviewed = tally_site.unreviewed + excluded.unreviewed;
    RETURN NULL;
END $$;
CREATE TRIGGER events_tally_i AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tally_inserted();
CREATE TRIGGER events_tally_u AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_updated();
INSERT INTO tally_hour
    SELECT site, date_trunc('hour', at), categories, sum(count) FROM events
    WHERE purged = 0 AND outcome = 'blocked' GROUP BY 1, 2, 3;
INSERT INTO tally_site
    SELECT site, count(*) FROM events WHERE purged = 0 AND NOT reviewed GROUP BY 1;

ALTER TABLE sites ADD COLUMN max_span_ms bigint NOT NULL DEFAULT 0;
UPDATE sites s SET max_span_ms = coalesce((SELECT max(extract(epoch FROM
    (e.last_seen::timestamptz - e.at)) * 1000)::bigint FROM events e WHERE e.site = s.site), 0);
CREATE TABLE central_reviews (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    event_seq   bigint NOT NULL,
    at          text NOT NULL,
    by          text NOT NULL,
    outcome     text NOT NULL,
    note        text NOT NULL
);
CREATE INDEX central_reviews_event ON central_reviews (site, event_seq);
CREATE INDEX central_reviews_site ON central_reviews (site, id);
CREATE VIEW all_reviews AS
    SELECT site, event_seq, at, by, outcome, note FROM reviews
    UNION ALL
    SELECT site, event_seq, at, by || ' (trust dashboard)', outcome, note FROM central_reviews;
CREATE TABLE dashboard_signins (
    id          bigserial PRIMARY KEY,
    at          text NOT NULL,
    "user"      text NOT NULL,
    client_ip   text NOT NULL,
    result      text NOT NULL
);
"#,
    // 5: the trust's shared policy (append-only: a change is never edited or deleted,
    // so the policy in force at any past time is the fold of the changes up to it) and
    // each site's heartbeat (one row per site, replaced at each beat).
    r#"
CREATE TABLE policy_changes (
    version     bigint PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    author      text NOT NULL,
    reason      text NOT NULL,
    change      text NOT NULL
);
CREATE TABLE site_health (
    site            text PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    warden_version  text NOT NULL,
    policy_version  bigint NOT NULL DEFAULT 0,
    refused_version bigint,
    refused_error   text,
    policy_notes    text NOT NULL DEFAULT '',
    rules           bigint NOT NULL DEFAULT 0,
    last_reload     text NOT NULL DEFAULT '',
    backlog_rows    bigint NOT NULL DEFAULT 0,
    queries_per_min double precision NOT NULL DEFAULT 0,
    blocks_per_min  double precision NOT NULL DEFAULT 0,
    stale_locked    text NOT NULL DEFAULT ''
);
"#,
    // 6: who asked beyond the address (a site's `[identity]`): MAC, signed-in user and
    // where they came from, personal data purged like the rest; the user index serves
    // the trust dashboard's user filter. Additive: a site one release behind ships
    // rows without them.
    r#"
ALTER TABLE events ADD COLUMN mac text;
ALTER TABLE events ADD COLUMN user_name text;
ALTER TABLE events ADD COLUMN sources text;
CREATE INDEX events_user ON events (user_name, at) WHERE purged = 0 AND user_name IS NOT NULL;
"#,
    // 7: the trust dashboard's second factors used (a TOTP step, a recovery code's
    // hash), so none is accepted twice. Additive.
    r#"
CREATE TABLE dashboard_second_factor_uses (
    "user"      text NOT NULL,
    kind        text NOT NULL,
    value       text NOT NULL,
    at          text NOT NULL,
    PRIMARY KEY ("user", kind, value)
);
"#,
    // 8: each site's last self-test in its heartbeat ("14 of 14 checks pass at …", and
    // what fails), for the trust's overview. Additive: an older site leaves it empty.
    r#"
ALTER TABLE site_health ADD COLUMN selftest text NOT NULL DEFAULT '';
"#,
    // 9: the trust's review report reads a year of every site's blocks: a rollup of
    // blocks per site, first-seen day (UTC) and category set, of every blocked row, purged
    // or not (a purge keeps a row's time, categories and count, and so does this), kept
    // by statement triggers beside the hourly one; and an index for the MACs the
    // governors' version blanks (addresses, devices and users have theirs). Additive.
    r#"
CREATE TABLE tally_day (
    site        text NOT NULL,
    day         date NOT NULL,
    categories  text NOT NULL,
    blocks      bigint NOT NULL,
    PRIMARY KEY (site, day, categories)
);
CREATE INDEX tally_day_day ON tally_day (day);
CREATE FUNCTION tally_day_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_day
        SELECT site, (at AT TIME ZONE 'UTC')::date, categories, sum(count) FROM new_rows
        WHERE outcome = 'blocked' GROUP BY 1, 2, 3
        ON CONFLICT (site, day, categories)
        DO UPDATE SET blocks = tally_day.blocks + excluded.blocks;
    RETURN NULL;
END $$;
CREATE FUNCTION tally_day_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_day
        SELECT site, day, categories, sum(n) FROM (
            SELECT site, (at AT TIME ZONE 'UTC')::date AS day, categories, count AS n
                FROM new_rows WHERE outcome = 'blocked'
            UNION ALL
            SELECT site, (at AT TIME ZONE 'UTC')::date, categories, -count
                FROM old_rows WHERE outcome = 'blocked'
        ) d GROUP BY 1, 2, 3 HAVING sum(n) <> 0
        ON CONFLICT (site, day, categories)
        DO UPDATE SET blocks = tally_day.blocks + excluded.blocks;
    RETURN NULL;
END $$;
CREATE TRIGGER events_tally_day_i AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tally_day_inserted();
CREATE TRIGGER events_tally_day_u AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally_day_updated();
INSERT INTO tally_day
    SELECT site, (at AT TIME ZONE 'UTC')::date, categories, sum(count) FROM events
    WHERE outcome = 'blocked' GROUP BY 1, 2, 3;
CREATE INDEX events_mac ON events (mac, at) WHERE purged = 0 AND mac IS NOT NULL;
"#,
];

/// The steps after which a Warden that does not know them cannot use the store (a
/// column it writes renamed, a table it reads dropped). Every other step only adds,
/// and a site one release behind keeps shipping into a store migrated past it: it
/// reads `warden_schema.version`, which counts only up to the last of these, while
/// `applied` counts every step. Steps 1 to 4 came before the distinction, so they
/// count as breaking.
const BREAKING: &[i32] = &[1, 2, 3, 4];

/// Serialises schema changes and partition creation between sites connecting at once.
const SCHEMA_LOCK: i64 = 0x5761_7264_656e_0001;

/// Bring the central schema up to date.
///
/// `warden_schema.version` is the level a Warden must know to use the store (the last
/// breaking step applied, see [`BREAKING`]); `applied` is every step applied. A store
/// migrated past what this Warden knows is used as it is when only additive steps lie
/// beyond (an older site in a newer trust), and refused when a breaking one does.
pub(crate) async fn migrate(client: &mut Client, settings: &Settings) -> Result<(), FleetError> {
    let failed = |e| settings.database_error(e);
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         CREATE TABLE IF NOT EXISTS warden_schema (version integer NOT NULL); \
         INSERT INTO warden_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM warden_schema); \
         ALTER TABLE warden_schema ADD COLUMN IF NOT EXISTS applied integer; \
         UPDATE warden_schema SET applied = version WHERE applied IS NULL",
    )
    .await
    .map_err(failed)?;
    let row = tx
        .query_one("SELECT version, applied FROM warden_schema", &[])
        .await
        .map_err(failed)?;
    let (required, applied): (i32, i32) = (row.get(0), row.get(1));
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if required > known {
        return Err(FleetError::Config(format!(
            "the fleet database {} needs a Warden that knows schema version {required}; \
             this one knows {known}: upgrade this site's Warden",
            settings.target
        )));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        tx.batch_execute(step).await.map_err(failed)?;
        let to = i32::try_from(from + 1).unwrap_or(i32::MAX);
        let required = BREAKING
            .iter()
            .copied()
            .filter(|b| *b <= to)
            .max()
            .unwrap_or(0);
        tx.execute(
            "UPDATE warden_schema SET version = $1, applied = $2",
            &[&required, &to],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// Register this site (or find it registered by this same log) and return the last
/// chain position the central store holds for it.
pub(crate) async fn register(
    client: &Client,
    settings: &Settings,
    instance: i64,
) -> Result<i64, FleetError> {
    let failed = |e| settings.database_error(e);
    client
        .execute(
            "INSERT INTO sites (site, instance) VALUES ($1, $2) ON CONFLICT (site) DO NOTHING",
            &[&settings.site, &instance],
        )
        .await
        .map_err(failed)?;
    let row = client
        .query_one(
            "SELECT instance, head_seq FROM sites WHERE site = $1",
            &[&settings.site],
        )
        .await
        .map_err(failed)?;
    let (owner, head): (i64, i64) = (row.get(0), row.get(1));
    if owner != instance {
        return Err(FleetError::Conflict {
            site: settings.site.clone(),
            message: format!(
                "the fleet database {} already holds this site from another audit log \
                 (another Warden configured with the same [fleet] site, or this site's \
                 log was replaced): give this site its own name",
                settings.target
            ),
        });
    }
    Ok(head)
}

/// The month partitions already known to exist (created by this site or another).
#[derive(Default)]
pub(crate) struct Partitions(HashSet<(i32, u32)>);

/// Store `rows` (consecutive sealed rows of this site, in chain order) in one
/// transaction. Rows the central store holds already (a batch shipped again after a
/// restart lost the cursor's update) are left as they are, but must be the same rows:
/// a different hash at the same position stops shipping with a conflict. Rows past the
/// site's central head that all went in need no reading back: no row of the site can be
/// there yet (the head moves in the same transaction as the rows, under the site's lock).
pub(crate) async fn store_batch(
    client: &mut Client,
    settings: &Settings,
    partitions: &mut Partitions,
    rows: &[SealedRow],
) -> Result<(), FleetError> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    let failed = |e| settings.database_error(e);
    let tx = client.transaction().await.map_err(failed)?;
    let at: Vec<SystemTime> = rows
        .iter()
        .map(|r| first_seen_time(&r.first_seen))
        .collect();
    ensure_partitions(&tx, settings, partitions, &at).await?;
    let head: i64 = tx
        .query_one(
            "SELECT head_seq FROM sites WHERE site = $1 FOR UPDATE",
            &[&settings.site],
        )
        .await
        .map_err(failed)?
        .get(0);
    let span = longest_span(rows, &at);
    let inserted = insert_rows(&tx, settings, rows, at).await?;
    note_category_sets(&tx, settings, rows).await?;
    if first.seq > head && inserted == rows.len() as u64 {
        return finish_batch(tx, settings, first, last, span).await;
    }
    // Every position of the batch must now hold this site's row, whoever inserted it.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let stored = tx
        .query(
            "SELECT seq, hash FROM events WHERE site = $1 AND seq = ANY($2)",
            &[&settings.site, &seqs],
        )
        .await
        .map_err(failed)?;
    let mut by_seq = std::collections::HashMap::with_capacity(stored.len());
    for row in stored {
        let (seq, hash): (i64, String) = (row.get(0), row.get(1));
        if by_seq.insert(seq, hash).is_some() {
            return Err(conflict(
                settings,
                format!("the central store holds seq {seq} twice"),
            ));
        }
    }
    for row in rows {
        match by_seq.get(&row.seq) {
            Some(hash) if *hash == row.hash => {}
            Some(_) => {
                return Err(conflict(
                    settings,
                    format!(
                        "the central store's row at seq {} differs from this site's \
                         (local id {}): it was changed centrally, or this log was restored \
                         from an older copy",
                        row.seq, row.id
                    ),
                ))
            }
            None => {
                return Err(conflict(
                    settings,
                    format!("seq {} did not arrive centrally", row.seq),
                ))
            }
        }
    }
    finish_batch(tx, settings, first, last, span).await
}

/// Keep the list of category sets the central retention walks (one index range each).
async fn note_category_sets(
    tx: &Transaction<'_>,
    settings: &Settings,
    rows: &[SealedRow],
) -> Result<(), FleetError> {
    let mut sets: Vec<&str> = rows.iter().map(|r| r.categories.as_str()).collect();
    sets.sort_unstable();
    sets.dedup();
    tx.execute(
        "INSERT INTO category_sets SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        &[&sets],
    )
    .await
    .map_err(|e| settings.database_error(e))?;
    Ok(())
}

/// The longest `last_seen - first_seen` of `rows` (first seen at `at`), in ms.
fn longest_span(rows: &[SealedRow], at: &[SystemTime]) -> i64 {
    rows.iter()
        .zip(at)
        .filter_map(|(row, first)| {
            let last = humantime::parse_rfc3339_weak(&row.last_seen).ok()?;
            last.duration_since(*first).ok()
        })
        .map(|span| i64::try_from(span.as_millis()).unwrap_or(i64::MAX))
        .max()
        .unwrap_or(0)
}

/// Move the site's central head to `last` and commit the batch `first..=last`, whose
/// longest row spans `span` ms.
async fn finish_batch(
    tx: Transaction<'_>,
    settings: &Settings,
    first: &SealedRow,
    last: &SealedRow,
    span: i64,
) -> Result<(), FleetError> {
    let failed = |e| settings.database_error(e);
    tx.execute(
        "UPDATE sites SET head_seq = greatest(head_seq, $2), \
         head_hash = CASE WHEN $2 >= head_seq THEN $3 ELSE head_hash END, shipped_at = now(), \
         max_span_ms = greatest(max_span_ms, $4) WHERE site = $1",
        &[&settings.site, &last.seq, &last.hash, &span],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    tracing::debug!(
        "fleet: shipped seq {}..={} to {}",
        first.seq,
        last.seq,
        settings.target
    );
    Ok(())
}

fn conflict(settings: &Settings, message: String) -> FleetError {
    FleetError::Conflict {
        site: settings.site.clone(),
        message,
    }
}

/// The row's first seen time as a timestamp (the Unix epoch for a text that does not
/// read: the row still arrives, in the oldest partition, and its text is kept as is).
fn first_seen_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Create the month partitions `at` falls in that do not exist yet.
async fn ensure_partitions(
    tx: &Transaction<'_>,
    settings: &Settings,
    partitions: &mut Partitions,
    at: &[SystemTime],
) -> Result<(), FleetError> {
    let failed = |e| settings.database_error(e);
    let months: std::collections::BTreeSet<(i32, u32)> = at.iter().map(|t| month_of(*t)).collect();
    let missing: Vec<(i32, u32)> = months
        .into_iter()
        .filter(|m| !partitions.0.contains(m))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(failed)?;
    for (year, month) in missing {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS events_{year:04}_{month:02} PARTITION OF events \
             FOR VALUES FROM ('{year:04}-{month:02}-01 00:00:00+00') \
             TO ('{next_year:04}-{next_month:02}-01 00:00:00+00')"
        ))
        .await
        .map_err(failed)?;
        partitions.0.insert((year, month));
    }
    Ok(())
}

fn month_of(t: SystemTime) -> (i32, u32) {
    use chrono::Datelike;
    let t: chrono::DateTime<chrono::Utc> = t.into();
    (t.year(), t.month())
}

/// One statement for the whole batch: each column as an array, unnested into rows.
/// Returns how many were new.
async fn insert_rows(
    tx: &Transaction<'_>,
    settings: &Settings,
    rows: &[SealedRow],
    at: Vec<SystemTime>,
) -> Result<u64, FleetError> {
    fn column<T>(rows: &[SealedRow], f: impl Fn(&SealedRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let site = vec![settings.site.clone(); rows.len()];
    let seq = column(rows, |r| r.seq);
    let local_id = column(rows, |r| r.id);
    let first_seen = column(rows, |r| r.first_seen.clone());
    let last_seen = column(rows, |r| r.last_seen.clone());
    let count = column(rows, |r| r.count);
    let client_ip = column(rows, |r| r.client_ip.clone());
    let device = column(rows, |r| r.device.clone());
    let grp = column(rows, |r| r.grp.clone());
    let name = column(rows, |r| r.name.clone());
    let qtype = column(rows, |r| r.qtype.clone());
    let categories = column(rows, |r| r.categories.clone());
    let locked = column(rows, |r| r.locked);
    let list = column(rows, |r| r.list.clone());
    let line = column(rows, |r| r.line);
    let rule = column(rows, |r| r.rule.clone());
    let response = column(rows, |r| r.response.clone());
    let cname = column(rows, |r| r.cname.clone());
    let outcome = column(rows, |r| r.outcome.clone());
    let salt = column(rows, |r| r.salt.clone());
    let personal = column(rows, |r| r.personal.clone());
    let hash = column(rows, |r| r.hash.clone());
    let purged = column(rows, |r| r.purged);
    let mac = column(rows, |r| r.mac.clone());
    let user_name = column(rows, |r| r.user_name.clone());
    let sources = column(rows, |r| r.sources.clone());
    tx.execute(
        "INSERT INTO events (site, seq, local_id, at, first_seen, last_seen, count, client_ip, \
         device, grp, name, qtype, categories, locked, list, line, rule, response, cname, \
         outcome, salt, personal, hash, purged, mac, user_name, sources) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[], \
         $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], \
         $11::text[], $12::text[], $13::text[], $14::bigint[], $15::text[], $16::bigint[], \
         $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], \
         $23::text[], $24::bigint[], $25::text[], $26::text[], $27::text[]) \
         ON CONFLICT DO NOTHING",
        &[
            &site,
            &seq,
            &local_id,
            &at,
            &first_seen,
            &last_seen,
            &count,
            &client_ip,
            &device,
            &grp,
            &name,
            &qtype,
            &categories,
            &locked,
            &list,
            &line,
            &rule,
            &response,
            &cname,
            &outcome,
            &salt,
            &personal,
            &hash,
            &purged,
            &mac,
            &user_name,
            &sources,
        ],
    )
    .await
    .map_err(|e| settings.database_error(e))
}

/// Store `reviews` (this site's, in order) in one transaction; one already there (shipped
/// again after a restart) is left as it is.
pub(crate) async fn store_reviews(
    client: &mut Client,
    settings: &Settings,
    reviews: &[ShippedReview],
) -> Result<(), FleetError> {
    if reviews.is_empty() {
        return Ok(());
    }
    let failed = |e| settings.database_error(e);
    let site = vec![settings.site.clone(); reviews.len()];
    let id: Vec<i64> = reviews.iter().map(|r| r.id).collect();
    let seq: Vec<i64> = reviews.iter().map(|r| r.event_seq).collect();
    let text = |f: fn(&ShippedReview) -> &String| -> Vec<String> {
        reviews.iter().map(|r| f(r).clone()).collect()
    };
    let (at, by, outcome, note) = (
        text(|r| &r.at),
        text(|r| &r.by),
        text(|r| &r.outcome),
        // A note is whatever the lead typed (or an older Warden let through).
        text(|r| &r.note)
            .into_iter()
            .map(pg_text)
            .collect::<Vec<_>>(),
    );
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute(
        "INSERT INTO reviews (site, local_id, event_seq, at, by, outcome, note) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
         $5::text[], $6::text[], $7::text[]) ON CONFLICT DO NOTHING",
        &[&site, &id, &seq, &at, &by, &outcome, &note],
    )
    .await
    .map_err(failed)?;
    // The rows' review state, as the site's own log keeps it.
    tx.execute(
        "UPDATE events SET reviewed = true WHERE site = $1 AND seq = ANY($2) AND NOT reviewed",
        &[&settings.site, &seq],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)
}

/// Up to `limit` reviews written on the trust's dashboard for this site's rows, after
/// central id `after`, in id order: for the site to keep beside its own.
pub(crate) async fn central_reviews_after(
    client: &Client,
    settings: &Settings,
    after: i64,
    limit: usize,
) -> Result<Vec<ShippedReview>, FleetError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT id, event_seq, at, by || ' (trust dashboard)', outcome, note \
             FROM central_reviews WHERE site = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&settings.site, &after, &limit],
        )
        .await
        .map_err(|e| settings.database_error(e))?;
    Ok(rows
        .iter()
        .map(|r| ShippedReview {
            id: r.get(0),
            event_seq: r.get(1),
            at: r.get(2),
            by: r.get(3),
            outcome: r.get(4),
            note: r.get(5),
        })
        .collect())
}

/// `text` as PostgreSQL can hold it: its text type cannot hold a NUL character, which a
/// free-text field (a review note, a user name typed at sign-in, an alert channel's
/// error reply) may carry. NUL becomes U+FFFD, visibly not what was typed; nothing else
/// changes. (Never applied to the events: their columns are hashed, and none can hold a
/// NUL: names are stored in escaped ASCII, device names with one are refused by the
/// config check.)
pub(crate) fn pg_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

/// Store `records` of `table` (this site's, in id order) in one statement; one already
/// there (shipped again after a restart) is left as it is.
pub(crate) async fn store_records(
    client: &Client,
    settings: &Settings,
    table: &RecordTable,
    records: &[Record],
) -> Result<(), FleetError> {
    if records.is_empty() {
        return Ok(());
    }
    let site = settings.site.clone();
    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    let columns: Vec<Vec<Option<String>>> = (0..table.columns.len())
        .map(|i| {
            records
                .iter()
                .map(|r| r.values.get(i).cloned().flatten().map(pg_text))
                .collect()
        })
        .collect();
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    // Every column travels as text and is cast back where it is an integer.
    let selected: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, integer))| {
            let column = format!("c{i}");
            if *integer {
                format!("{column}::bigint")
            } else {
                column
            }
        })
        .collect();
    let arrays: Vec<String> = (0..table.columns.len())
        .map(|i| format!("${}::text[]", i + 3))
        .collect();
    let aliases: Vec<String> = (0..table.columns.len()).map(|i| format!("c{i}")).collect();
    let sql = format!(
        "INSERT INTO {} (site, local_id, {}) SELECT $1::text, id, {} \
         FROM unnest($2::bigint[], {}) AS u(id, {}) ON CONFLICT DO NOTHING",
        table.table,
        names.join(", "),
        selected.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&site, &ids];
    for column in &columns {
        params.push(column);
    }
    client
        .execute(sql.as_str(), &params)
        .await
        .map_err(|e| settings.database_error(e))?;
    Ok(())
}
