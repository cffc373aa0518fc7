//! The SQLite index: one row per stored object with its size, stored size,
//! encoding, creation time, last access and hits.
//!
//! It answers HEAD and `missing` without touching storage and feeds stats and
//! (later) eviction. Storage stays the source of truth: the index is a cache
//! of its metadata, rebuilt by `cache-server reindex`. SQLite runs in WAL mode
//! behind one writer connection and a few reader connections, always on the
//! blocking thread pool, never on the async threads. Reads of an object do not
//! write to SQLite: hits and access times are gathered in memory and flushed
//! in one transaction every second (and at shutdown).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cache_proto::body::{NamespaceStats, StoredStats};
use cache_proto::{Digest, Namespace};
use rusqlite::{Connection, OptionalExtension, params};

mod events;
mod file_watch;
mod leases;
mod token_epoch;
mod tokens;

use file_watch::FileWatch;
pub use file_watch::SETTLE as FILES_SETTLE;
pub use leases::LeaseOutcome;
use token_epoch::TokenEpoch;
pub use tokens::{NewTokenRecord, Scope, TokenRecord, secret_hash, token_hash};

use crate::blob::StoredName;
use crate::blob::format::Encoding;

const READERS: usize = 4;

/// Schema migrations; entry `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE objects (
    kind        TEXT    NOT NULL,   -- 'cas', 'ac', 'kv/{space}'; 'ns/{namespace}/...' outside the default namespace
    name        TEXT    NOT NULL,   -- digest or key, 64 lowercase hex
    size        INTEGER NOT NULL,   -- uncompressed bytes
    stored_size INTEGER NOT NULL,   -- bytes in storage
    encoding    TEXT    NOT NULL,   -- 'raw' or 'zstd'
    etag        TEXT,               -- action cache: BLAKE3 of the value
    created     INTEGER NOT NULL,   -- unix milliseconds
    last_access INTEGER NOT NULL,   -- unix milliseconds
    hits        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE INDEX objects_by_last_access ON objects (last_access);
"#,
    r#"
CREATE TABLE leases (
    key        TEXT    NOT NULL PRIMARY KEY,  -- the build key, 64 lowercase hex
    holder     TEXT    NOT NULL,              -- who builds
    expires_at INTEGER NOT NULL               -- unix milliseconds
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE objects ADD COLUMN meta TEXT;  -- protocol metadata (Turborepo duration and tag), JSON
CREATE TABLE tokens (
    id      TEXT    NOT NULL PRIMARY KEY,   -- public identifier, 12 hex
    name    TEXT    NOT NULL,               -- who it is for
    scope   TEXT    NOT NULL,               -- 'read', 'write' or 'admin'
    hash    TEXT    NOT NULL UNIQUE,        -- BLAKE3 of the token; the token itself is never stored
    created INTEGER NOT NULL,               -- unix milliseconds
    expires INTEGER,                        -- unix milliseconds, NULL for never
    revoked INTEGER                         -- unix milliseconds, NULL while valid
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,   -- unix milliseconds, server clock
    kind    TEXT    NOT NULL,   -- 'ensure-base', 'layer' or 'build'
    image   TEXT    NOT NULL,
    hit     INTEGER NOT NULL,
    seconds REAL    NOT NULL,   -- wall time of the step
    body    TEXT    NOT NULL    -- the whole event, JSON
);
CREATE INDEX events_by_at ON events (at);
"#,
    r#"
ALTER TABLE objects ADD COLUMN checked INTEGER NOT NULL DEFAULT 0;  -- unix milliseconds storage last confirmed the object
"#,
    r#"
ALTER TABLE tokens ADD COLUMN namespaces TEXT;  -- the namespace policy (JSON); NULL: every namespace
"#,
    r#"
ALTER TABLE objects ADD COLUMN owner TEXT;  -- the namespace charged for it (keyed entries: theirs; blobs: the first writer's); NULL: default
UPDATE objects SET owner = substr(kind, 4, instr(substr(kind, 4), '/') - 1) WHERE kind LIKE 'ns/%';
CREATE INDEX objects_by_owner ON objects (owner, last_access, stored_size) WHERE owner IS NOT NULL;
"#,
];

/// An index failure.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite refused.
    #[error("index database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file or its folder could not be created.
    #[error("cannot create the index at {path}: {source}")]
    Create {
        /// The index path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database holds a schema newer than this binary knows.
    #[error("index schema version {0} is newer than this cache-server supports ({1})")]
    TooNew(i64, usize),
    /// A blocking task failed.
    #[error("index task failed: {0}")]
    Task(String),
    /// A row holds a value this binary cannot read.
    #[error("index row is corrupt: {0}")]
    Corrupt(String),
}

/// A row of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Uncompressed size.
    pub size: u64,
    /// Size in storage.
    pub stored_size: u64,
    /// Stored encoding.
    pub encoding: Encoding,
    /// Action cache: entity tag of the value.
    pub etag: Option<String>,
    /// Hits recorded so far (flushed ones only).
    pub hits: u64,
    /// Unix milliseconds of the last recorded access.
    pub last_access_ms: i64,
    /// Protocol metadata (JSON), if any.
    pub meta: Option<String>,
    /// Unix milliseconds at which storage last confirmed the object (its
    /// write, a lookup or a reindex).
    pub checked_ms: i64,
}

