//! How many row changes per second one core of the simulator can *feed*: produce with its TiDB
//! layer, apply to its MVCC store, turn into CDC events, batch and encode onto an `EventFeed`
//! gRPC stream.
//!
//! Why a process-level benchmark and not criterion: the feed spans a writer thread (workload
//! generation, TiDB row encoding, MVCC apply and the CDC observer, which runs under the apply
//! lock), the CDC stream's sender task and tonic's protobuf encoding (on the sim's tokio
//! runtime). The figure that matters is row changes per CPU-second of *those* threads, so the
//! consumer runs on a separate runtime whose threads are named differently, and CPU time is read
//! per thread from `/proc/self/task/*/stat`. The consumer decodes the messages (it must, to know
//! when every row arrived); its CPU is reported separately and is not the sim's cost.
//!
//! The workload matches `tidal bench`'s: `tables` tables of `(id BIGINT PRIMARY KEY, k BIGINT,
//! pad VARCHAR)`, about `row-width` bytes per row value, insert-only transactions of `txn-size`
//! rows cycling through the tables, each table in its own region. Transactions commit by 2PC
//! (one PREWRITE and one COMMIT row per row change on the wire) or, with `--one-pc`, in one
//! phase (one COMMITTED row per row change).
//!
//! Run (release; keep runs short on a shared machine):
//!
//! ```sh
//! cargo bench -p tidal-sim --bench sim_feed -- --rows 1000000
//! cargo bench -p tidal-sim --bench sim_feed -- --rows 1000000 --one-pc
//! ```
//!
//! Options: `--rows N` (1,000,000), `--tables N` (4), `--row-width BYTES` (128),
//! `--txn-size N` (100), `--one-pc`, `--no-feed` (apply with no subscriber: the writer alone).
//!
//! The benchmark runs on mimalloc, the global allocator of the `tidal` binary that runs the sim
//! in `tidal sim`, `demo` and `bench`: with glibc's malloc the sim's per-row buffers (allocated
//! on the writer, freed on the gRPC runtime) cost about half its CPU.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidal_model::Datum;
use tidal_proto::cdcpb::change_data_client::ChangeDataClient;
use tidal_proto::cdcpb::change_data_request::{Register, Request};
use tidal_proto::cdcpb::{ChangeDataRequest, Header, event};
use tidal_proto::metapb;
use tidal_sim::cluster::{SimCluster, SimConfig};
use tidal_sim::tidb::{ColumnSpec, CommitOptions, PrimaryKey, Table, TableSpec, Tidb, types};

/// The allocator the `tidal` binary runs the sim with (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Clock ticks per second of `/proc` CPU counters (100 on every mainstream Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// Name prefix of the sim runtime's threads.
const SIM_THREADS: &str = "sim-rt";
/// Name prefix of the consumer runtime's threads.
const CONSUMER_THREADS: &str = "consumer-rt";
/// Name of the writer thread.
const WRITER_THREAD: &str = "sim-writer";

#[derive(Debug, Clone, Copy)]
struct Opts {
    rows: u64,
    tables: usize,
    row_width: usize,
    txn_size: usize,
    one_pc: bool,
    feed: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        rows: 1_000_000,
        tables: 4,
        row_width: 128,
        txn_size: 100,
        one_pc: false,
        feed: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |i: usize| -> u64 {
        args.get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or_else(|| panic!("{} needs a number", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--rows" => {
                o.rows = num(i);
                i += 1;
            }
            "--tables" => {
                o.tables = num(i).max(1) as usize;
                i += 1;
            }
            "--row-width" => {
                o.row_width = num(i) as usize;
                i += 1;
            }
            "--txn-size" => {
                o.txn_size = num(i).max(1) as usize;
                i += 1;
            }
            "--one-pc" => o.one_pc = true,
            "--no-feed" => o.feed = false,
            // `cargo bench` passes `--bench`; ignore anything else too.
            _ => {}
        }
        i += 1;
    }
    o
}

/// Bytes of a row that are not `pad` (two integers plus row-format overhead).
const FIXED_ROW_BYTES: usize = 24;

/// Printable filler the rows' `pad` values are cut from: at least 64 KiB (and twice a pad) of a
/// fixed xorshift sequence mapped onto 64 characters, built once.
fn filler(pad_len: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..(64 * 1024).max(pad_len.saturating_mul(2)))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x & 63) as usize]
        })
        .collect()
}

/// Row `seq`'s `pad`: a `len`-byte window of `filler` at an offset that moves with `seq`
/// (deterministic and different for neighbouring rows, at the cost of a copy; the benchmark
/// measures the sim, not a random generator).
fn pad_of(filler: &[u8], seq: u64, len: usize) -> &[u8] {
    let span = filler.len().saturating_sub(len).max(1) as u64;
    let at = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % span) as usize;
    filler.get(at..at + len).unwrap_or(filler)
}

