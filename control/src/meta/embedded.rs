//! [`EmbeddedStore`]: the metadata store for a single process, with no external service.
//!
//! A one-machine deployment should not need an etcd just to remember its changefeeds, yet the
//! coordinator code must not care which store it talks to. So this store reproduces etcd's data
//! model exactly (revisions, versions, CAS transactions, watches, leases — see
//! [`super::store`]) on top of an in-memory `BTreeMap`, made durable by a write-ahead log:
//!
//! * Every committed change (a transaction's writes, a lease grant or revoke) is appended to
//!   `wal` as one framed record and `fsync`ed **before** it becomes visible. A frame is
//!   `len:u32 | crc32(len):u32 | crc32(payload):u32 | payload`, all little-endian.
//! * On open the log is replayed over the last snapshot. A damaged frame with no valid frame
//!   after it is a torn tail (a crash mid-append): it is cut off with a warning. A damaged frame
//!   followed by valid ones means the middle of the log is corrupt: opening fails with
//!   [`MetaError::Corrupt`] rather than silently dropping acknowledged writes.
//! * When the log grows past [`EmbeddedOptions::compact_wal_bytes`] the whole state is written
//!   to `snapshot` (temp file + fsync + rename) and the log is replaced by an empty one (same
//!   dance). Records carry a sequence index and the snapshot remembers the last index it
//!   contains, so a crash between the two steps only leaves already-covered records behind,
//!   which replay skips.
//!
//! Watches and leases are in-process: watchers get events through unbounded channels (history
//! since the last snapshot is kept in memory, bounded by [`EmbeddedOptions::history_events`]),
//! and a tokio task expires leases. Lease deadlines are not persisted: after a restart every
//! lease gets its full TTL again, as etcd does after a leader change.
//!
//! One process at a time: opening takes an exclusive lock on `<dir>/LOCK` (released when the
//! store is dropped or the process dies), so a second node pointed at the same data dir fails
//! to start with a clear error instead of interleaving its log with the first one's.
//!
//! File I/O happens synchronously under the state lock; metadata writes are rare (checkpoints
//! every few seconds), so the short `fsync` stall on a runtime thread is accepted for the
//! simplicity of a single, totally ordered commit path.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::channel::mpsc;
use parking_lot::Mutex;

use super::store::{
    EventKind, KeyValue, Lease, LeaseId, MetaError, MetaStore, Op, OpResponse, Revision, Txn,
    TxnResult, WatchEvent, WatchStream,
};
use tidal_model::crc32::crc32;

const WAL_FILE: &str = "wal";
const SNAPSHOT_FILE: &str = "snapshot";
/// The lock file that keeps a second process off the same data dir.
const LOCK_FILE: &str = "LOCK";
const FRAME_HEADER: usize = 12;
/// Upper bound of one frame's payload; anything larger is treated as damage.
const MAX_FRAME: u32 = 1 << 30;
const TAG_RECORD: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;

/// Tuning knobs of the [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Compact (snapshot + empty log) once the log exceeds this many bytes.
    pub compact_wal_bytes: u64,
    /// How many watch events to keep for watches that start in the past.
    pub history_events: usize,
    /// How often the lease reaper runs.
    pub lease_tick: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            compact_wal_bytes: 4 << 20,
            history_events: 10_000,
            lease_tick: Duration::from_millis(100),
        }
    }
}

/// A single-process [`MetaStore`] persisted in a data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    opts: EmbeddedOptions,
    state: Mutex<State>,
    /// Holds the data dir's exclusive lock for as long as the store lives.
    _lock: File,
}