/// What is written for a new or replaced object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    /// Uncompressed size.
    pub size: u64,
    /// Size in storage.
    pub stored_size: u64,
    /// Stored encoding.
    pub encoding: Encoding,
    /// Action cache: entity tag of the value.
    pub etag: Option<String>,
    /// Protocol metadata (JSON), if any.
    pub meta: Option<String>,
    /// The namespace charged for a blob (keyed entries are charged to
    /// their own); `None` for the default namespace.
    pub owner: Option<Namespace>,
}

impl NewObject {
    /// The row of an action-cache value: stored as it is, tagged with
    /// [`action_etag`].
    pub fn action(value: &[u8]) -> Self {
        Self {
            size: value.len() as u64,
            stored_size: value.len() as u64,
            encoding: Encoding::Raw,
            etag: Some(action_etag(value)),
            meta: None,
            owner: None,
        }
    }
}

/// The entity tag of an action-cache value: its quoted BLAKE3.
pub fn action_etag(value: &[u8]) -> String {
    format!("\"{}\"", blake3::hash(value).to_hex())
}

struct Inner {
    writer: Mutex<Connection>,
    /// Watches the tokens table for changes made by any connection of any
    /// process (see [`Index::tokens_fingerprint`]).
    token_watch: Mutex<TokenWatch>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Hashed with foldhash (seeded per process) rather than SipHash: every
    /// hot read notes itself here.
    pending_access: Mutex<HashMap<StoredName, (u64, i64), foldhash::fast::RandomState>>,
    /// Changes to the index files by any process; `None` where they cannot
    /// be watched.
    files: Option<FileWatch>,
    /// Moves after every change to the tokens table by any process that
    /// opened this index; `None` where it cannot be mapped.
    token_epoch: Option<TokenEpoch>,
}

/// Handle to the index. Cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn split(name: &StoredName) -> (String, String) {
    name.index_key()
}

fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite inconsistent (it has
    // its own transactions), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn connect(path: &Path) -> Result<Connection, IndexError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), IndexError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version as usize > MIGRATIONS.len() {
        return Err(IndexError::TooNew(version, MIGRATIONS.len()));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", (step + 1) as i64)?;
        transaction.commit()?;
        tracing::debug!(version = step + 1, "index schema migrated");
    }
    Ok(())
}

/// The (name, stored size) rows of `sql`, a `SELECT kind, name,
/// stored_size` in eviction order; rows the binary cannot read are left out.
fn eviction_order(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(StoredName, u64)>, IndexError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, name, size) = row?;
        if let Some(name) = StoredName::from_index_key(&kind, &name) {
            out.push((name, size as u64));
        }
    }
    Ok(out)
}

/// Inserts or replaces one row, keeping hits and creation time of a replaced one.
fn upsert(
    connection: &Connection,
    name: &StoredName,
    object: &NewObject,
    now: i64,
) -> Result<(), IndexError> {
    let owner = object
        .owner
        .as_ref()
        .or(name.namespace())
        .filter(|namespace| !namespace.is_default())
        .map(Namespace::as_str);
    let (kind, name) = split(name);
    // A replaced row keeps its owner: whoever stored it first is charged.
    let mut statement = connection.prepare_cached(
        "INSERT INTO objects (kind, name, size, stored_size, encoding, etag, created, last_access, meta, checked, owner)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?7, ?9)
         ON CONFLICT (kind, name) DO UPDATE SET
            size = excluded.size, stored_size = excluded.stored_size,
            encoding = excluded.encoding, etag = excluded.etag,
            last_access = excluded.last_access, meta = excluded.meta,
            checked = excluded.checked",
    )?;
    statement.execute(params![
        kind,
        name,
        object.size as i64,
        object.stored_size as i64,
        object.encoding.as_str(),
        object.etag,
        now,
        object.meta,
        owner
    ])?;
    Ok(())
}

