//! The storage sink (`file://`): canal-json or csv files in TiCDC's directory layout.
//!
//! Why files, and why TiCDC's layout: data lakes and batch loaders pick changes up from object
//! storage, and tools that already read TiCDC's storage sink output (its storage consumer, Flink
//! jobs) read Tidal's too. See [`path`] for the layout.
//!
//! Durability: all file work happens on one writer thread, in the order [`Sink::write`] was
//! called. A batch's future resolves only after every data file it touched was fsynced, the
//! directories of new files were fsynced, and the index files naming new files were replaced
//! atomically (temporary file, fsync, rename, fsync of the directory). Schema files and the root
//! `metadata` file are replaced the same way, so readers never see a torn one.
//!
//! Files grow: a batch is appended to the current file of each data directory it touches. A new
//! file is started when the next transaction would push the current one past `file-size`, when
//! the current one is older than `flush-interval`, and after any error. So every file except the
//! one named in `meta/CDC.index` is final; the named one may still grow, by whole records.
//! (TiCDC writes each file once, whole; a consumer that reads each file once should only read
//! files below the one in the index, or follow the newest by offset, reading only terminated
//! records.)
//!
//! Restarts and replays: a sink opened on an existing directory never appends to a file that a
//! previous run left, since its tail may be torn by a crash; it continues with the next index
//! after both the index file and the largest existing data file. The dataflow replays from its
//! checkpoint after a restart or a failed batch, so rows after the checkpoint can appear twice
//! (once in an old file, once in a new one). Files are never rewritten, so a replay never
//! corrupts them; consumers drop duplicates by commit ts (`_tidb.commitTs` with
//! `enable-tidb-extension=true`, or csv `include-commit-ts=true`), exactly as with TiCDC, whose
//! storage sink is at-least-once as well. A torn tail can only hold records of a batch that was
//! never reported durable; [`crate::encode::reader`] skips an unterminated tail.

pub mod config;
pub mod consumer;
pub mod path;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use tidal_model::{DdlEvent, Ts};
use tokio::sync::oneshot;

use crate::encode::{RowEncoder, new_encoder};
use crate::sink::{FlushReport, Sink, SinkError, TableDef, TxnBatch};

pub use config::{DateSeparator, StorageConfig};
use path::{
    DataDir, METADATA_FILE, SchemaFile, data_file_name, date_string, parse_data_file_index,
};

type Reply<T> = oneshot::Sender<Result<T, SinkError>>;

enum Command {
    Write(TxnBatch, Reply<FlushReport>),
    Ddl(Box<DdlEvent>, Option<Arc<TableDef>>, Reply<()>),
    Checkpoint(Ts, Reply<()>),
    Close(Reply<()>),
}

/// The `file://` sink. See the module documentation for the layout and the guarantees.
#[derive(Debug)]
pub struct StorageSink {
    root: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
}

impl StorageSink {
    /// Creates the root directory if needed and starts the writer thread.
    pub async fn open(config: StorageConfig) -> Result<StorageSink, SinkError> {
        let root = config.root.clone();
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let (tx, rx) = mpsc::channel();
        let mut worker = Worker::new(config);
        std::thread::Builder::new()
            .name("tidal-storage-sink".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| io_err(&root, e))?;
        Ok(StorageSink {
            root,
            tx: Mutex::new(Some(tx)),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> BoxFuture<'static, Result<T, SinkError>> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.tx.lock() {
            Ok(guard) => guard
                .as_ref()
                .is_some_and(|tx| tx.send(make(reply)).is_ok()),
            Err(_) => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(SinkError::Closed);
            }
            rx.await.unwrap_or(Err(SinkError::Closed))
        })
    }
}