#[derive(Debug)]
struct LeaseState {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
struct Watcher {
    prefix: Vec<u8>,
    start: Revision,
    tx: mpsc::UnboundedSender<Result<WatchEvent, MetaError>>,
}

#[derive(Debug)]
struct State {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    revision: Revision,
    leases: HashMap<LeaseId, LeaseState>,
    next_lease: LeaseId,
    wal: File,
    wal_len: u64,
    wal_index: u64,
    history: VecDeque<WatchEvent>,
    /// Events at or below this revision are no longer in `history`.
    compacted: Revision,
    watchers: Vec<Watcher>,
    /// Set when the log could not be restored after a failed append; all writes then fail.
    poisoned: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mutation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// One log record: everything one commit changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    index: u64,
    /// The revision of `mutations` (0 when there are none).
    revision: Revision,
    grants: Vec<(LeaseId, i64)>,
    revokes: Vec<LeaseId>,
    mutations: Vec<Mutation>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    wal_index: u64,
    revision: Revision,
    next_lease: LeaseId,
    leases: Vec<(LeaseId, i64)>,
    kvs: Vec<KeyValue>,
}

// ---------------------------------------------------------------------------------------------
// Encoding

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) -> Result<(), MetaError> {
        let n = u32::try_from(n)
            .map_err(|_| MetaError::InvalidArgument(format!("item of {n} bytes is too large")))?;
        self.u32(n);
        Ok(())
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), MetaError> {
        self.len(b.len())?;
        self.0.extend_from_slice(b);
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: need {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A count of items that each take at least `min_item` bytes, bounded by what is left.
    fn count(&mut self, min_item: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(format!(
                "count {n} exceeds the remaining {} bytes",
                self.buf.len()
            ));
        }
        Ok(n)
    }
    fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.buf.len()))
        }
    }
}

impl Record {
    fn encode(&self) -> Result<Vec<u8>, MetaError> {
        let mut w = Writer(Vec::new());
        w.u8(TAG_RECORD);
        w.u64(self.index);
        w.i64(self.revision);
        w.len(self.grants.len())?;
        for (id, ttl) in &self.grants {
            w.i64(*id);
            w.i64(*ttl);
        }
        w.len(self.revokes.len())?;
        for id in &self.revokes {
            w.i64(*id);
        }
        w.len(self.mutations.len())?;
        for m in &self.mutations {
            match m {
                Mutation::Put { key, value, lease } => {
                    w.u8(1);
                    w.bytes(key)?;
                    w.bytes(value)?;
                    w.i64(*lease);
                }
                Mutation::Delete { key } => {
                    w.u8(2);
                    w.bytes(key)?;
                }
            }
        }
        Ok(w.0)
    }

    fn decode(buf: &[u8]) -> Result<Record, String> {
        let mut r = Reader { buf };
        if r.u8()? != TAG_RECORD {
            return Err("not a log record".into());
        }
        let index = r.u64()?;
        let revision = r.i64()?;
        let n = r.count(16)?;
        let mut grants = Vec::with_capacity(n);
        for _ in 0..n {
            grants.push((r.i64()?, r.i64()?));
        }
        let n = r.count(8)?;
        let mut revokes = Vec::with_capacity(n);
        for _ in 0..n {
            revokes.push(r.i64()?);
        }
        let n = r.count(5)?;
        let mut mutations = Vec::with_capacity(n);
        for _ in 0..n {
            match r.u8()? {
                1 => {
                    let key = r.bytes()?;
                    let value = r.bytes()?;
                    let lease = r.i64()?;
                    mutations.push(Mutation::Put { key, value, lease });
                }
                2 => mutations.push(Mutation::Delete { key: r.bytes()? }),
                t => return Err(format!("unknown mutation kind {t}")),
            }
        }
        r.finish()?;
        Ok(Record {
            index,
            revision,
            grants,
            revokes,
            mutations,
        })
    }
}

impl Snapshot {
    fn encode(&self) -> Result<Vec<u8>, MetaError> {
        let mut w = Writer(Vec::new());
        w.u8(TAG_SNAPSHOT);
        w.u64(self.wal_index);
        w.i64(self.revision);
        w.i64(self.next_lease);
        w.len(self.leases.len())?;
        for (id, ttl) in &self.leases {
            w.i64(*id);
            w.i64(*ttl);
        }
        w.len(self.kvs.len())?;
        for kv in &self.kvs {
            w.bytes(&kv.key)?;
            w.bytes(&kv.value)?;
            w.i64(kv.create_revision);
            w.i64(kv.mod_revision);
            w.i64(kv.version);
            w.i64(kv.lease);
        }
        Ok(w.0)
    }

