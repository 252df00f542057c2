//! MVCC store against a simple reference model, and observer ordering under concurrency.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use tidal_sim::mvcc::{ApplyEvent, ApplyObserver, Mutation, MvccStore, Op, ReadError};

#[derive(Clone, Debug)]
enum Step {
    OnePc(Vec<(u8, Option<u8>)>),
    TwoPc(Vec<(u8, Option<u8>)>),
    Abort(Vec<(u8, Option<u8>)>),
    Gc,
}

fn muts(spec: &[(u8, Option<u8>)]) -> Vec<Mutation> {
    let mut seen = std::collections::BTreeSet::new();
    spec.iter()
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| match v {
            Some(v) => Mutation::put(vec![b'k', *k], vec![*v]),
            None => Mutation::delete(vec![b'k', *k]),
        })
        .collect()
}

fn step() -> impl Strategy<Value = Step> {
    let spec = prop::collection::vec((0u8..6, prop::option::of(any::<u8>())), 1..4);
    prop_oneof![
        spec.clone().prop_map(Step::OnePc),
        spec.clone().prop_map(Step::TwoPc),
        spec.prop_map(Step::Abort),
        Just(Step::Gc),
    ]
}

/// model: key -> [(commit_ts, value or None)]
type Model = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

fn model_get(m: &Model, key: &[u8], ts: u64) -> Option<Vec<u8>> {
    m.get(key)?
        .iter()
        .rev()
        .find(|(c, _)| *c <= ts)
        .and_then(|(_, v)| v.clone())
}

proptest! {
    #[test]
    fn matches_reference_model(steps in prop::collection::vec(step(), 1..30)) {
        let s = MvccStore::new();
        let mut model: Model = BTreeMap::new();
        let mut ts = 10u64;
        let mut gc_point = 0u64;
        for st in &steps {
            ts += 10;
            match st {
                Step::OnePc(spec) | Step::TwoPc(spec) | Step::Abort(spec) => {
                    let ms = muts(spec);
                    let primary = ms.first().unwrap().key.clone();
                    let keys: Vec<Vec<u8>> = ms.iter().map(|m| m.key.clone()).collect();
                    match st {
                        Step::OnePc(_) => s.one_pc(&ms, ts, ts + 1).unwrap(),
                        Step::TwoPc(_) => {
                            s.prewrite(&ms, &primary, ts).unwrap();
                            s.commit(&keys, ts, ts + 1).unwrap();
                        }
                        _ => {
                            s.prewrite(&ms, &primary, ts).unwrap();
                            s.rollback(&keys, ts).unwrap();
                        }
                    }
                    if !matches!(st, Step::Abort(_)) {
                        for m in &ms {
                            let v = if m.op == Op::Put { Some(m.value.clone()) } else { None };
                            model.entry(m.key.clone()).or_default().push((ts + 1, v));
                        }
                    }
                }
                Step::Gc => {
                    gc_point = ts - 5;
                    s.gc(gc_point);
                }
            }
        }
        prop_assert_eq!(s.lock_count(), 0);
        for read_ts in (0..=ts + 2).step_by(3) {
            for k in 0u8..6 {
                let key = vec![b'k', k];
                let got = s.get(&key, read_ts);
                if read_ts < gc_point {
                    prop_assert_eq!(got, Err(ReadError::GcSafePoint { ts: read_ts, safe_point: gc_point }));
                } else {
                    prop_assert_eq!(got, Ok(model_get(&model, &key, read_ts)));
                }
            }
            if read_ts >= gc_point {
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .keys()
                    .filter_map(|k| model_get(&model, k, read_ts).map(|v| (k.clone(), v)))
                    .collect();
                prop_assert_eq!(s.scan(b"", b"", read_ts, 0).unwrap(), want);
            }
        }
        // The delta scan from 0 reports exactly the model's surviving history above the GC point.
        let scan = s.atomically(|v| v.delta_scan(b"", b"", gc_point));
        let got: Vec<(Vec<u8>, u64)> = scan.commits.iter().map(|c| (c.key.clone(), c.commit_ts)).collect();
        let want: Vec<(Vec<u8>, u64)> = model
            .iter()
            .flat_map(|(k, vs)| vs.iter().rev().filter(|(c, _)| *c > gc_point).map(move |(c, _)| (k.clone(), *c)))
            .collect();
        prop_assert_eq!(got, want);
    }
}

#[derive(Default)]
struct Log(Mutex<Vec<ApplyEvent>>);

impl ApplyObserver for Log {
    fn on_apply(&self, events: &[ApplyEvent]) {
        self.0.lock().extend_from_slice(events);
    }
}

#[test]
fn observer_sees_each_key_in_apply_order_under_concurrency() {
    let s = MvccStore::new();
    let log = Arc::new(Log::default());
    s.set_observer(log.clone());
    let tso = tidal_sim::tso::Tso::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, tso) = (s.clone(), tso.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 200 {
                    let key = vec![b'k', (done % 3) as u8];
                    let start = tso.next();
                    let m = [Mutation::put(key.clone(), vec![t])];
                    if s.prewrite(&m, &key, start).is_err() {
                        continue;
                    }
                    s.commit(&[key], start, tso.next()).unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Per key: prewrite/commit pairs alternate, and commit ts increase.
    let events = log.0.lock();
    let mut last_commit: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut open: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for e in events.iter() {
        match e {
            ApplyEvent::Prewrite { key, start_ts, .. } => {
                assert!(
                    open.insert(key.clone(), *start_ts).is_none(),
                    "two locks on {key:?}"
                );
                assert!(*start_ts > last_commit.get(key).copied().unwrap_or(0));
            }
            ApplyEvent::Commit {
                key,
                start_ts,
                commit_ts,
                ..
            } => {
                assert_eq!(open.remove(key), Some(*start_ts));
                let prev = last_commit.insert(key.clone(), *commit_ts).unwrap_or(0);
                assert!(*commit_ts > prev);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events.len(), 4 * 200 * 2);
}