impl Sink for StorageSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn write(&self, batch: TxnBatch) -> BoxFuture<'static, Result<FlushReport, SinkError>> {
        self.send(|r| Command::Write(batch, r))
    }

    fn execute_ddl(
        &self,
        ddl: DdlEvent,
        table: Option<Arc<TableDef>>,
    ) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(|r| Command::Ddl(Box::new(ddl), table, r))
    }

    fn update_checkpoint(&self, ts: Ts) -> BoxFuture<'static, Result<(), SinkError>> {
        self.send(|r| Command::Checkpoint(ts, r))
    }

    fn close(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        let fut = self.send(Command::Close);
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
        Box::pin(async move {
            match fut.await {
                Ok(()) | Err(SinkError::Closed) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

fn io_err(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `path` with `bytes` atomically: write a hidden temporary file beside it, fsync it,
/// rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    sync_dir(dir)
}

struct OpenFile {
    file: File,
    path: PathBuf,
    size: u64,
    opened: Instant,
}

struct DirState {
    next_index: u64,
    current: Option<OpenFile>,
}

struct Worker {
    config: StorageConfig,
    encoder: Box<dyn RowEncoder>,
    dirs: HashMap<DataDir, DirState>,
    schema_files: HashSet<PathBuf>,
    checkpoint: u64,
}

impl Worker {
    fn new(config: StorageConfig) -> Worker {
        let encoder = new_encoder(&config.encoder);
        Worker {
            config,
            encoder,
            dirs: HashMap::new(),
            schema_files: HashSet::new(),
            checkpoint: 0,
        }
    }

    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Write(batch, reply) => {
                    let r = self.write(&batch);
                    if r.is_err() {
                        // Never append after a failure: the current files may hold part of the
                        // batch. The next write starts new files.
                        for d in self.dirs.values_mut() {
                            d.current = None;
                        }
                    }
                    let _ = reply.send(r);
                }
                Command::Ddl(ddl, table, reply) => {
                    let _ = reply.send(self.ddl(&ddl, table.as_deref()));
                }
                Command::Checkpoint(ts, reply) => {
                    let _ = reply.send(self.update_checkpoint(ts));
                }
                Command::Close(reply) => {
                    self.dirs.clear();
                    let _ = reply.send(Ok(()));
                    return;
                }
            }
        }
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.config.root.join(rel)
    }

    fn write_schema_file(&mut self, file: &SchemaFile) -> Result<(), SinkError> {
        let rel = file.rel_path();
        if self.schema_files.contains(&rel) {
            return Ok(());
        }
        let abs = self.abs(&rel);
        if !abs.exists() {
            write_atomic(&abs, &file.to_json())?;
        }
        self.schema_files.insert(rel);
        Ok(())
    }

    /// Loads a data directory's state: the next index is one past both the index file's and
    /// the largest existing data file's.
    fn load_dir(&self, dir: &DataDir) -> Result<DirState, SinkError> {
        let ext = self.encoder.file_extension().to_string();
        let abs_dir = self.abs(&dir.rel_path());
        let mut max = 0u64;
        let index_path = self.abs(&dir.index_path());
        match fs::read_to_string(&index_path) {
            Ok(s) => match parse_data_file_index(s.trim_end_matches(['\n', '\r']), &ext) {
                Some(i) => max = i,
                None => {
                    tracing::warn!(path = %index_path.display(), "ignoring unreadable index file")
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&index_path, e)),
        }
        match fs::read_dir(&abs_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| io_err(&abs_dir, e))?;
                    if let Some(i) =
                        parse_data_file_index(&entry.file_name().to_string_lossy(), &ext)
                    {
                        max = max.max(i);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&abs_dir, e)),
        }
        Ok(DirState {
            next_index: max.saturating_add(1),
            current: None,
        })
    }

    fn write(&mut self, batch: &TxnBatch) -> Result<FlushReport, SinkError> {
        let date = date_string(self.config.date_separator, SystemTime::now());
        let mut report = FlushReport::default();
        // Encode first, grouped by data directory in order of appearance; one chunk per
        // transaction so that files rotate between transactions.
        let mut order: Vec<DataDir> = Vec::new();
        let mut chunks: HashMap<DataDir, Vec<Vec<u8>>> = HashMap::new();
        for txn in &batch.txns {
            let def = &txn.table;
            let schema_file = SchemaFile::for_table(&def.schema_name, &def.info, def.version);
            self.write_schema_file(&schema_file)?;
            let dir = DataDir {
                schema: def.schema_name.clone(),
                table: def.info.name.O.clone(),
                version: def.version,
                date: date.clone(),
            };
            let mut buf = Vec::new();
            let rows = self.encoder.encode_txn(txn, &mut buf)?;
            report.rows += rows as u64;
            report.bytes += buf.len() as u64;
            report.max_commit_ts = report.max_commit_ts.max(txn.commit_ts.0);
            if buf.is_empty() {
                continue;
            }
            if !chunks.contains_key(&dir) {
                order.push(dir.clone());
            }
            chunks.entry(dir).or_default().push(buf);
        }

        // Close files that have been open for a flush interval, touched or not.
        let interval = self.config.flush_interval;
        for state in self.dirs.values_mut() {
            if state
                .current
                .as_ref()
                .is_some_and(|f| f.opened.elapsed() >= interval)
            {
                state.current = None;
            }
        }

        let ext = self.encoder.file_extension().to_string();
        let width = self.config.file_index_width;
        let file_size = self.config.file_size;
        let mut new_index: Vec<(DataDir, String)> = Vec::new();
        for dir in order {
            if !self.dirs.contains_key(&dir) {
                let state = self.load_dir(&dir)?;
                self.dirs.insert(dir.clone(), state);
            }
            let abs_dir = self.abs(&dir.rel_path());
            let Some(state) = self.dirs.get_mut(&dir) else {
                continue;
            };
            let mut created = None;
            for chunk in chunks.remove(&dir).unwrap_or_default() {
                let len = chunk.len() as u64;
                let rotate = match &state.current {
                    None => true,
                    Some(f) => f.size > 0 && f.size.saturating_add(len) > file_size,
                };
                if rotate {
                    if let Some(f) = state.current.take() {
                        f.file.sync_data().map_err(|e| io_err(&f.path, e))?;
                    }
                    fs::create_dir_all(&abs_dir).map_err(|e| io_err(&abs_dir, e))?;
                    let (file, path, name) = loop {
                        let name = data_file_name(state.next_index, width, &ext);
                        let path = abs_dir.join(&name);
                        state.next_index = state.next_index.saturating_add(1);
                        match OpenOptions::new().write(true).create_new(true).open(&path) {
                            Ok(file) => break (file, path, name),
                            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                            Err(e) => return Err(io_err(&path, e)),
                        }
                    };
                    state.current = Some(OpenFile {
                        file,
                        path,
                        size: 0,
                        opened: Instant::now(),
                    });
                    created = Some(name);
                }
                if let Some(f) = state.current.as_mut() {
                    f.file.write_all(&chunk).map_err(|e| io_err(&f.path, e))?;
                    f.size = f.size.saturating_add(len);
                }
            }
            if let Some(f) = state.current.as_ref() {
                f.file.sync_data().map_err(|e| io_err(&f.path, e))?;
            }
            if let Some(name) = created {
                sync_dir(&abs_dir)?;
                new_index.push((dir.clone(), name));
            }
        }
        for (dir, name) in new_index {
            let path = self.abs(&dir.index_path());
            write_atomic(&path, format!("{name}\n").as_bytes())?;
        }
        Ok(report)
    }

    fn ddl(&mut self, ddl: &DdlEvent, table: Option<&TableDef>) -> Result<(), SinkError> {
        let mut files: Vec<SchemaFile> = Vec::new();
        if !ddl.multiple_table_infos.is_empty() {
            for info in &ddl.multiple_table_infos {
                files.push(SchemaFile::for_table(
                    &ddl.schema_name,
                    info,
                    ddl.commit_ts.0,
                ));
            }
        } else if let Some(info) = ddl.table_info.as_deref() {
            files.push(SchemaFile::for_table(
                &ddl.schema_name,
                info,
                ddl.commit_ts.0,
            ));
        } else if let Some(def) = table.filter(|_| !ddl.table_name.is_empty()) {
            files.push(SchemaFile::for_table(
                &ddl.schema_name,
                &def.info,
                ddl.commit_ts.0,
            ));
        } else {
            files.push(SchemaFile::without_columns(
                &ddl.schema_name,
                &ddl.table_name,
                ddl.commit_ts.0,
            ));
        }
        for mut f in files {
            f.query = ddl.query.clone();
            f.action = u8::try_from(ddl.action.0).unwrap_or(0);
            self.write_schema_file(&f)?;
        }
        Ok(())
    }

    fn update_checkpoint(&mut self, ts: Ts) -> Result<(), SinkError> {
        if ts.0 < self.checkpoint {
            return Ok(());
        }
        let path = self.config.root.join(METADATA_FILE);
        write_atomic(&path, format!("{{\"checkpoint-ts\":{}}}", ts.0).as_bytes())?;
        self.checkpoint = ts.0;
        Ok(())
    }
}