    fn decode(buf: &[u8]) -> Result<Snapshot, String> {
        let mut r = Reader { buf };
        if r.u8()? != TAG_SNAPSHOT {
            return Err("not a snapshot".into());
        }
        let wal_index = r.u64()?;
        let revision = r.i64()?;
        let next_lease = r.i64()?;
        let n = r.count(16)?;
        let mut leases = Vec::with_capacity(n);
        for _ in 0..n {
            leases.push((r.i64()?, r.i64()?));
        }
        let n = r.count(40)?;
        let mut kvs = Vec::with_capacity(n);
        for _ in 0..n {
            kvs.push(KeyValue {
                key: r.bytes()?,
                value: r.bytes()?,
                create_revision: r.i64()?,
                mod_revision: r.i64()?,
                version: r.i64()?,
                lease: r.i64()?,
            });
        }
        r.finish()?;
        Ok(Snapshot {
            wal_index,
            revision,
            next_lease,
            leases,
            kvs,
        })
    }
}

fn frame(payload: &[u8]) -> Result<Vec<u8>, MetaError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| MetaError::InvalidArgument("metadata commit too large".into()))?;
    let len_bytes = len.to_le_bytes();
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32(&len_bytes).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Parses the frame at the start of `buf`: `Ok(Some((payload, frame_len)))`, or `Err(reason)`
/// when the bytes there are not a complete, intact frame.
fn parse_frame(buf: &[u8]) -> Result<(&[u8], usize), String> {
    let header = buf
        .get(..FRAME_HEADER)
        .ok_or_else(|| format!("incomplete frame header ({} bytes)", buf.len()))?;
    let word = |i: usize| -> u32 {
        let mut w = [0u8; 4];
        if let Some(s) = header.get(i..i + 4) {
            w.copy_from_slice(s);
        }
        u32::from_le_bytes(w)
    };
    let (len, len_crc, payload_crc) = (word(0), word(4), word(8));
    if crc32(&len.to_le_bytes()) != len_crc {
        return Err("frame header checksum mismatch".into());
    }
    if len > MAX_FRAME {
        return Err(format!("frame length {len} is too large"));
    }
    let end = FRAME_HEADER + len as usize;
    let payload = buf.get(FRAME_HEADER..end).ok_or_else(|| {
        format!(
            "incomplete frame: {} payload bytes of {len}",
            buf.len() - FRAME_HEADER
        )
    })?;
    if crc32(payload) != payload_crc {
        return Err("frame payload checksum mismatch".into());
    }
    Ok((payload, end))
}

/// Whether any intact frame starts somewhere in `buf`.
fn any_frame_in(buf: &[u8]) -> bool {
    (0..buf.len()).any(|i| buf.get(i..).is_some_and(|rest| parse_frame(rest).is_ok()))
}

fn sync_dir(dir: &Path) -> Result<(), MetaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MetaError::io(format!("fsync directory {}", dir.display()), e))
}

/// Writes `data` to `dir/name` atomically: temp file, fsync, rename, fsync the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), MetaError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| MetaError::io(format!("create {name}.tmp"), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| MetaError::io(format!("write {name}.tmp"), e))?;
    drop(f);
    fs::rename(&tmp, &target).map_err(|e| MetaError::io(format!("rename {name}.tmp"), e))?;
    sync_dir(dir)
}

