//! Multi-process runs: how the owner plans a changefeed's run over several `tidal server`
//! processes, and how every other process joins the runs it is named in.
//!
//! A node started with `--hosts H0,H1,… --process i` registers its capture key (lease-bound)
//! with its process index. The owner plans every start of a changefeed — a *generation* — over
//! the processes whose capture keys exist: itself first (so it hosts global worker 0, whose
//! probes and checksum reports see the whole cluster), then the others by process index. It
//! bumps the epoch (as for any start), picks a port slot that no other published run uses, and
//! publishes an `Assignment` under `…/__cdc_meta__/assignment/<keyspace>/<id>`: the epoch,
//! the start checkpoint, the members and their timely addresses (`host of H[p]` : `port of
//! H[p]` + slot). The owner runs member 0 itself; the `MemberLoop` of every other node
//! starts member `k` with `ClusterPeers { process: k, token: epoch, … }` and its own sink, and
//! stops it as soon as the published assignment changes or the run fails. Only the owner
//! persists checkpoints, fenced by the epoch.
//!
//! Why this is safe when things break: a vanished or failed member breaks the run's TCP
//! connections, timely panics the survivors' workers, their handles report an error, and the
//! owner restarts the changefeed under a new epoch from the persisted checkpoint (safe mode up
//! to it) over the processes that are alive then. A process (re)joining changes the live set;
//! the owner re-plans to include it. The epoch is the handshake token, so processes of two
//! generations never connect to each other even when a port slot comes round again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidal_dataflow::{ChangefeedHandle, ClusterPeers, RunConfig, start_changefeed};
use tidal_ingest::pd::PdClient;
use tidal_sinks::Sink;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{build_spec, close_sink};
use crate::meta::{ChangefeedRef, KeyLayout, MetaError, MetaStore, load_changefeed};

/// Port slots per process: a run uses `base port + slot` on every member, for slots
/// `0..PORT_SLOTS`, so each process needs the ports `base .. base + PORT_SLOTS - 1` free.
pub const PORT_SLOTS: u16 = 32;

/// This node's place in a multi-process cluster (`--hosts`, `--process`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMembership {
    /// This node's index in `hosts`.
    pub process: usize,
    /// Timely base address (`HOST:PORT`) of every process, the same list on every node.
    pub hosts: Vec<String>,
}

/// Splits `HOST:PORT` (an IPv6 host in brackets), checking that the port and the whole slot
/// range above it (`PORT_SLOTS` ports) are valid ports.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{s:?}: empty or invalid host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: invalid port {port:?}"))?;
    if port == 0 || port.checked_add(PORT_SLOTS - 1).is_none() {
        return Err(format!(
            "{s:?}: the port must be between 1 and {} (a process uses {PORT_SLOTS} ports from it)",
            u16::MAX - (PORT_SLOTS - 1)
        ));
    }
    Ok((host.to_string(), port))
}

/// One process of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// Its capture id.
    pub(crate) capture_id: String,
    /// Its index in the hosts list.
    pub(crate) process: usize,
}

/// A published run of a changefeed over several processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Assignment {
    pub(crate) keyspace: String,
    pub(crate) id: String,
    /// The epoch the run was started under (also the connection token).
    pub(crate) epoch: u64,
    /// The persisted checkpoint it starts from.
    pub(crate) checkpoint: u64,
    /// The port slot of this run.
    pub(crate) slot: u16,
    /// Worker threads per process (the same on every member).
    pub(crate) workers: usize,
    /// Capture id of the owner that planned it.
    pub(crate) owner: String,
    /// The members, in timely process order (the owner first).
    pub(crate) members: Vec<Member>,
    /// Timely address of each member, in the same order.
    pub(crate) addresses: Vec<String>,
}

/// What a node registers under its capture key.
#[derive(Debug, Deserialize)]
struct CaptureValue {
    id: String,
    #[serde(default)]
    process: Option<usize>,
}

