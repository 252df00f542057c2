//! Process measurements the benchmark reports next to its throughput: peak RSS, CPU time per
//! thread group (so a figure "per core" is rows per CPU-second actually spent, not a guess from
//! the worker count), and latency percentiles.
//!
//! Everything here reads Linux `/proc`; on other systems the readers return `None` and the
//! report says "n/a" instead of inventing a number.

use std::collections::BTreeMap;
use std::time::Duration;

/// Peak resident set size of this process (`VmHWM` of `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// Extracts `VmHWM` (in kB in the file) from the text of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Clock ticks per second of `/proc` CPU counters. Linux has reported 100 on every mainstream
/// architecture for decades; reading it through libc would need `unsafe`, which the workspace
/// denies.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system) of every live thread of this process, summed by thread name.
/// Threads that already exited are not counted, so take the reading while they still run or
/// compare only threads that outlive the measurement.
pub fn cpu_by_thread() -> BTreeMap<String, Duration> {
    let mut out: BTreeMap<String, Duration> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = parse_task_stat(&stat) {
            *out.entry(group_name(&name)).or_default() +=
                Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC);
        }
    }
    out
}

/// Total CPU time (user + system) of the whole process so far, including exited threads.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_task_stat(&stat).map(|(_, t)| Duration::from_secs_f64(t as f64 / TICKS_PER_SEC))
}

/// CPU time (user + system) of the calling thread so far.
pub fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    parse_task_stat(&stat).map(|(_, t)| Duration::from_secs_f64(t as f64 / TICKS_PER_SEC))
}

/// Parses `comm` and `utime + stime` (in ticks) out of a `/proc/.../stat` line. The name is in
/// parentheses and may itself contain spaces or parentheses, so the fields are counted from the
/// last `)`.
pub fn parse_task_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open.checked_add(1)?..close)?.to_string();
    let rest = stat.get(close.checked_add(1)?..)?;
    // After the name: state(3) ppid(4) … utime is field 14, stime field 15 (1-based overall).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime.saturating_add(stime)))
}

/// Groups thread names whose suffix is a number (`timely:work-1`, `tokio-runtime-w`) so the
/// breakdown has one line per kind of thread.
fn group_name(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == ':');
    if trimmed.is_empty() {
        name.to_string()
    } else {
        trimmed.to_string()
    }
}

/// CPU spent per thread group between two [`cpu_by_thread`] readings (groups that only appear
/// in `after` count from zero), largest first.
pub fn cpu_delta(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = after
        .iter()
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or_default();
            (k.clone(), v.saturating_sub(b))
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The `q`-quantile (0.0..=1.0, nearest rank) of `sorted` (ascending); `None` if empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(idx).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed_in_bytes() {
        let s = "Name:\ttidal\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 10 kB\n";
        assert_eq!(parse_vm_hwm(s), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM: lots kB\n"), None);
    }

    #[test]
    fn task_stat_survives_odd_names() {
        let s = "42 (tokio (x) 1) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1";
        assert_eq!(parse_task_stat(s), Some(("tokio (x) 1".to_string(), 281)));
        assert_eq!(parse_task_stat("garbage"), None);
        assert_eq!(parse_task_stat("1 (a) S 1"), None);
    }

    #[test]
    fn thread_groups_drop_numeric_suffixes() {
        assert_eq!(group_name("timely:work-1"), "timely:work");
        assert_eq!(group_name("bench-writer"), "bench-writer");
        assert_eq!(group_name("123"), "123");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn cpu_delta_orders_by_time() {
        let mut a = BTreeMap::new();
        a.insert("x".to_string(), Duration::from_millis(100));
        let mut b = a.clone();
        b.insert("x".to_string(), Duration::from_millis(150));
        b.insert("y".to_string(), Duration::from_millis(300));
        assert_eq!(
            cpu_delta(&a, &b),
            vec![
                ("y".to_string(), Duration::from_millis(300)),
                ("x".to_string(), Duration::from_millis(50)),
            ]
        );
    }
}