impl Index {
    /// Opens (creating and migrating as needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| IndexError::Create {
                path: path.display().to_string(),
                source,
            })?;
        }
        let mut writer = connect(path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        let token_watch = TokenWatch {
            connection: connect(path)?,
            data_version: None,
            fingerprint: TokensFingerprint::default(),
        };
        let files = match FileWatch::start(path) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the index files; tokens are checked in SQLite on every request");
                None
            }
        };
        let token_epoch = match TokenEpoch::open(path) {
            Ok(epoch) => Some(epoch),
            Err(error) => {
                tracing::warn!(%error, path = %token_epoch::path_for(path).display(), "cannot map the tokens' change counter; tokens are checked in SQLite on every request");
                None
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                token_watch: Mutex::new(token_watch),
                readers,
                next_reader: AtomicUsize::new(0),
                pending_access: Mutex::new(HashMap::default()),
                files,
                token_epoch,
            }),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let slot = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            query(&lock(&inner.readers[slot]))
        })
        .await
        .map_err(|e| IndexError::Task(e.to_string()))?
    }

    async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Connection) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || change(&mut lock(&inner.writer)))
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?
    }

    /// The row of `name`, if any.
    pub async fn get(&self, name: &StoredName) -> Result<Option<ObjectRecord>, IndexError> {
        let name = name.clone();
        self.read(move |connection| {
            let (kind, name) = split(&name);
            let row = connection
                .query_row(
                    "SELECT size, stored_size, encoding, etag, hits, last_access, meta, checked
                     FROM objects WHERE kind = ?1 AND name = ?2",
                    params![kind, name],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, i64>(4)?,
                            row.get::<_, i64>(5)?,
                            row.get::<_, Option<String>>(6)?,
                            row.get::<_, i64>(7)?,
                        ))
                    },
                )
                .optional()?;
            row.map(
                |(size, stored_size, encoding, etag, hits, last_access_ms, meta, checked_ms)| {
                    Ok(ObjectRecord {
                        size: size as u64,
                        stored_size: stored_size as u64,
                        encoding: Encoding::from_name(&encoding)
                            .ok_or_else(|| IndexError::Corrupt(format!("encoding {encoding:?}")))?,
                        etag,
                        hits: hits as u64,
                        last_access_ms,
                        meta,
                        checked_ms,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    /// Inserts or replaces the row of `name`. A replaced row keeps its hits and
    /// creation time.
    pub async fn put(&self, name: &StoredName, object: NewObject) -> Result<(), IndexError> {
        let name = name.clone();
        self.write(move |connection| upsert(connection, &name, &object, now_ms()))
            .await
    }

    /// Notes that storage has just confirmed `name` exists.
    pub async fn confirm(&self, name: &StoredName) -> Result<(), IndexError> {
        let name = name.clone();
        self.write(move |connection| {
            let (kind, name) = split(&name);
            connection
                .prepare_cached("UPDATE objects SET checked = ?3 WHERE kind = ?1 AND name = ?2")?
                .execute(params![kind, name, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// The digests among `digests` with no blob row, or with one storage
    /// last confirmed before `confirmed_since_ms`; in order, without
    /// duplicates. With `i64::MIN` this is [`Index::missing`].
    pub async fn unconfirmed(
        &self,
        digests: Vec<Digest>,
        confirmed_since_ms: i64,
    ) -> Result<Vec<Digest>, IndexError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT 1 FROM objects WHERE kind = 'cas' AND name = ?1 AND checked >= ?2",
            )?;
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for digest in digests {
                if seen.insert(digest)
                    && !statement.exists(params![digest.to_string(), confirmed_since_ms])?
                {
                    out.push(digest);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes the row of `name`. Returns whether there was one.
    pub async fn remove(&self, name: &StoredName) -> Result<bool, IndexError> {
        let name = name.clone();
        self.write(move |connection| {
            let (kind, name) = split(&name);
            let removed = connection.execute(
                "DELETE FROM objects WHERE kind = ?1 AND name = ?2",
                params![kind, name],
            )?;
            Ok(removed > 0)
        })
        .await
    }

    /// The digests among `digests` that have no blob, in order, without duplicates.
    pub async fn missing(&self, digests: Vec<Digest>) -> Result<Vec<Digest>, IndexError> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT 1 FROM objects WHERE kind = 'cas' AND name = ?1")?;
            let mut seen = std::collections::HashSet::new();
            let mut missing = Vec::new();
            for digest in digests {
                if seen.insert(digest) && !statement.exists(params![digest.to_string()])? {
                    missing.push(digest);
                }
            }
            Ok(missing)
        })
        .await
    }

    /// Notes a read of `name`; written to SQLite by the next [`Index::flush_access`].
    pub fn record_access(&self, name: &StoredName) {
        let mut pending = self
            .inner
            .pending_access
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = now_ms();
        match pending.get_mut(name) {
            Some(entry) => *entry = (entry.0 + 1, now),
            None => {
                pending.insert(name.clone(), (1, now));
            }
        }
    }

    /// Writes the gathered hits and access times in one transaction.
    pub async fn flush_access(&self) -> Result<(), IndexError> {
        let batch: Vec<_> = {
            let mut pending = self
                .inner
                .pending_access
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut statement = transaction.prepare_cached(
                    "UPDATE objects SET hits = hits + ?3, last_access = max(last_access, ?4)
                     WHERE kind = ?1 AND name = ?2",
                )?;
                for (name, (hits, last_access)) in batch {
                    let (kind, name) = split(&name);
                    statement.execute(params![kind, name, hits as i64, last_access])?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Objects by last access, oldest first (then oldest created), skipping
    /// `offset`: the eviction order. Rows the binary cannot read are left out.
    pub async fn least_recently_used(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(StoredName, u64)>, IndexError> {
        self.read(move |connection| {
            eviction_order(
                connection,
                "SELECT kind, name, stored_size FROM objects
                 ORDER BY last_access, created, kind, name LIMIT ?1 OFFSET ?2",
                params![limit as i64, offset as i64],
            )
        })
        .await
    }

    /// The last recorded access of every object, by name.
    pub async fn access_times(&self) -> Result<HashMap<StoredName, i64>, IndexError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT kind, name, last_access FROM objects")?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = HashMap::new();
            for row in rows {
                let (kind, name, last_access) = row?;
                if let Some(name) = StoredName::from_index_key(&kind, &name) {
                    out.insert(name, last_access);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Bytes (as stored) charged to `owner`.
    pub async fn owned_bytes(&self, owner: &Namespace) -> Result<u64, IndexError> {
        let owner = owner.as_str().to_owned();
        self.read(move |connection| {
            let bytes: i64 = connection
                .prepare_cached(
                    "SELECT COALESCE(SUM(stored_size), 0) FROM objects WHERE owner = ?1",
                )?
                .query_row(params![owner], |row| row.get(0))?;
            Ok(bytes as u64)
        })
        .await
    }

    /// The objects charged to `owner` by last access, oldest first,
    /// skipping `offset`: a namespace's eviction order.
    pub async fn owned_least_recently_used(
        &self,
        owner: &Namespace,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(StoredName, u64)>, IndexError> {
        let owner = owner.as_str().to_owned();
        self.read(move |connection| {
            eviction_order(
                connection,
                "SELECT kind, name, stored_size FROM objects WHERE owner = ?1
                 ORDER BY last_access, created, kind, name LIMIT ?2 OFFSET ?3",
                params![owner, limit as i64, offset as i64],
            )
        })
        .await
    }

    /// Charges the objects among `names` that are charged to a namespace
    /// `released` names to `owner` instead (`None`: the default namespace):
    /// a blob a namespace without a quota has stored (or found present) is
    /// never evicted by another namespace's quota.
    pub async fn claim(
        &self,
        names: Vec<StoredName>,
        owner: Option<Namespace>,
        released: impl Fn(&Namespace) -> bool + Send + 'static,
    ) -> Result<(), IndexError> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut find = transaction.prepare_cached(
                    "SELECT owner FROM objects WHERE kind = ?1 AND name = ?2 AND owner IS NOT NULL",
                )?;
                let mut update = transaction.prepare_cached(
                    "UPDATE objects SET owner = ?3 WHERE kind = ?1 AND name = ?2",
                )?;
                for name in names {
                    let (kind, name) = split(&name);
                    let current: Option<String> = find
                        .query_row(params![kind, name], |row| row.get(0))
                        .optional()?;
                    let charged = current.and_then(|text| Namespace::parse(&text).ok());
                    let moves = charged.is_some_and(|charged| {
                        released(&charged) && Some(&charged) != owner.as_ref()
                    });
                    if moves {
                        let owner = owner.as_ref().map(Namespace::as_str);
                        update.execute(params![kind, name, owner])?;
                    }
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Objects, bytes and bytes stored per namespace charged (`default`
    /// for rows without an owner), largest first.
    pub async fn usage_by_owner(&self) -> Result<Vec<NamespaceStats>, IndexError> {
        self.read(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT COALESCE(owner, 'default'), COUNT(*), COALESCE(SUM(size), 0),
                        COALESCE(SUM(stored_size), 0)
                 FROM objects GROUP BY owner ORDER BY 4 DESC",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(NamespaceStats {
                    namespace: row.get(0)?,
                    objects: row.get::<_, i64>(1)? as u64,
                    bytes: row.get::<_, i64>(2)? as u64,
                    stored_bytes: row.get::<_, i64>(3)? as u64,
                    quota_bytes: None,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Totals for `/v1/stats` and `/metrics`.
    pub async fn totals(&self) -> Result<StoredStats, IndexError> {
        self.read(|connection| {
            let mut stats = StoredStats::default();
            let mut statement = connection.prepare_cached(
                "SELECT kind, COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(stored_size), 0)
                 FROM objects GROUP BY kind",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (kind, count, size, stored) = row?;
                match kind.as_str() {
                    "cas" => stats.blobs = count as u64,
                    "ac" => stats.action_entries = count as u64,
                    _ => stats.protocol_entries += count as u64,
                }
                stats.bytes += size as u64;
                stats.stored_bytes += stored as u64;
            }
            Ok(stats)
        })
        .await
    }

    /// Replaces the whole content of the index with `rows` in one transaction
    /// (used by `reindex`).
    pub async fn replace_all(&self, rows: Vec<(StoredName, NewObject)>) -> Result<(), IndexError> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            transaction.execute("DELETE FROM objects", [])?;
            let now = now_ms();
            for (name, object) in rows {
                upsert(&transaction, &name, &object, now)?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}

/// What the tokens table looked like: its rows, its newest creation and its
/// newest revocation. Any create or revoke changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokensFingerprint {
    /// Rows.
    pub rows: i64,
    /// Newest `created`, Unix milliseconds (0 for none).
    pub newest_created: i64,
    /// Newest `revoked`, Unix milliseconds (0 for none).
    pub newest_revoked: i64,
}

/// The connection that watches the tokens table, and what it last saw.
struct TokenWatch {
    connection: rusqlite::Connection,
    /// SQLite's `data_version` at the last look: it changes when any other
    /// connection commits.
    data_version: Option<i64>,
    /// Row count, newest creation and newest revocation at the last look.
    fingerprint: TokensFingerprint,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: u64) -> NewObject {
        NewObject {
            size,
            stored_size: size + 16,
            encoding: Encoding::Raw,
            etag: None,
            meta: None,
            owner: None,
        }
    }

    #[tokio::test]
    async fn rows_round_trip_and_survive_reopening() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("nested/index.sqlite");
        let digest = Digest::of(b"a");
        let name = StoredName::Blob(digest);
        {
            let index = Index::open(&path).unwrap();
            assert_eq!(index.get(&name).await.unwrap(), None);
            index.put(&name, blob(1)).await.unwrap();
            index.record_access(&name);
            index.record_access(&name);
            index.flush_access().await.unwrap();
        }
        let index = Index::open(&path).unwrap();
        let record = index.get(&name).await.unwrap().unwrap();
        assert_eq!((record.size, record.stored_size, record.hits), (1, 17, 2));
        assert!(index.remove(&name).await.unwrap());
        assert!(!index.remove(&name).await.unwrap());
    }

    #[tokio::test]
    async fn missing_keeps_order_and_drops_duplicates() {
        let folder = tempfile::tempdir().unwrap();
        let index = Index::open(&folder.path().join("i.sqlite")).unwrap();
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| Digest::of(x));
        index.put(&StoredName::Blob(b), blob(1)).await.unwrap();
        assert_eq!(index.missing(vec![c, b, a, c]).await.unwrap(), vec![c, a]);
    }

    #[tokio::test]
    async fn refuses_a_schema_from_the_future() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("i.sqlite");
        Index::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(Index::open(&path), Err(IndexError::TooNew(99, _))));
    }
}