/// Timely address of each member for port slot `slot`.
pub(crate) fn member_addresses(
    hosts: &[String],
    members: &[Member],
    slot: u16,
) -> Result<Vec<String>, String> {
    members
        .iter()
        .map(|m| {
            let h = hosts
                .get(m.process)
                .ok_or_else(|| format!("process {} is not in hosts", m.process))?;
            let (host, port) = parse_host_port(h)?;
            let port = port
                .checked_add(slot % PORT_SLOTS)
                .ok_or_else(|| format!("{h}: port overflow"))?;
            Ok(format!("{host}:{port}"))
        })
        .collect()
}

/// The live processes (capture keys with a process index below `n_hosts`), the owner first,
/// then by process index. When two captures claim one process index (a restarted process
/// whose old lease has not expired yet), the owner's or else the newest registration wins.
pub(crate) async fn live_members(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    owner: &str,
    n_hosts: usize,
) -> Result<Vec<Member>, MetaError> {
    let kvs = store.get_prefix(keys.capture_prefix().as_bytes()).await?;
    let mut by_process: HashMap<usize, (bool, i64, String)> = HashMap::new();
    for kv in kvs {
        let Ok(v) = serde_json::from_slice::<CaptureValue>(&kv.value) else {
            continue;
        };
        let Some(p) = v.process.filter(|p| *p < n_hosts) else {
            continue;
        };
        let cand = (v.id == owner, kv.create_revision, v.id);
        match by_process.get(&p) {
            Some(cur) if (cur.0, cur.1) >= (cand.0, cand.1) => {}
            _ => {
                by_process.insert(p, cand);
            }
        }
    }
    let mut members: Vec<Member> = by_process
        .into_iter()
        .map(|(process, (_, _, capture_id))| Member {
            capture_id,
            process,
        })
        .collect();
    members.sort_by_key(|m| (m.capture_id != owner, m.process));
    Ok(members)
}

/// Picks the first port slot from `*next` on that no published run uses, and moves `*next`
/// past it (so a slot just given up is not reused at once).
pub(crate) async fn pick_slot(
    store: &dyn MetaStore,
    keys: &KeyLayout,
    next: &mut u16,
    except: &ChangefeedRef,
) -> Result<u16, MetaError> {
    let mut used = BTreeSet::new();
    for kv in store
        .get_prefix(keys.assignment_prefix().as_bytes())
        .await?
    {
        if let Ok(a) = serde_json::from_slice::<Assignment>(&kv.value)
            && (a.keyspace != except.keyspace || a.id != except.id)
        {
            used.insert(a.slot % PORT_SLOTS);
        }
    }
    for i in 0..PORT_SLOTS {
        let slot = (*next + i) % PORT_SLOTS;
        if !used.contains(&slot) {
            *next = (slot + 1) % PORT_SLOTS;
            return Ok(slot);
        }
    }
    // More runs than slots: share one (the handshake token keeps the runs apart).
    let slot = *next;
    *next = (*next + 1) % PORT_SLOTS;
    Ok(slot)
}

/// Timeouts of multi-process runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterTimeouts {
    pub(crate) connect: Duration,
    pub(crate) teardown: Duration,
}

/// The `RunConfig` of member `index` of `a`.
pub(crate) fn run_config(a: &Assignment, index: usize, t: ClusterTimeouts) -> RunConfig {
    let mut peers = ClusterPeers::new(index, a.addresses.clone());
    peers.token = a.epoch;
    peers.connect_timeout = t.connect;
    peers.teardown_timeout = t.teardown;
    let mut run = RunConfig::process(a.workers);
    run.cluster = Some(peers);
    run
}

/// A started member run: its dataflow and its sink.
type Started = (ChangefeedHandle, Arc<dyn Sink>);

enum MemberState {
    Starting(JoinHandle<Result<Started, String>>),
    Running(ChangefeedHandle, Arc<dyn Sink>),
}

struct MemberRun {
    epoch: u64,
    state: MemberState,
}

/// Runs, on every node of a cluster, the members of published assignments that name it (other
/// than member 0, which the owner runs itself).
pub(crate) struct MemberLoop {
    pub(crate) store: Arc<dyn MetaStore>,
    pub(crate) keys: KeyLayout,
    pub(crate) pd: Arc<PdClient>,
    pub(crate) capture_id: String,
    pub(crate) interval: Duration,
    pub(crate) timeouts: ClusterTimeouts,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    runs: HashMap<ChangefeedRef, MemberRun>,
    /// (changefeed, epoch) runs already started here: a failed one is not started again; the
    /// owner plans a new generation.
    started: HashSet<(ChangefeedRef, u64)>,
}