/// Takes the data dir's exclusive lock, or fails naming the dir if another store holds it.
fn lock_dir(dir: &Path) -> Result<File, MetaError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| MetaError::io(format!("open {}", path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(MetaError::Unavailable {
            endpoint: dir.display().to_string(),
            reason: "another process (or store) already uses this data dir".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(MetaError::io(format!("lock {}", path.display()), e))
        }
    }
}

fn open_wal_for_append(path: &Path) -> Result<File, MetaError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| MetaError::io(format!("open {}", path.display()), e))
}

// ---------------------------------------------------------------------------------------------
// State

impl State {
    fn lease_detach(&mut self, key: &[u8], lease: LeaseId) {
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.remove(key);
        }
    }

    /// Applies mutations at `rev` (the caller has already checked `rev == revision + 1` when
    /// there are any); returns the watch events.
    fn apply(&mut self, rev: Revision, mutations: &[Mutation]) -> Vec<WatchEvent> {
        let mut events = Vec::with_capacity(mutations.len());
        for m in mutations {
            match m {
                Mutation::Put { key, value, lease } => {
                    let (create, version, old_lease) = match self.kvs.get(key) {
                        Some(old) => (
                            old.create_revision,
                            old.version.saturating_add(1),
                            old.lease,
                        ),
                        None => (rev, 1, 0),
                    };
                    if old_lease != *lease {
                        self.lease_detach(key, old_lease);
                    }
                    if *lease != 0
                        && let Some(l) = self.leases.get_mut(lease)
                    {
                        l.keys.insert(key.clone());
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: create,
                        mod_revision: rev,
                        version,
                        lease: *lease,
                    };
                    self.kvs.insert(key.clone(), kv.clone());
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Mutation::Delete { key } => {
                    if let Some(old) = self.kvs.remove(key) {
                        self.lease_detach(key, old.lease);
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                                lease: 0,
                            },
                        });
                    }
                }
            }
        }
        if !mutations.is_empty() {
            self.revision = rev;
        }
        events
    }

    fn apply_record(&mut self, rec: &Record, lease_now: Instant) -> Vec<WatchEvent> {
        for (id, ttl) in &rec.grants {
            self.leases.insert(
                *id,
                LeaseState {
                    ttl: *ttl,
                    deadline: lease_now + Duration::from_secs(u64::try_from(*ttl).unwrap_or(1)),
                    keys: BTreeSet::new(),
                },
            );
            self.next_lease = self.next_lease.max(id.saturating_add(1));
        }
        let events = self.apply(rec.revision, &rec.mutations);
        for id in &rec.revokes {
            self.leases.remove(id);
        }
        events
    }

    fn record_history(&mut self, events: &[WatchEvent], cap: usize) {
        self.history.extend(events.iter().cloned());
        while self.history.len() > cap {
            if let Some(ev) = self.history.pop_front() {
                self.compacted = self.compacted.max(ev.kv.mod_revision);
            }
        }
        // never keep half of a revision
        while self
            .history
            .front()
            .is_some_and(|ev| ev.kv.mod_revision <= self.compacted)
        {
            self.history.pop_front();
        }
    }

    fn notify(&mut self, events: &[WatchEvent]) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            for ev in events {
                if ev.kv.mod_revision >= w.start
                    && ev.kv.key.starts_with(&w.prefix)
                    && w.tx.unbounded_send(Ok(ev.clone())).is_err()
                {
                    return false;
                }
            }
            !w.tx.is_closed()
        });
    }
}

impl Inner {
    fn endpoint(&self) -> String {
        format!("embedded:{}", self.dir.display())
    }

