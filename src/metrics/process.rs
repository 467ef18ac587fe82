//! The relay process's own resources, read from `/proc/self` at each scrape, under the names
//! every Prometheus client library uses (`process_*`), so stock dashboards and alerts apply.

use std::fmt::Write;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Number of threads.
    pub threads: u64,
    /// Number of open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessSample {
    /// Read the current process; `None` where there is no `/proc` (not Linux).
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let units = Units {
            ticks_per_second: sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap_or(100),
            page_bytes: sysconf(nix::unistd::SysconfVar::PAGE_SIZE).unwrap_or(4096),
        };
        // Reading the directory opened one more descriptor than the process has.
        parse(&stat, &boot, &limits, open_fds.saturating_sub(1), units)
    }

    /// Append the Prometheus text exposition of this sample to `out`.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.to_string(),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.to_string(),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.to_string(),
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            self.threads.to_string(),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.to_string(),
        );
        if let Some(max) = self.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max.to_string(),
            );
        }
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.to_string(),
        );
    }
}

/// The kernel's units for `/proc/self/stat`.
#[derive(Debug, Clone, Copy)]
struct Units {
    ticks_per_second: u64,
    page_bytes: u64,
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<u64> {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
}

/// `stat` is `/proc/self/stat`, `boot` is `/proc/stat` (for `btime`), `limits` is
/// `/proc/self/limits`.
fn parse(
    stat: &str,
    boot: &str,
    limits: &str,
    open_fds: u64,
    units: Units,
) -> Option<ProcessSample> {
    // The command name (field 2) is in parentheses and may contain spaces or parentheses;
    // the fields after the last `)` start at field 3 (state).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = units.ticks_per_second as f64;
    let boot_time: u64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok());
    Some(ProcessSample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * units.page_bytes,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (dream core) relay) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
        250 130 0 0 20 0 7 0 5000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
    const BOOT: &str = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 10\n";
    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units\n\
        Max open files            1024                 524288               files\n";

    #[test]
    fn reads_the_fields_prometheus_names() {
        let units = Units {
            ticks_per_second: 100,
            page_bytes: 4096,
        };
        let sample = parse(STAT, BOOT, LIMITS, 12, units).unwrap();
        assert_eq!(
            sample,
            ProcessSample {
                cpu_seconds: 3.8,
                resident_bytes: 2048 * 4096,
                virtual_bytes: 123_456_789,
                threads: 7,
                open_fds: 12,
                max_fds: Some(1024),
                start_time_seconds: 1_700_000_050.0,
            }
        );
        let mut text = String::new();
        sample.render(&mut text);
        assert!(
            text.contains("\nprocess_resident_memory_bytes 8388608\n"),
            "{text}"
        );
        assert!(text
            .contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.8\n"));
    }

    #[test]
    fn an_unlimited_descriptor_limit_is_left_out() {
        let units = Units {
            ticks_per_second: 100,
            page_bytes: 4096,
        };
        let limits = "Max open files            unlimited            unlimited            files\n";
        let sample = parse(STAT, BOOT, limits, 3, units).unwrap();
        assert_eq!(sample.max_fds, None);
        let mut text = String::new();
        sample.render(&mut text);
        assert!(!text.contains("process_max_fds"));
    }

    #[test]
    fn this_process_can_be_read() {
        let sample = ProcessSample::read().expect("/proc/self");
        assert!(sample.resident_bytes > 1024 * 1024, "{sample:?}");
        assert!(sample.threads >= 1 && sample.open_fds >= 3, "{sample:?}");
    }
}