impl MemberLoop {
    pub(crate) fn new(
        store: Arc<dyn MetaStore>,
        keys: KeyLayout,
        pd: Arc<PdClient>,
        capture_id: String,
        interval: Duration,
        timeouts: ClusterTimeouts,
        spill_dir: Option<std::path::PathBuf>,
    ) -> Self {
        MemberLoop {
            store,
            keys,
            pd,
            capture_id,
            interval,
            timeouts,
            spill_dir,
            runs: HashMap::new(),
            started: HashSet::new(),
        }
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = tick.tick() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            self.check_runs().await;
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "cannot read the run assignments");
            }
        }
        let all: Vec<ChangefeedRef> = self.runs.keys().cloned().collect();
        let mut stops = Vec::new();
        for cf in all {
            if let Some(r) = self.runs.remove(&cf) {
                stops.push(tokio::spawn(stop_member(cf, r)));
            }
        }
        for s in stops {
            let _ = s.await;
        }
    }

    /// Moves finished starts to running, and stops runs that failed.
    async fn check_runs(&mut self) {
        let cfs: Vec<ChangefeedRef> = self.runs.keys().cloned().collect();
        for cf in cfs {
            let Some(run) = self.runs.remove(&cf) else {
                continue;
            };
            let run = match run.state {
                MemberState::Starting(task) if task.is_finished() => match task.await {
                    Ok(Ok((h, sink))) => {
                        tracing::info!(changefeed = %cf, epoch = run.epoch, "member run started");
                        MemberRun {
                            epoch: run.epoch,
                            state: MemberState::Running(h, sink),
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(changefeed = %cf, epoch = run.epoch, error = %e, "member run could not start");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(changefeed = %cf, epoch = run.epoch, error = %e, "member run start panicked");
                        continue;
                    }
                },
                state => MemberRun {
                    epoch: run.epoch,
                    state,
                },
            };
            if let MemberState::Running(h, _) = &run.state
                && let Some(e) = h.error()
            {
                tracing::warn!(changefeed = %cf, epoch = run.epoch, error = %e, "member run failed; stopping it (the owner plans a new generation)");
                tokio::spawn(stop_member(cf, run));
                continue;
            }
            self.runs.insert(cf, run);
        }
    }

    async fn reconcile(&mut self) -> Result<(), MetaError> {
        let kvs = self
            .store
            .get_prefix(self.keys.assignment_prefix().as_bytes())
            .await?;
        let mut desired: HashMap<ChangefeedRef, (Assignment, usize)> = HashMap::new();
        for kv in kvs {
            let Ok(a) = serde_json::from_slice::<Assignment>(&kv.value) else {
                tracing::warn!(key = %kv.key_str(), "skipping a corrupt run assignment");
                continue;
            };
            let Ok(cf) = ChangefeedRef::in_keyspace(&a.keyspace, &a.id) else {
                continue;
            };
            let me = a
                .members
                .iter()
                .position(|m| m.capture_id == self.capture_id);
            if let Some(index) = me.filter(|i| *i > 0)
                && a.addresses.len() == a.members.len()
            {
                desired.insert(cf, (a, index));
            }
        }
        let running: Vec<(ChangefeedRef, u64)> = self
            .runs
            .iter()
            .map(|(cf, r)| (cf.clone(), r.epoch))
            .collect();
        for (cf, epoch) in running {
            if desired.get(&cf).is_none_or(|(a, _)| a.epoch != epoch)
                && let Some(r) = self.runs.remove(&cf)
            {
                tracing::info!(changefeed = %cf, epoch, "the run assignment changed; stopping the member run");
                tokio::spawn(stop_member(cf, r));
            }
        }
        // Forget generations that can never come back (a newer one is published, or none).
        self.started
            .retain(|(cf, e)| desired.get(cf).is_some_and(|(a, _)| *e >= a.epoch));
        for (cf, (a, index)) in desired {
            if self.runs.contains_key(&cf) || !self.started.insert((cf.clone(), a.epoch)) {
                continue;
            }
            tracing::info!(changefeed = %cf, epoch = a.epoch, member = index, members = a.members.len(), "starting a member run");
            let task = tokio::spawn(start_member(
                Arc::clone(&self.store),
                self.keys.clone(),
                Arc::clone(&self.pd),
                cf.clone(),
                a.clone(),
                index,
                MemberSettings {
                    timeouts: self.timeouts,
                    spill_dir: self.spill_dir.clone(),
                },
            ));
            self.runs.insert(
                cf,
                MemberRun {
                    epoch: a.epoch,
                    state: MemberState::Starting(task),
                },
            );
        }
        Ok(())
    }
}