fn table_spec(i: usize, pad_len: usize) -> TableSpec {
    TableSpec::new(
        format!("t{}", i + 1),
        vec![
            ColumnSpec::new("id", types::bigint()).not_null(),
            ColumnSpec::new("k", types::bigint()).not_null(),
            ColumnSpec::new("pad", types::varchar(pad_len as i64)),
        ],
    )
    .primary_key(PrimaryKey::IntHandle("id".into()))
}

/// What the writer did and how its time split.
#[derive(Debug, Default)]
struct WriterStats {
    rows: u64,
    txns: u64,
    /// Building rows and buffering them in the TiDB transaction (generation + TiDB encoding).
    build: Duration,
    /// `commit`: MVCC apply and the CDC observer.
    commit: Duration,
    wall: Duration,
}

fn write(tidb: &Tidb, tables: &[Table], o: Opts) -> WriterStats {
    let pad_len = o.row_width.saturating_sub(FIXED_ROW_BYTES).max(1);
    let mut st = WriterStats::default();
    let start = Instant::now();
    let mut seq = 0u64;
    let filler = filler(pad_len);
    let commit_opts = CommitOptions {
        one_pc: o.one_pc,
        rollback: false,
    };
    let txn_size = o.txn_size as u64;
    while seq < o.rows {
        let n = txn_size.min(o.rows - seq);
        let table = &tables[((seq / txn_size) % tables.len() as u64) as usize];
        let t0 = Instant::now();
        let mut txn = tidb.begin();
        for s in seq..seq + n {
            let values = vec![
                Datum::Int((s + 1) as i64),
                Datum::Int(s.wrapping_mul(2_654_435_761) as i64 & 0xFFFF_FFFF),
                Datum::Bytes(pad_of(&filler, s, pad_len).to_vec()),
            ];
            txn.insert(table, values).expect("insert");
        }
        let t1 = Instant::now();
        let info = txn.commit_with(commit_opts).expect("commit");
        assert!(info.commit_ts.is_some());
        let t2 = Instant::now();
        st.build += t1 - t0;
        st.commit += t2 - t1;
        st.rows += n;
        st.txns += 1;
        seq += n;
    }
    st.wall = start.elapsed();
    st
}

/// CPU time of this process's live threads, summed by the given name prefixes (and "other").
fn cpu_by_group() -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        let group = if name.starts_with(WRITER_THREAD) {
            WRITER_THREAD
        } else if name.starts_with(SIM_THREADS) {
            SIM_THREADS
        } else if name.starts_with(CONSUMER_THREADS) {
            CONSUMER_THREADS
        } else {
            "other"
        };
        *out.entry(group).or_insert(0.0) += ticks as f64 / TICKS_PER_SEC;
    }
    out
}

fn delta(a: &BTreeMap<&'static str, f64>, b: &BTreeMap<&'static str, f64>, k: &str) -> f64 {
    b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)
}

/// Counts delivered row changes: COMMIT and COMMITTED rows (a PREWRITE is half of a 2PC change).
#[derive(Debug, Default)]
struct Received {
    changes: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
}