    /// Durably appends one record, then applies it and notifies watchers.
    fn commit(&self, st: &mut State, mut rec: Record) -> Result<(), MetaError> {
        if let Some(reason) = &st.poisoned {
            return Err(MetaError::Unavailable {
                endpoint: self.endpoint(),
                reason: format!("store is read-only after a failed log write: {reason}"),
            });
        }
        rec.index = st.wal_index.saturating_add(1);
        let bytes = frame(&rec.encode()?)?;
        let before = st.wal_len;
        let written = st.wal.write_all(&bytes).and_then(|()| st.wal.sync_data());
        if let Err(e) = written {
            // Undo a partial append so the log stays a clean sequence of frames.
            if let Err(e2) = st.wal.set_len(before).and_then(|()| st.wal.sync_data()) {
                st.poisoned = Some(format!("append failed ({e}), truncate failed ({e2})"));
            }
            return Err(MetaError::io("append to the metadata log", e));
        }
        st.wal_len = before + bytes.len() as u64;
        st.wal_index = rec.index;
        let events = st.apply_record(&rec, Instant::now());
        st.record_history(&events, self.opts.history_events);
        st.notify(&events);
        if st.wal_len > self.opts.compact_wal_bytes
            && let Err(e) = self.compact_locked(st)
        {
            // The commit itself is durable; compaction is retried on the next write.
            tracing::warn!(error = %e, "embedded metadata store: compaction failed");
        }
        Ok(())
    }

    fn compact_locked(&self, st: &mut State) -> Result<(), MetaError> {
        let mut leases: Vec<(LeaseId, i64)> =
            st.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
        leases.sort_unstable();
        let snap = Snapshot {
            wal_index: st.wal_index,
            revision: st.revision,
            next_lease: st.next_lease,
            leases,
            kvs: st.kvs.values().cloned().collect(),
        };
        write_atomic(&self.dir, SNAPSHOT_FILE, &frame(&snap.encode()?)?)?;
        write_atomic(&self.dir, WAL_FILE, &[])?;
        st.wal = open_wal_for_append(&self.dir.join(WAL_FILE))?;
        st.wal_len = 0;
        Ok(())
    }

    fn revoke_locked(&self, st: &mut State, id: LeaseId) -> Result<(), MetaError> {
        let Some(lease) = st.leases.get(&id) else {
            return Err(MetaError::LeaseNotFound { id });
        };
        let mutations: Vec<Mutation> = lease
            .keys
            .iter()
            .map(|k| Mutation::Delete { key: k.clone() })
            .collect();
        let revision = if mutations.is_empty() {
            0
        } else {
            st.revision + 1
        };
        self.commit(
            st,
            Record {
                revision,
                revokes: vec![id],
                mutations,
                ..Record::default()
            },
        )
    }

    fn expire_leases(&self) {
        let mut st = self.state.lock();
        let now = Instant::now();
        let mut expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            if let Err(e) = self.revoke_locked(&mut st, id) {
                tracing::warn!(lease = id, error = %e, "embedded metadata store: lease expiry failed");
            }
        }
    }
}

