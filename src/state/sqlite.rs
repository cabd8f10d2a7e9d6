//! The SQLite store (`state.path`), and the memory one (the same, in memory): rusqlite with its
//! bundled SQLite, in WAL mode, on a thread of its own (SQLite's calls block), one process per
//! file (an exclusive `flock` on the file, held while the process runs).
//!
//! The schema is versioned in `PRAGMA user_version`; docs/operations.md ("State") documents it for
//! whoever reads the file with the `sqlite3` shell. A file of a newer version is refused; an
//! older one is migrated when it is opened.

use std::path::Path;
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Batch, DayCount, History, LegacySpan, ShadowKey, StateError, StateOpenError, Tally};
use crate::inventory::{LoginReport, MAX_ACTIONS, MAX_PEERS, Named, Report, WayCount};

/// The schema this binary writes.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Version 1: revocations, the inventory, the day counts, the legacy calls.
const SCHEMA_1: &str = "
CREATE TABLE revoked (
    nonce TEXT PRIMARY KEY,
    expires INTEGER NOT NULL            -- seconds since the epoch
);
CREATE TABLE logins (
    login TEXT PRIMARY KEY,
    caller TEXT,                        -- the configured caller whose login it is, if any
    first_seen INTEGER NOT NULL,        -- seconds since the epoch
    last_seen INTEGER NOT NULL,
    other_actions INTEGER NOT NULL DEFAULT 0,
    other_peers INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX logins_last_seen ON logins (last_seen);
CREATE TABLE login_actions (
    login TEXT NOT NULL,
    action TEXT NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (login, action)
);
CREATE TABLE login_peers (
    login TEXT NOT NULL,
    peer TEXT NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (login, peer)
);
CREATE TABLE login_counts (
    login TEXT NOT NULL,
    way TEXT NOT NULL,
    outcome TEXT NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (login, way, outcome)
);
CREATE TABLE daily (
    day TEXT NOT NULL,                  -- YYYY-MM-DD, UTC
    subject TEXT NOT NULL,              -- caller:NAME or login:LOGIN
    way TEXT NOT NULL,
    outcome TEXT NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (day, subject, way, outcome)
);
CREATE TABLE legacy_calls (
    subject TEXT PRIMARY KEY,           -- caller:NAME or login:LOGIN
    first INTEGER NOT NULL,             -- seconds since the epoch
    last INTEGER NOT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,               -- dropped_logins: logins dropped past the bound
    value INTEGER NOT NULL
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,             -- a batch of counts written (each is written once)
    at INTEGER NOT NULL                 -- seconds since the epoch
);
";

/// Version 2: the shadow callers' comparisons.
const SCHEMA_2: &str = "
CREATE TABLE shadow_daily (
    day TEXT NOT NULL,                  -- YYYY-MM-DD, UTC
    caller TEXT NOT NULL,
    action TEXT NOT NULL,
    comparisons INTEGER NOT NULL,
    matches INTEGER NOT NULL,
    mismatches INTEGER NOT NULL,
    PRIMARY KEY (day, caller, action)
);
CREATE TABLE shadow_mismatch (
    caller TEXT NOT NULL,
    action TEXT NOT NULL,
    last INTEGER NOT NULL,              -- seconds since the epoch
    PRIMARY KEY (caller, action)
);
";

/// A job for the store's thread; `true`: the last one (the file is closed and unlocked).
type Job = Box<dyn FnOnce(&mut Connection) -> bool + Send>;

pub(super) struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, locked for this process; `None`: in memory.
    pub(super) fn open(path: Option<&Path>) -> Result<SqliteStore, StateOpenError> {
        let shown = path.map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
        let sqlite = |e: rusqlite::Error| StateOpenError::Sqlite(format!("{shown}: {e}"));
        let lock = match path {
            Some(path) => Some(lock(path)?),
            None => None,
        };
        let mut connection = match path {
            Some(path) => Connection::open(path).map_err(sqlite)?,
            None => Connection::open_in_memory().map_err(sqlite)?,
        };
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite)?;
        if version > SCHEMA_VERSION {
            return Err(StateOpenError::NewerSchema {
                path: shown,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if path.is_some() {
            connection
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(sqlite)?;
            connection
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sqlite)?;
        }
        migrate(&mut connection, version).map_err(sqlite)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("state-sqlite".to_owned())
            .spawn(move || {
                // The lock lives as long as the thread that uses the file.
                let _lock = lock;
                for job in queue {
                    if job(&mut connection) {
                        break;
                    }
                }
            })
            .map_err(|e| StateOpenError::Sqlite(format!("{shown}: {e}")))?;
        Ok(SqliteStore {
            jobs,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Runs `work` on the store's thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |connection| {
                let _ = tx.send(work(connection));
                false
            }))
            .map_err(|_| StateError::Unavailable("the store's thread ended".to_owned()))?;
        rx.await
            .map_err(|_| StateError::Unavailable("the store's thread ended".to_owned()))?
            .map_err(|e| StateError::Store(e.to_string()))
    }

    /// Closes the file and lets another process have it; what is asked after fails.
    pub(super) async fn close(&self) {
        let _ = self.jobs.send(Box::new(|_| true));
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    pub(super) async fn revoke(&self, nonce: &str, expires: u64) -> Result<(), StateError> {
        let nonce = nonce.to_owned();
        self.run(move |db| {
            db.execute(
                "INSERT OR REPLACE INTO revoked (nonce, expires) VALUES (?1, ?2)",
                params![nonce, expires as i64],
            )
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn revocations(&self, now: u64) -> Result<Vec<(String, u64)>, StateError> {
        self.run(move |db| {
            let mut query = db.prepare("SELECT nonce, expires FROM revoked WHERE expires > ?1")?;
            let rows = query.query_map(params![now as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
        .await
    }

    /// Writes a batch in one transaction, prunes what is past: expired revocations, day counts
    /// older than `history_days`, the logins past `max_logins` least recently seen.
    /// `None`: only whether the store answers.
    pub(super) async fn flush(
        &self,
        batch: Option<Arc<Batch>>,
        now: u64,
        history_days: u32,
        max_logins: usize,
    ) -> Result<(), StateError> {
        self.run(move |db| match batch {
            Some(batch) => write(db, &batch, now, history_days, max_logins),
            None => db.query_row("SELECT 1", [], |_| Ok(())),
        })
        .await
    }

    pub(super) async fn history(&self, since: &str) -> Result<History, StateError> {
        let since = since.to_owned();
        self.run(move |db| read_history(db, &since)).await
    }

    pub(super) async fn inventory(&self, max_logins: usize) -> Result<Report, StateError> {
        self.run(move |db| read_inventory(db, max_logins)).await
    }
}

/// An exclusive lock on the file: a second process refuses to start.
fn lock(path: &Path) -> Result<std::fs::File, StateOpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StateOpenError::Sqlite(format!("{}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| StateOpenError::Locked(path.display().to_string()))?;
    Ok(file)
}

/// Brings a file of schema `from` to [`SCHEMA_VERSION`].
fn migrate(db: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    if from < 1 {
        tx.execute_batch(SCHEMA_1)?;
    }
    if from < 2 {
        tx.execute_batch(SCHEMA_2)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

fn write(
    db: &mut Connection,
    batch: &Batch,
    now: u64,
    history_days: u32,
    max_logins: usize,
) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    // A batch is written once: one sent again after a timeout may have gone through.
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO batches (id, at) VALUES (?1, ?2)",
        params![batch.id as i64, now as i64],
    )?;
    tx.execute(
        "DELETE FROM batches WHERE at < ?1",
        params![now.saturating_sub(super::BATCH_IDS_KEPT.as_secs()) as i64],
    )?;
    if fresh == 0 {
        return tx.commit();
    }
    for (nonce, expires) in &batch.revoked {
        tx.execute(
            "INSERT OR REPLACE INTO revoked (nonce, expires) VALUES (?1, ?2)",
            params![nonce, *expires as i64],
        )?;
    }
    tx.execute(
        "DELETE FROM revoked WHERE expires <= ?1",
        params![now as i64],
    )?;
    for delta in batch.logins.values() {
        tx.execute(
            "INSERT INTO logins (login, caller, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (login) DO UPDATE SET
                caller = COALESCE(excluded.caller, caller),
                first_seen = MIN(first_seen, excluded.first_seen),
                last_seen = MAX(last_seen, excluded.last_seen)",
            params![
                delta.login,
                delta.caller,
                delta.first as i64,
                delta.last as i64
            ],
        )?;
        let mut other_actions = delta.other_actions;
        for (action, n) in &delta.actions {
            if !add_bounded(
                &tx,
                "login_actions",
                "action",
                &delta.login,
                action,
                *n,
                MAX_ACTIONS,
            )? {
                other_actions += n;
            }
        }
        let mut other_peers = delta.other_peers;
        for (peer, n) in &delta.peers {
            if !add_bounded(
                &tx,
                "login_peers",
                "peer",
                &delta.login,
                &peer.to_string(),
                *n,
                MAX_PEERS,
            )? {
                other_peers += n;
            }
        }
        tx.execute(
            "UPDATE logins SET other_actions = other_actions + ?2, other_peers = other_peers + ?3
             WHERE login = ?1",
            params![delta.login, other_actions as i64, other_peers as i64],
        )?;
        for (key, n) in &delta.counts {
            let (way, outcome) = (key.way, key.outcome);
            tx.execute(
                "INSERT INTO login_counts (login, way, outcome, requests) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (login, way, outcome) DO UPDATE SET requests = requests + excluded.requests",
                params![delta.login, way, outcome, *n as i64],
            )?;
        }
    }
    for (day, subject, way, outcome, n) in batch.day_rows() {
        tx.execute(
            "INSERT INTO daily (day, subject, way, outcome, requests) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day, subject, way, outcome) DO UPDATE SET requests = requests + excluded.requests",
            params![day, subject, way, outcome, n as i64],
        )?;
    }
    for (subject, span) in batch.legacy_rows() {
        tx.execute(
            "INSERT INTO legacy_calls (subject, first, last) VALUES (?1, ?2, ?3)
             ON CONFLICT (subject) DO UPDATE SET
                first = MIN(first, excluded.first), last = MAX(last, excluded.last)",
            params![subject, span.first as i64, span.last as i64],
        )?;
    }
    for (key, tally) in &batch.shadow {
        tx.execute(
            "INSERT INTO shadow_daily (day, caller, action, comparisons, matches, mismatches)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (day, caller, action) DO UPDATE SET
                comparisons = comparisons + excluded.comparisons,
                matches = matches + excluded.matches,
                mismatches = mismatches + excluded.mismatches",
            params![
                key.day,
                key.caller,
                key.action,
                tally.comparisons as i64,
                tally.matches as i64,
                tally.mismatches as i64
            ],
        )?;
    }
    for ((caller, action), last) in &batch.mismatches {
        tx.execute(
            "INSERT INTO shadow_mismatch (caller, action, last) VALUES (?1, ?2, ?3)
             ON CONFLICT (caller, action) DO UPDATE SET last = MAX(last, excluded.last)",
            params![caller, action, *last as i64],
        )?;
    }
    // Pruned a day at a time as it passes, in the flush's transaction: no pause in serving.
    let oldest = crate::dates::day_of(now.saturating_sub(u64::from(history_days) * 86_400));
    tx.execute("DELETE FROM daily WHERE day < ?1", params![oldest])?;
    tx.execute("DELETE FROM shadow_daily WHERE day < ?1", params![oldest])?;
    // The logins no caller owns, past `max_logins`, least recently seen first.
    let others: i64 = tx.query_row(
        "SELECT COUNT(*) FROM logins WHERE caller IS NULL",
        [],
        |row| row.get(0),
    )?;
    let excess = others - max_logins as i64;
    if excess > 0 {
        for table in ["login_actions", "login_peers", "login_counts"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE login IN (SELECT login FROM logins WHERE caller IS NULL
                     ORDER BY last_seen, login LIMIT ?1)"
                ),
                params![excess],
            )?;
        }
        tx.execute(
            "DELETE FROM logins WHERE login IN (SELECT login FROM logins WHERE caller IS NULL
             ORDER BY last_seen, login LIMIT ?1)",
            params![excess],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped_logins', ?1)
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            params![excess],
        )?;
    }
    tx.commit()
}

/// Adds `n` to the row of `name` for `login` in `table`, if it is there or the login has fewer
/// than `max` rows; false when it had no room.
fn add_bounded(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    login: &str,
    name: &str,
    n: u64,
    max: usize,
) -> rusqlite::Result<bool> {
    let updated = tx.execute(
        &format!("UPDATE {table} SET requests = requests + ?3 WHERE login = ?1 AND {column} = ?2"),
        params![login, name, n as i64],
    )?;
    if updated > 0 {
        return Ok(true);
    }
    let held: i64 = tx.query_row(
        &format!("SELECT COUNT(*) FROM {table} WHERE login = ?1"),
        params![login],
        |row| row.get(0),
    )?;
    if held as usize >= max {
        return Ok(false);
    }
    tx.execute(
        &format!("INSERT INTO {table} (login, {column}, requests) VALUES (?1, ?2, ?3)"),
        params![login, name, n as i64],
    )?;
    Ok(true)
}

fn read_inventory(db: &mut Connection, max_logins: usize) -> rusqlite::Result<Report> {
    let dropped: Option<i64> = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'dropped_logins'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    let mut logins = Vec::new();
    let mut query = db.prepare(
        "SELECT login, caller, first_seen, last_seen, other_actions, other_peers FROM logins
         ORDER BY last_seen DESC, login",
    )?;
    let rows = query.query_map([], |row| {
        Ok(LoginReport {
            login: row.get(0)?,
            caller: row.get(1)?,
            first_seen: row.get::<_, i64>(2)? as u64,
            last_seen: row.get::<_, i64>(3)? as u64,
            other_actions: row.get::<_, i64>(4)? as u64,
            other_peers: row.get::<_, i64>(5)? as u64,
            ..LoginReport::default()
        })
    })?;
    for login in rows {
        logins.push(login?);
    }
    let named = |table: &str, column: &str, login: &str| -> rusqlite::Result<Vec<Named>> {
        let mut query = db.prepare_cached(&format!(
            "SELECT {column}, requests FROM {table} WHERE login = ?1 ORDER BY requests DESC, {column}"
        ))?;
        let rows = query.query_map(params![login], |row| {
            Ok(Named {
                name: row.get(0)?,
                requests: row.get::<_, i64>(1)? as u64,
            })
        })?;
        rows.collect()
    };
    for login in &mut logins {
        login.actions = named("login_actions", "action", &login.login)?;
        login.peers = named("login_peers", "peer", &login.login)?;
        let mut query = db.prepare_cached(
            "SELECT way, outcome, requests FROM login_counts WHERE login = ?1 ORDER BY way, outcome",
        )?;
        let rows = query.query_map(params![login.login], |row| {
            Ok(WayCount {
                way: row.get(0)?,
                outcome: row.get(1)?,
                requests: row.get::<_, i64>(2)? as u64,
            })
        })?;
        login.counts = rows.collect::<rusqlite::Result<_>>()?;
        login.requests = login.counts.iter().map(|c| c.requests).sum();
    }
    Ok(Report {
        profiles: Vec::new(),
        max_logins,
        dropped: dropped.unwrap_or(0) as u64,
        logins,
        note: None,
    })
}

fn read_history(db: &mut Connection, since: &str) -> rusqlite::Result<History> {
    let mut history = History::default();
    let mut query = db.prepare(
        "SELECT day, subject, way, outcome, requests FROM daily WHERE day >= ?1
         ORDER BY day, subject, way, outcome",
    )?;
    let rows = query.query_map(params![since], |row| {
        Ok(DayCount {
            day: row.get(0)?,
            subject: row.get(1)?,
            way: row.get(2)?,
            outcome: row.get(3)?,
            requests: row.get::<_, i64>(4)? as u64,
        })
    })?;
    history.days = rows.collect::<rusqlite::Result<_>>()?;
    let mut query = db.prepare("SELECT subject, first, last FROM legacy_calls")?;
    let rows = query.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            LegacySpan {
                first: row.get::<_, i64>(1)? as u64,
                last: row.get::<_, i64>(2)? as u64,
            },
        ))
    })?;
    history.legacy = rows.collect::<rusqlite::Result<_>>()?;
    let mut query = db.prepare(
        "SELECT day, caller, action, comparisons, matches, mismatches FROM shadow_daily
         WHERE day >= ?1 ORDER BY day, caller, action",
    )?;
    let rows = query.query_map(params![since], |row| {
        Ok((
            ShadowKey {
                day: row.get(0)?,
                caller: row.get(1)?,
                action: row.get(2)?,
            },
            Tally {
                comparisons: row.get::<_, i64>(3)? as u64,
                matches: row.get::<_, i64>(4)? as u64,
                mismatches: row.get::<_, i64>(5)? as u64,
            },
        ))
    })?;
    history.shadow = rows.collect::<rusqlite::Result<_>>()?;
    let mut query = db.prepare("SELECT caller, action, last FROM shadow_mismatch")?;
    let rows = query.query_map([], |row| {
        Ok((
            (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
            row.get::<_, i64>(2)? as u64,
        ))
    })?;
    history.last_mismatch = rows.collect::<rusqlite::Result<_>>()?;
    Ok(history)
}