fn main() {
    let o = parse_opts();
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SIM_THREADS)
        .enable_all()
        .build()
        .expect("sim runtime");
    let consumer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CONSUMER_THREADS)
        .enable_all()
        .build()
        .expect("consumer runtime");

    let cluster = sim_rt
        .block_on(SimCluster::start(SimConfig::default()))
        .expect("cluster");
    let tidb = cluster.tidb().expect("tidb");
    tidb.create_database("sim_feed").expect("database");
    let pad_len = o.row_width.saturating_sub(FIXED_ROW_BYTES).max(1);
    let tables: Vec<Table> = (0..o.tables)
        .map(|i| {
            tidb.create_table("sim_feed", &table_spec(i, pad_len))
                .expect("table");
            tidb.table("sim_feed", &format!("t{}", i + 1))
                .expect("table")
        })
        .collect();
    let start_ts = cluster.tso().next();

    let received = Arc::new(Received::default());
    let mut consumers = Vec::new();
    if o.feed {
        // One EventFeed stream per store, every table region registered on its leader's stream.
        let mut by_store: BTreeMap<u64, Vec<tidal_sim::region::Region>> = BTreeMap::new();
        for t in &tables {
            let prefix = tidal_model::tablecodec::table_prefix(t.id());
            let region = cluster.regions().locate_raw(&prefix);
            by_store
                .entry(region.leader_store)
                .or_default()
                .push(region);
        }
        let addrs = cluster.store_addrs();
        let cluster_id = cluster.cluster_id();
        for (store, regions) in by_store {
            let addr = format!("http://{}", addrs[(store - 1) as usize]);
            let received = Arc::clone(&received);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            consumers.push(consumer_rt.spawn(async move {
                let mut client = ChangeDataClient::connect(addr)
                    .await
                    .expect("connect")
                    .max_decoding_message_size(1 << 28);
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                for (i, r) in regions.iter().enumerate() {
                    tx.send(register(r, i as u64 + 1, cluster_id, start_ts))
                        .await
                        .expect("register");
                }
                let mut stream = client
                    .event_feed(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .expect("event feed")
                    .into_inner();
                let mut initialized = 0;
                while let Some(msg) = stream.message().await.expect("stream") {
                    let mut changes = 0u64;
                    let mut rows = 0u64;
                    let mut bytes = 0u64;
                    for ev in &msg.events {
                        match &ev.event {
                            Some(event::Event::Entries(e)) => {
                                for r in &e.entries {
                                    rows += 1;
                                    bytes += (r.key.len() + r.value.len()) as u64;
                                    if r.r#type == event::LogType::Initialized as i32 {
                                        initialized += 1;
                                        if initialized == regions.len() {
                                            let _ = ready_tx.send(());
                                        }
                                    } else if r.r#type == event::LogType::Commit as i32
                                        || r.r#type == event::LogType::Committed as i32
                                    {
                                        changes += 1;
                                    }
                                }
                            }
                            Some(event::Event::Error(e)) => panic!("region error {e:?}"),
                            _ => {}
                        }
                    }
                    received.changes.fetch_add(changes, Ordering::Relaxed);
                    received.rows.fetch_add(rows, Ordering::Relaxed);
                    received.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                drop(tx);
            }));
            ready_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("subscriptions initialized");
        }
    }

    let cpu0 = cpu_by_group();
    let wall0 = Instant::now();
    let writer = {
        let (tidb, tables) = (tidb.clone(), tables.clone());
        std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || {
                let st = write(&tidb, &tables, o);
                // Read this thread's CPU before it exits.
                (st, cpu_by_group())
            })
            .expect("writer thread")
    };
    let (ws, cpu_writer_end) = writer.join().expect("writer");
    let deadline = Instant::now() + Duration::from_secs(120);
    if o.feed {
        while received.changes.load(Ordering::Relaxed) < ws.rows {
            assert!(Instant::now() < deadline, "rows missing after 120 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let wall = wall0.elapsed();
    let cpu1 = cpu_by_group();
    let writer_cpu = delta(&cpu0, &cpu_writer_end, WRITER_THREAD);
    let sim_rt_cpu = delta(&cpu0, &cpu1, SIM_THREADS);
    let consumer_cpu = delta(&cpu0, &cpu1, CONSUMER_THREADS);
    let sim_cpu = writer_cpu + sim_rt_cpu;
    let rows = ws.rows as f64;
    println!(
        "sim_feed: {} rows in {} txns of {}, {} tables, ~{} B/row, {}, feed {}",
        ws.rows,
        ws.txns,
        o.txn_size,
        o.tables,
        o.row_width,
        if o.one_pc { "1PC" } else { "2PC" },
        if o.feed { "on" } else { "off" }
    );
    println!(
        "  writer thread      {:>7.3} s wall, {:>7.2} s CPU  (build {:.3} s, commit {:.3} s)",
        ws.wall.as_secs_f64(),
        writer_cpu,
        ws.build.as_secs_f64(),
        ws.commit.as_secs_f64()
    );
    println!("  sim runtime        {sim_rt_cpu:>7.2} s CPU  (CDC sender, gRPC encode)");
    println!(
        "  consumer runtime   {consumer_cpu:>7.2} s CPU  (gRPC decode, counting; not the sim's)"
    );
    println!(
        "  delivered          {} row changes, {} CDC rows, {:.1} MiB keys+values, {:.3} s wall",
        received.changes.load(Ordering::Relaxed),
        received.rows.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
        wall.as_secs_f64()
    );
    println!(
        "  SIM FEED: {:.0} row changes per sim CPU-second ({:.2} s CPU); writer alone {:.0}/s; \
         end to end incl. consumer {:.0} per CPU-second",
        rows / sim_cpu.max(1e-9),
        sim_cpu,
        rows / writer_cpu.max(1e-9),
        rows / (sim_cpu + consumer_cpu).max(1e-9)
    );
    for c in consumers {
        c.abort();
    }
    sim_rt.block_on(cluster.shutdown());
}

fn register(
    region: &tidal_sim::region::Region,
    request_id: u64,
    cluster_id: u64,
    checkpoint_ts: u64,
) -> ChangeDataRequest {
    ChangeDataRequest {
        header: Some(Header {
            cluster_id,
            ticdc_version: "8.5.0".into(),
        }),
        region_id: region.id,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: region.epoch.conf_ver,
            version: region.epoch.version,
        }),
        checkpoint_ts,
        start_key: region.start.clone(),
        end_key: region.end.clone(),
        request_id,
        extra_op: 1,
        request: Some(Request::Register(Register {})),
        ..Default::default()
    }
}
