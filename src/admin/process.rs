//! The standard `process_*` metrics of the Prometheus client libraries,
//! read from Linux `/proc` when `/metrics` is scraped (on the blocking
//! pool, never on a request path): CPU seconds, resident and virtual
//! memory, open and maximum file descriptors, start time. Elsewhere, or
//! when a file cannot be read, the affected metrics are left out.

use std::{fmt::Write as _, sync::OnceLock};

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`: 100 on every
/// Linux architecture, as the Prometheus Go client also assumes).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's figures.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self` (blocking file reads).
    pub(super) fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(Stat::parse);
        let status = std::fs::read_to_string("/proc/self/status").ok();
        Self {
            cpu_seconds: stat.map(|stat| (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND),
            resident_bytes: status.as_deref().and_then(resident_bytes),
            virtual_bytes: stat.map(|stat| stat.vsize),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .as_deref()
                .and_then(max_open_files),
            start_time_seconds: start_time_seconds(stat),
        }
    }

    /// The metrics in the Prometheus text format, appended to `out`.
    pub(super) fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(value) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(|v| v.to_string()),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v.to_string()),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v.to_string()),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v.to_string()),
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|v| v.to_string()),
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.map(|v| v.to_string()),
        );
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Clock ticks after boot.
    starttime: u64,
    vsize: u64,
}

impl Stat {
    /// Parses the line; the command name (field 2) may hold spaces and
    /// parentheses, so fields are counted from after its last `)`.
    fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time (`btime` of `/proc/stat`) plus the start ticks; computed once.
fn start_time_seconds(stat: Option<Stat>) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let boot: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(boot as f64 + stat?.starttime as f64 / TICKS_PER_SECOND)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_parses_after_the_last_parenthesis() {
        let line = "14965 (a (b) c) R 14959 14959 919 0 -1 4194304 100 0 0 0 250 130 0 0 20 0 1 0 \
                    1782951 3133440 384 18446744073709551615 0";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 130,
                starttime: 1_782_951,
                vsize: 3_133_440,
            })
        );
        assert_eq!(Stat::parse("1 (cut"), None);
        assert_eq!(
            resident_bytes("Name:\tx\nVmRSS:\t    1968 kB\n"),
            Some(1968 * 1024)
        );
        assert_eq!(
            max_open_files(
                "Limit Soft Hard Units\nMax open files            20000                40000                files\n"
            ),
            Some(20000)
        );
    }

    #[test]
    fn the_live_process_reports_every_metric_on_linux() {
        let stats = ProcessStats::read();
        let mut out = String::new();
        stats.render(&mut out);
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                assert!(out.contains(&format!("# TYPE {name} ")), "{name}: {out}");
            }
            assert!(stats.resident_bytes.unwrap() > 0 && stats.open_fds.unwrap() > 0);
        }
    }
}
