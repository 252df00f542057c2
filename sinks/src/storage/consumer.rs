//! Reads a storage sink directory back: schema files, data files in replay order, the decoded
//! rows, and the checkpoint.
//!
//! Tests use it to check what the sink wrote; `tidal verify` will use it to compare a storage
//! downstream with the upstream. It follows the layout of [`super::path`] and decodes with the
//! independent [`crate::encode::reader`]. Csv files carry no column names, so their columns come
//! from the table's schema file of the same table version.

use std::fs;
use std::path::{Path, PathBuf};

use crate::encode::EncoderConfig;
use crate::encode::Protocol;
use crate::encode::reader::{
    CsvColumn, DecodeError, DecodedRow, parse_canal_json_rows, parse_csv_rows,
};
use crate::storage::path::{
    INDEX_FILE, METADATA_FILE, SchemaFile, parse_data_file_index, parse_schema_file_name,
};

/// Why a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents do not follow the format.
    #[error("{path}: {source}")]
    Decode {
        /// The file.
        path: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// A file or directory does not fit the layout.
    #[error("{path}: {reason}")]
    Layout {
        /// The path.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// A schema file found in the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSchemaFile {
    /// Path relative to the root.
    pub rel_path: PathBuf,
    /// The parsed file.
    pub file: SchemaFile,
}

/// A data file with its decoded rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Path relative to the root.
    pub rel_path: PathBuf,
    /// Database name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Table version.
    pub version: u64,
    /// Date directory, empty without one.
    pub date: String,
    /// File index.
    pub index: u64,
    /// The complete rows, in file order.
    pub rows: Vec<DecodedRow>,
    /// True if the file ends in an incomplete record.
    pub torn_tail: bool,
}

/// Everything read from a storage directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageContent {
    /// `checkpoint-ts` of the root `metadata` file, if present.
    pub checkpoint_ts: Option<u64>,
    /// Schema files, sorted by path.
    pub schema_files: Vec<FoundSchemaFile>,
    /// Data files sorted by (schema, table, version, date, index): replay order per table.
    pub data_files: Vec<DataFile>,
    /// Index files: (path relative to the root, the file name they hold).
    pub index_files: Vec<(PathBuf, String)>,
}

impl StorageContent {
    /// All rows of `schema`.`table` in replay order.
    pub fn rows_of(&self, schema: &str, table: &str) -> Vec<&DecodedRow> {
        self.data_files
            .iter()
            .filter(|f| f.schema == schema && f.table == table)
            .flat_map(|f| f.rows.iter())
            .collect()
    }

    /// Every file path relative to the root (schema, data, index, metadata), sorted.
    pub fn all_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .schema_files
            .iter()
            .map(|s| s.rel_path.clone())
            .chain(self.data_files.iter().map(|d| d.rel_path.clone()))
            .chain(self.index_files.iter().map(|(p, _)| p.clone()))
            .collect();
        if self.checkpoint_ts.is_some() {
            v.push(PathBuf::from(METADATA_FILE));
        }
        v.sort();
        v
    }
}