fn read_file_if_exists(path: &Path) -> Result<Option<Vec<u8>>, MetaError> {
    match File::open(path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|e| MetaError::io(format!("read {}", path.display()), e))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetaError::io(format!("open {}", path.display()), e)),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options. Must be called inside
    /// a tokio runtime (the lease reaper is a tokio task).
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, MetaError> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens the store with explicit options.
    pub async fn open_with(
        dir: impl AsRef<Path>,
        opts: EmbeddedOptions,
    ) -> Result<Self, MetaError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| MetaError::io(format!("create data dir {}", dir.display()), e))?;
        let lock = lock_dir(&dir)?;
        let now = Instant::now();

        // 1. snapshot
        let snap_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match read_file_if_exists(&snap_path)? {
            None => None,
            Some(buf) => {
                let corrupt = |r: String| MetaError::corrupt(snap_path.display().to_string(), r);
                let (payload, used) = parse_frame(&buf).map_err(corrupt)?;
                if used != buf.len() {
                    return Err(corrupt(format!("{} trailing bytes", buf.len() - used)));
                }
                Some(Snapshot::decode(payload).map_err(corrupt)?)
            }
        };

        // 2. log
        let wal_path = dir.join(WAL_FILE);
        let wal_buf = read_file_if_exists(&wal_path)?.unwrap_or_default();
        let mut records = Vec::new();
        let mut offset = 0usize;
        let mut torn_at = None;
        while offset < wal_buf.len() {
            let rest = wal_buf.get(offset..).unwrap_or_default();
            match parse_frame(rest) {
                Ok((payload, used)) => {
                    let rec = Record::decode(payload).map_err(|r| {
                        MetaError::corrupt(
                            wal_path.display().to_string(),
                            format!("record at offset {offset}: {r}"),
                        )
                    })?;
                    records.push(rec);
                    offset += used;
                }
                Err(reason) => {
                    if any_frame_in(rest.get(1..).unwrap_or_default()) {
                        return Err(MetaError::corrupt(
                            wal_path.display().to_string(),
                            format!(
                                "damaged record at offset {offset} ({reason}) followed by intact records"
                            ),
                        ));
                    }
                    tracing::warn!(
                        offset,
                        dropped = rest.len(),
                        %reason,
                        "embedded metadata store: truncating torn log tail"
                    );
                    torn_at = Some(offset);
                    break;
                }
            }
        }
        if let Some(at) = torn_at {
            let f = OpenOptions::new()
                .write(true)
                .open(&wal_path)
                .map_err(|e| MetaError::io("open log for truncation", e))?;
            f.set_len(at as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| MetaError::io("truncate torn log tail", e))?;
        }

        // 3. rebuild state
        let wal = open_wal_for_append(&wal_path)?;
        sync_dir(&dir)?;
        let mut st = State {
            kvs: BTreeMap::new(),
            revision: 1,
            leases: HashMap::new(),
            next_lease: 1,
            wal,
            wal_len: torn_at.unwrap_or(wal_buf.len()) as u64,
            wal_index: 0,
            history: VecDeque::new(),
            compacted: 0,
            watchers: Vec::new(),
            poisoned: None,
        };
        if let Some(snap) = snapshot {
            st.revision = snap.revision;
            st.compacted = snap.revision;
            st.wal_index = snap.wal_index;
            st.next_lease = snap.next_lease;
            for (id, ttl) in snap.leases {
                st.leases.insert(
                    id,
                    LeaseState {
                        ttl,
                        deadline: now + Duration::from_secs(u64::try_from(ttl).unwrap_or(1)),
                        keys: BTreeSet::new(),
                    },
                );
            }
            for kv in snap.kvs {
                if kv.lease != 0
                    && let Some(l) = st.leases.get_mut(&kv.lease)
                {
                    l.keys.insert(kv.key.clone());
                }
                st.kvs.insert(kv.key.clone(), kv);
            }
        }
        for rec in records {
            if rec.index <= st.wal_index {
                continue; // already in the snapshot
            }
            if rec.index != st.wal_index + 1 {
                return Err(MetaError::corrupt(
                    wal_path.display().to_string(),
                    format!("record index {} after {}", rec.index, st.wal_index),
                ));
            }
            if !rec.mutations.is_empty() && rec.revision != st.revision + 1 {
                return Err(MetaError::corrupt(
                    wal_path.display().to_string(),
                    format!("record revision {} after {}", rec.revision, st.revision),
                ));
            }
            st.wal_index = rec.index;
            let events = st.apply_record(&rec, now);
            st.record_history(&events, opts.history_events);
        }

        let tick = opts.lease_tick;
        let inner = Arc::new(Inner {
            dir,
            opts,
            state: Mutex::new(st),
            _lock: lock,
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { break };
                inner.expire_leases();
            }
        });
        Ok(EmbeddedStore { inner })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes a snapshot and empties the log now.
    pub fn compact_now(&self) -> Result<(), MetaError> {
        let mut st = self.inner.state.lock();
        self.inner.compact_locked(&mut st)
    }

    /// Current size of the write-ahead log in bytes.
    pub fn wal_len(&self) -> u64 {
        self.inner.state.lock().wal_len
    }

    fn write_ops(&self, ops: Vec<Op>) -> Result<TxnResult, MetaError> {
        let mut st = self.inner.state.lock();
        self.run_txn(&mut st, true, ops)
    }

    /// Executes `ops` (the chosen branch) against the locked state.
    fn run_txn(
        &self,
        st: &mut State,
        succeeded: bool,
        ops: Vec<Op>,
    ) -> Result<TxnResult, MetaError> {
        let rev = st.revision + 1;
        let mut overlay: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
        let mut mutations = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let lease = lease.unwrap_or(0);
                    if lease != 0 && !st.leases.contains_key(&lease) {
                        return Err(MetaError::LeaseNotFound { id: lease });
                    }
                    let current = match overlay.get(&key) {
                        Some(v) => v.clone(),
                        None => st.kvs.get(&key).cloned(),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: current.as_ref().map_or(rev, |c| c.create_revision),
                        mod_revision: rev,
                        version: current.as_ref().map_or(1, |c| c.version.saturating_add(1)),
                        lease,
                    };
                    overlay.insert(key.clone(), Some(kv));
                    mutations.push(Mutation::Put { key, value, lease });
                    responses.push(OpResponse::Put);
                }
                Op::Delete { key } => {
                    let exists = match overlay.get(&key) {
                        Some(v) => v.is_some(),
                        None => st.kvs.contains_key(&key),
                    };
                    if exists {
                        overlay.insert(key.clone(), None);
                        mutations.push(Mutation::Delete { key });
                    }
                    responses.push(OpResponse::Delete {
                        deleted: u64::from(exists),
                    });
                }
                Op::Get { key } => {
                    let current = match overlay.get(&key) {
                        Some(v) => v.clone(),
                        None => st.kvs.get(&key).cloned(),
                    };
                    responses.push(OpResponse::Get(current));
                }
            }
        }
        if !mutations.is_empty() {
            self.inner.commit(
                st,
                Record {
                    revision: rev,
                    mutations,
                    ..Record::default()
                },
            )?;
        }
        Ok(TxnResult {
            succeeded,
            revision: st.revision,
            responses,
        })
    }
}

