//! The Tidal process itself dies: `tidal server` runs as a child process with its metadata in
//! the shared etcd, is killed with SIGKILL under load, and a new process with the same cluster
//! id takes over once the dead one's owner lease expired, resuming from the persisted
//! checkpoint (safe-mode replay of what lies above it).

use std::time::{Duration, Instant};

use crate::harness::{
    Api, CHILD_CONFIG, ChildServer, Downstream1, Sampler, Upstream, finish, free_port, recovery,
    run_tag, within,
};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_tidal_process() {
    let name = "kill9_tidal_process";
    let Some(url) = support::external_service("TIDAL_TEST_MYSQL") else {
        return;
    };
    let Some(etcd) = support::external_service("TIDAL_TEST_ETCD") else {
        return;
    };
    let tag = run_tag();
    let mut up = Upstream::start(&tag).await;
    let down = Downstream1 { url };
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("tidal.toml");
    std::fs::write(&config, CHILD_CONFIG).expect("write config");
    let args: Vec<String> = vec![
        "--pd".into(),
        up.cluster.pd_endpoints().join(","),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--etcd".into(),
        etcd,
        "--cluster-id".into(),
        format!("faults-kill9-{tag}"),
        "--workers".into(),
        "2".into(),
        "--config".into(),
        config.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ];
    let mut node = ChildServer::start(dir.path(), "tidal-1.log", free_port(), &args).await;
    let api = Api::new(&node.base);
    let cf = format!("kill9-{tag}");
    api.create_changefeed(&cf, &down.sink_uri(), up.start_ts, &up.filter_rules())
        .await;
    crate::harness::wait_replicating(name, &up, &api, &cf).await;
    let load = up.start_load();
    let sampler = Sampler::spawn(api.clone(), &cf);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = api.sample(&cf).await.expect("changefeed readable");
    node.proc.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node2 = ChildServer::start(dir.path(), "tidal-2.log", free_port(), &args).await;
    api.set_base(&node2.base);
    let end = up.now_ts();
    eprintln!(
        "{name}: killed at checkpoint {}; new process answers after {:?}",
        before.0,
        killed.elapsed()
    );
    let rec = recovery(name, &api, &cf, end, Duration::from_secs(40)).await;
    eprintln!(
        "{name}: checkpoint past the restart {:?} after the kill",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = finish(name, &up, load, &api, &cf, sampler, &down).await;
    within("remove changefeed", 20, api.remove_changefeed(&cf)).await;
    drop(node2);
    drop(node);
    up.cluster.shutdown().await;
    assert!(out.checkpoint > before.0 && rec > Duration::ZERO);
    assert!(out.load.txns >= 800, "{out:?}");
}

/// Regression test for a bug `kill9_tidal_process` (and at times `etcd_restart`) found: the API
/// reported the live dataflow's watermarks, which run ahead of the persisted checkpoint, so a
/// new process (or a dataflow restarted by the coordinator) starting from the persisted
/// checkpoint made the reported checkpoint and resolved ts go backwards. The API now reports
/// only persisted values (the resolved ts is persisted with the checkpoint). A node with the
/// embedded store and a blackhole sink, killed with SIGKILL and restarted on the same data
/// directory three times, shows it without any other service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regression_api_watermarks_went_backwards_across_process_restart() {
    let name = "regression_api_watermarks_went_backwards_across_process_restart";
    let tag = run_tag();
    let up = Upstream::start(&tag).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("tidal.toml");
    std::fs::write(&config, CHILD_CONFIG).expect("write config");
    let args: Vec<String> = vec![
        "--pd".into(),
        up.cluster.pd_endpoints().join(","),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--workers".into(),
        "1".into(),
        "--config".into(),
        config.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ];
    let mut node = ChildServer::start(dir.path(), "tidal-1.log", free_port(), &args).await;
    let api = Api::new(&node.base);
    let cf = format!("regress-{tag}");
    api.create_changefeed(&cf, "blackhole://", up.start_ts, &up.filter_rules())
        .await;
    crate::harness::wait_replicating(name, &up, &api, &cf).await;
    // Three kill/restart cycles: each one catches the regression unless the kill happens to
    // land right after a checkpoint save.
    let mut seen = Vec::new();
    for cycle in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = api.sample(&cf).await.expect("changefeed readable");
        node.proc.kill9();
        node = ChildServer::start(
            dir.path(),
            &format!("tidal-{}.log", cycle + 2),
            free_port(),
            &args,
        )
        .await;
        api.set_base(&node.base);
        let after = within("first answer after the restart", 20, async {
            loop {
                if let Ok(s) = api.sample(&cf).await {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        seen.push((before, after));
    }
    drop(node);
    up.cluster.shutdown().await;
    for (before, after) in seen {
        assert!(
            after.0 >= before.0,
            "checkpoint went backwards across the restart: {before:?} -> {after:?}"
        );
        assert!(
            after.1 >= before.1,
            "resolved ts went backwards across the restart: {before:?} -> {after:?}"
        );
    }
}