fn io(path: &Path, source: std::io::Error) -> ConsumeError {
    ConsumeError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn layout(path: &Path, reason: impl Into<String>) -> ConsumeError {
    ConsumeError::Layout {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Lists a directory's entries as (name, is_dir), sorted by name, skipping hidden temporary
/// files.
fn list(dir: &Path) -> Result<Vec<(String, bool)>, ConsumeError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = entry.file_type().map_err(|e| io(dir, e))?.is_dir();
        out.push((name, is_dir));
    }
    out.sort();
    Ok(out)
}

fn read_schema_dir(
    root: &Path,
    rel_meta: &Path,
    out: &mut Vec<FoundSchemaFile>,
) -> Result<(), ConsumeError> {
    for (name, is_dir) in list(&root.join(rel_meta))? {
        if is_dir || parse_schema_file_name(&name).is_none() {
            continue;
        }
        let rel = rel_meta.join(&name);
        let bytes = fs::read(root.join(&rel)).map_err(|e| io(&rel, e))?;
        let file: SchemaFile = serde_json::from_slice(&bytes)
            .map_err(|e| layout(&rel, format!("bad schema file: {e}")))?;
        out.push(FoundSchemaFile {
            rel_path: rel,
            file,
        });
    }
    Ok(())
}

fn is_date_dir(name: &str) -> bool {
    let b = name.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    match b.len() {
        4 => digits(0..4),
        7 => digits(0..4) && b.get(4) == Some(&b'-') && digits(5..7),
        10 => {
            digits(0..4)
                && b.get(4) == Some(&b'-')
                && digits(5..7)
                && b.get(7) == Some(&b'-')
                && digits(8..10)
        }
        _ => false,
    }
}

/// Reads the storage directory `root` written with `encoder`'s protocol and options.
pub fn read_storage_dir(
    root: &Path,
    encoder: &EncoderConfig,
) -> Result<StorageContent, ConsumeError> {
    let ext = encoder.protocol.file_extension();
    let mut content = StorageContent::default();
    let metadata = root.join(METADATA_FILE);
    if metadata.exists() {
        let bytes = fs::read(&metadata).map_err(|e| io(&metadata, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| layout(&metadata, format!("bad metadata: {e}")))?;
        content.checkpoint_ts = Some(
            v.get("checkpoint-ts")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| layout(&metadata, "no checkpoint-ts"))?,
        );
    }
    // (rel data dir, schema, table, version, date)
    let mut data_dirs: Vec<(PathBuf, String, String, u64, String)> = Vec::new();
    for (schema, is_dir) in list(root)? {
        if !is_dir {
            continue;
        }
        let schema_rel = PathBuf::from(&schema);
        for (table, is_dir) in list(&root.join(&schema_rel))? {
            if !is_dir {
                continue;
            }
            if table == "meta" {
                read_schema_dir(root, &schema_rel.join("meta"), &mut content.schema_files)?;
                continue;
            }
            let table_rel = schema_rel.join(&table);
            for (version, is_dir) in list(&root.join(&table_rel))? {
                if !is_dir {
                    continue;
                }
                if version == "meta" {
                    read_schema_dir(root, &table_rel.join("meta"), &mut content.schema_files)?;
                    continue;
                }
                let v: u64 = version
                    .parse()
                    .map_err(|_| layout(&table_rel.join(&version), "not a table version"))?;
                let version_rel = table_rel.join(&version);
                data_dirs.push((
                    version_rel.clone(),
                    schema.clone(),
                    table.clone(),
                    v,
                    String::new(),
                ));
                for (date, is_dir) in list(&root.join(&version_rel))? {
                    if is_dir && is_date_dir(&date) {
                        data_dirs.push((
                            version_rel.join(&date),
                            schema.clone(),
                            table.clone(),
                            v,
                            date,
                        ));
                    }
                }
            }
        }
    }
    content
        .schema_files
        .sort_by(|a, b| a.rel_path.cmp(&b.rel_path));

    for (dir_rel, schema, table, version, date) in data_dirs {
        let index_rel = dir_rel.join(INDEX_FILE);
        let index_abs = root.join(&index_rel);
        if index_abs.exists() {
            let s = fs::read_to_string(&index_abs).map_err(|e| io(&index_rel, e))?;
            content
                .index_files
                .push((index_rel, s.trim_end_matches('\n').to_string()));
        }
        let mut files: Vec<(u64, String)> = list(&root.join(&dir_rel))?
            .into_iter()
            .filter(|(_, d)| !d)
            .filter_map(|(n, _)| parse_data_file_index(&n, ext).map(|i| (i, n)))
            .collect();
        files.sort();
        if files.is_empty() {
            continue;
        }
        let columns: Vec<CsvColumn> = if encoder.protocol == Protocol::Csv {
            let sf = content
                .schema_files
                .iter()
                .find(|s| {
                    s.file.schema == schema
                        && s.file.table == table
                        && s.file.table_version == version
                })
                .ok_or_else(|| layout(&dir_rel, "no schema file for this table version"))?;
            sf.file
                .columns
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|c| CsvColumn {
                    name: c.name.clone(),
                    binary: c.is_binary(),
                })
                .collect()
        } else {
            Vec::new()
        };
        for (index, name) in files {
            let rel = dir_rel.join(&name);
            let bytes = fs::read(root.join(&rel)).map_err(|e| io(&rel, e))?;
            let decoded = match encoder.protocol {
                Protocol::CanalJson => {
                    parse_canal_json_rows(&bytes, &encoder.canal_json.terminator)
                }
                Protocol::Csv => parse_csv_rows(&bytes, &encoder.csv, &columns),
            }
            .map_err(|source| ConsumeError::Decode {
                path: rel.display().to_string(),
                source,
            })?;
            content.data_files.push(DataFile {
                rel_path: rel,
                schema: schema.clone(),
                table: table.clone(),
                version,
                date: date.clone(),
                index,
                rows: decoded.items,
                torn_tail: decoded.torn_tail,
            });
        }
    }
    content.data_files.sort_by(|a, b| {
        (&a.schema, &a.table, a.version, &a.date, a.index)
            .cmp(&(&b.schema, &b.table, b.version, &b.date, b.index))
    });
    content.index_files.sort();
    Ok(content)
}