/// etcd refuses a transaction branch that writes one key twice (put+put or put+delete).
fn check_duplicates(ops: &[Op]) -> Result<(), MetaError> {
    let mut puts = BTreeSet::new();
    for op in ops {
        if let Op::Put { key, .. } = op
            && !puts.insert(key.as_slice())
        {
            return Err(MetaError::InvalidArgument(format!(
                "duplicate key given in txn request: {}",
                String::from_utf8_lossy(key)
            )));
        }
    }
    for op in ops {
        if let Op::Delete { key } = op
            && puts.contains(key.as_slice())
        {
            return Err(MetaError::InvalidArgument(format!(
                "duplicate key given in txn request: {}",
                String::from_utf8_lossy(key)
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MetaError> {
        Ok(self.inner.state.lock().kvs.get(key).cloned())
    }

    async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, MetaError> {
        let st = self.inner.state.lock();
        Ok(st
            .kvs
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, MetaError> {
        if key.is_empty() {
            return Err(MetaError::InvalidArgument("key is not provided".into()));
        }
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        };
        Ok(self.write_ops(vec![op])?.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool, MetaError> {
        let res = self.write_ops(vec![Op::delete(key)])?;
        Ok(res.responses.first() == Some(&OpResponse::Delete { deleted: 1 }))
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<u64, MetaError> {
        let mut st = self.inner.state.lock();
        let ops: Vec<Op> = st
            .kvs
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| Op::delete(k.clone()))
            .collect();
        let n = ops.len() as u64;
        self.run_txn(&mut st, true, ops)?;
        Ok(n)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, MetaError> {
        check_duplicates(&txn.success)?;
        check_duplicates(&txn.failure)?;
        let mut st = self.inner.state.lock();
        let ok = txn.compares.iter().all(|c| c.evaluate(st.kvs.get(&c.key)));
        let ops = if ok { txn.success } else { txn.failure };
        self.run_txn(&mut st, ok, ops)
    }

    async fn current_revision(&self) -> Result<Revision, MetaError> {
        Ok(self.inner.state.lock().revision)
    }

    async fn watch_prefix(
        &self,
        prefix: &[u8],
        from_revision: Revision,
    ) -> Result<WatchStream, MetaError> {
        let mut st = self.inner.state.lock();
        let start = if from_revision <= 0 {
            st.revision + 1
        } else {
            from_revision
        };
        if start <= st.compacted {
            return Err(MetaError::Compacted {
                requested: from_revision,
                compacted: st.compacted,
            });
        }
        let (tx, rx) = mpsc::unbounded();
        for ev in st.history.iter() {
            if ev.kv.mod_revision >= start && ev.kv.key.starts_with(prefix) {
                // the receiver is alive: we hold it
                let _ = tx.unbounded_send(Ok(ev.clone()));
            }
        }
        st.watchers.push(Watcher {
            prefix: prefix.to_vec(),
            start,
            tx,
        });
        Ok(rx.boxed())
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<Lease, MetaError> {
        let ttl = ttl_secs.max(1);
        let mut st = self.inner.state.lock();
        let id = st.next_lease;
        self.inner.commit(
            &mut st,
            Record {
                grants: vec![(id, ttl)],
                ..Record::default()
            },
        )?;
        Ok(Lease { id, ttl })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, MetaError> {
        let mut st = self.inner.state.lock();
        let lease = st
            .leases
            .get_mut(&id)
            .ok_or(MetaError::LeaseNotFound { id })?;
        lease.deadline =
            Instant::now() + Duration::from_secs(u64::try_from(lease.ttl).unwrap_or(1));
        Ok(lease.ttl)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), MetaError> {
        let mut st = self.inner.state.lock();
        self.inner.revoke_locked(&mut st, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_round_trip_exact_bytes() {
        let rec = Record {
            index: 7,
            revision: 9,
            grants: vec![(3, 10)],
            revokes: vec![2],
            mutations: vec![
                Mutation::Put {
                    key: b"a".to_vec(),
                    value: b"xy".to_vec(),
                    lease: 3,
                },
                Mutation::Delete { key: b"b".to_vec() },
            ],
        };
        let enc = rec.encode().unwrap();
        let mut expected = vec![TAG_RECORD];
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&9i64.to_le_bytes());
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3i64.to_le_bytes());
        expected.extend_from_slice(&10i64.to_le_bytes());
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&2i64.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.push(1);
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.push(b'a');
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(b"xy");
        expected.extend_from_slice(&3i64.to_le_bytes());
        expected.push(2);
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.push(b'b');
        assert_eq!(enc, expected);
        assert_eq!(Record::decode(&enc).unwrap(), rec);
    }

    #[test]
    fn frame_layout_and_damage() {
        let f = frame(b"abc").unwrap();
        assert_eq!(&f[..4], &3u32.to_le_bytes());
        assert_eq!(&f[4..8], &crc32(&3u32.to_le_bytes()).to_le_bytes());
        assert_eq!(&f[8..12], &crc32(b"abc").to_le_bytes());
        assert_eq!(&f[12..], b"abc");
        assert_eq!(parse_frame(&f).unwrap(), (&b"abc"[..], 15));
        assert!(parse_frame(&f[..14]).is_err());
        let mut bad = f.clone();
        bad[13] ^= 1;
        assert!(parse_frame(&bad).is_err());
    }

    #[test]
    fn snapshot_round_trip() {
        let snap = Snapshot {
            wal_index: 4,
            revision: 12,
            next_lease: 5,
            leases: vec![(4, 30)],
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                create_revision: 2,
                mod_revision: 11,
                version: 3,
                lease: 4,
            }],
        };
        assert_eq!(Snapshot::decode(&snap.encode().unwrap()).unwrap(), snap);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(&bytes);
            let _ = Snapshot::decode(&bytes);
            let _ = parse_frame(&bytes);
            let _ = any_frame_in(&bytes);
        }
    }
}
