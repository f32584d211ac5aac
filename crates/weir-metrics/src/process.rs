//! Figures of the process itself, from `/proc/self`, in Flink's `Status` group.
//!
//! Flink reports its JVM under `Status.JVM.*` (heap, garbage collection, class loading, JVM CPU
//! load). A native process has none of these; weir reports what they stand for, named for what
//! they are (docs/metrics.md maps them):
//!
//! | weir | Flink's closest |
//! |---|---|
//! | `Status.Process.CPU.Time` (ns of CPU used) | `Status.JVM.CPU.Time` |
//! | `Status.Process.CPU.Load` (share of the machine's CPUs, 0 to 1, over the last interval) | `Status.JVM.CPU.Load` |
//! | `Status.Process.Memory.Resident` (bytes in RAM) | `Status.JVM.Memory.Heap.Used` + `NonHeap.Used` |
//! | `Status.Process.Memory.Virtual` (bytes mapped) | `Status.JVM.Memory.Heap.Committed` + `NonHeap.Committed` |
//! | `Status.Process.Threads.Count` | `Status.JVM.Threads.Count` |
//! | `Status.Process.FileDescriptors.Open` | none |
//!
//! And of the machine, for Flink's REST `hardware` fields: `Status.Hardware.CpuCores`,
//! `Status.Hardware.PhysicalMemory` and `Status.Hardware.AvailableMemory` (bytes).

use std::sync::Mutex;
use std::time::Instant;

use crate::MetricGroup;

/// Linux reports CPU time in clock ticks of 1/100 s (`USER_HZ`) on every architecture weir builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time the process has used, in nanoseconds.
pub fn cpu_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks as f64 / TICKS_PER_SECOND * 1e9) as u64)
}

/// A field of `/proc/self/status` in kB, as bytes (or a count, for `Threads`).
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
    let mut parts = line[name.len() + 1..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    Some(if parts.next() == Some("kB") { n * 1024 } else { n })
}

/// A field of `/proc/meminfo`, as bytes.
fn meminfo(name: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
    line[name.len() + 1..].split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Registers the process figures on `group` (a `jobmanager` or `taskmanager` group).
pub fn register(group: &MetricGroup) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    group.gauge("Status.Process.CPU.Time", || cpu_time_ns().map(|n| n as f64).unwrap_or(f64::NAN));
    let last: Mutex<Option<(Instant, u64)>> = Mutex::new(cpu_time_ns().map(|n| (Instant::now(), n)));
    group.gauge("Status.Process.CPU.Load", move || {
        let (Some(now_ns), Ok(mut last)) = (cpu_time_ns(), last.lock()) else { return f64::NAN };
        let now = Instant::now();
        let load = match *last {
            Some((at, ns)) if now > at => {
                (now_ns.saturating_sub(ns) as f64 / 1e9 / now.duration_since(at).as_secs_f64() / cores).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        *last = Some((now, now_ns));
        load
    });
    group.gauge("Status.Process.Memory.Resident", || status_field("VmRSS").map(|n| n as f64).unwrap_or(f64::NAN));
    group.gauge("Status.Process.Memory.Virtual", || status_field("VmSize").map(|n| n as f64).unwrap_or(f64::NAN));
    group.gauge("Status.Process.Threads.Count", || status_field("Threads").map(|n| n as f64).unwrap_or(f64::NAN));
    group.gauge("Status.Hardware.CpuCores", move || cores);
    group.gauge("Status.Hardware.PhysicalMemory", || meminfo("MemTotal").map(|n| n as f64).unwrap_or(f64::NAN));
    group.gauge("Status.Hardware.AvailableMemory", || meminfo("MemAvailable").map(|n| n as f64).unwrap_or(f64::NAN));
    group.gauge("Status.Process.FileDescriptors.Open", || {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count() as f64).unwrap_or(f64::NAN)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    #[test]
    fn the_process_figures_are_read_from_proc() {
        let r = Registry::new();
        let g = r.group("taskmanager", vec![]);
        register(&g);
        // Burn a little CPU so the time is above 0.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = g.sample();
        let v = |n: &str| s.metric(n).map(|m| m.number()).unwrap_or(f64::NAN);
        assert!(v("Status.Process.CPU.Time") > 0.0, "{s:?}");
        assert!(v("Status.Process.Memory.Resident") > 1e6, "{s:?}");
        assert!(v("Status.Process.Memory.Virtual") >= v("Status.Process.Memory.Resident"), "{s:?}");
        assert!(v("Status.Process.Threads.Count") >= 1.0, "{s:?}");
        assert!(v("Status.Process.FileDescriptors.Open") >= 3.0, "{s:?}");
        assert!(v("Status.Hardware.CpuCores") >= 1.0 && v("Status.Hardware.PhysicalMemory") > 1e8, "{s:?}");
        let load = v("Status.Process.CPU.Load");
        assert!((0.0..=1.0).contains(&load), "{load}");
    }
}