/// What a member run takes from its node's settings.
struct MemberSettings {
    timeouts: ClusterTimeouts,
    spill_dir: Option<std::path::PathBuf>,
}

async fn start_member(
    store: Arc<dyn MetaStore>,
    keys: KeyLayout,
    pd: Arc<PdClient>,
    cf: ChangefeedRef,
    a: Assignment,
    index: usize,
    settings: MemberSettings,
) -> Result<Started, String> {
    let MemberSettings {
        timeouts,
        spill_dir,
    } = settings;
    let loaded = load_changefeed(store.as_ref(), &keys, &cf)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the changefeed is gone".to_string())?;
    if loaded.info.epoch != a.epoch {
        return Err(format!(
            "stale assignment: epoch {} is no longer current ({})",
            a.epoch, loaded.info.epoch
        ));
    }
    let sink = tidal_sinks::open::open_sink(&loaded.info.sink_uri, &cf.id)
        .await
        .map_err(|e| format!("opening the sink: {e}"))?;
    let spec = match build_spec(
        &pd,
        &cf,
        &loaded.info,
        a.checkpoint,
        Arc::clone(&sink),
        spill_dir.as_deref(),
    ) {
        Ok(s) => s,
        Err(f) => {
            close_sink(sink).await;
            return Err(f.message);
        }
    };
    match start_changefeed(spec, run_config(&a, index, timeouts)).await {
        Ok(h) => Ok((h, sink)),
        Err(e) => {
            close_sink(sink).await;
            Err(e.to_string())
        }
    }
}

async fn stop_member(cf: ChangefeedRef, run: MemberRun) {
    match run.state {
        MemberState::Running(h, sink) => {
            h.request_stop();
            if let Err(e) = tokio::task::spawn_blocking(move || h.stop()).await {
                tracing::error!(changefeed = %cf, error = %e, "stopping a member run failed");
            }
            close_sink(sink).await;
        }
        MemberState::Starting(task) => {
            if let Ok(Ok((h, sink))) = task.await {
                h.request_stop();
                let _ = tokio::task::spawn_blocking(move || h.stop()).await;
                close_sink(sink).await;
            }
        }
    }
    tracing::info!(changefeed = %cf, epoch = run.epoch, "member run stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("10.0.0.1:9000"),
            Ok(("10.0.0.1".to_string(), 9000))
        );
        assert_eq!(
            parse_host_port("[::1]:9000"),
            Ok(("[::1]".to_string(), 9000))
        );
        for bad in ["nope", ":9000", "a:", "a:0", "a:x", "a:65535", "a b:1"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
        assert!(parse_host_port(&format!("a:{}", u16::MAX - PORT_SLOTS + 1)).is_ok());
        assert!(parse_host_port(&format!("a:{}", u16::MAX - PORT_SLOTS + 2)).is_err());
    }

    #[test]
    fn addresses_follow_members_and_slot() {
        let hosts = vec!["a:9000".to_string(), "b:9100".to_string()];
        let members = vec![
            Member {
                capture_id: "y".into(),
                process: 1,
            },
            Member {
                capture_id: "x".into(),
                process: 0,
            },
        ];
        assert_eq!(
            member_addresses(&hosts, &members, 3),
            Ok(vec!["b:9103".to_string(), "a:9003".to_string()])
        );
        assert_eq!(
            member_addresses(&hosts, &members, PORT_SLOTS + 1),
            Ok(vec!["b:9101".to_string(), "a:9001".to_string()])
        );
        let stray = vec![Member {
            capture_id: "z".into(),
            process: 2,
        }];
        assert!(member_addresses(&hosts, &stray, 0).is_err());
    }
}
