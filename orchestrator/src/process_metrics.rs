//! The standard `process_*` metrics (CPU seconds, resident memory, open file
//! descriptors, start time), read from `/proc/self` at scrape time. Linux only: on other
//! systems the collector exports nothing.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

struct ProcessCollector {
    cpu: Counter,
    rss: Gauge,
    fds: Gauge,
    start: Gauge,
    descs: Vec<Desc>,
}

fn ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; reading it needs libc.
    100.0
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Vec::new();
        };
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime = field 14, stime = 15, starttime = 22, rss pages = 24 (1-based); f[0] is field 3.
        let cpu = (num(11) + num(12)) / ticks_per_second();
        let delta = cpu - self.cpu.get();
        if delta > 0.0 {
            self.cpu.inc_by(delta);
        }
        self.rss.set(num(21) * 4096.0);
        if let Some(boot) = boot_time() {
            self.start.set(boot + num(19) / ticks_per_second());
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(dir.count() as f64);
        }
        let mut out = Vec::new();
        out.extend(self.cpu.collect());
        out.extend(self.rss.collect());
        out.extend(self.fds.collect());
        out.extend(self.start.collect());
        out
    }
}

/// Registers the process collector in the default registry (once).
pub(crate) fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let make = || -> prometheus::Result<ProcessCollector> {
            let cpu = Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds",
            ))?;
            let rss = Gauge::with_opts(Opts::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
            ))?;
            let fds = Gauge::with_opts(Opts::new(
                "process_open_fds",
                "Number of open file descriptors",
            ))?;
            let start = Gauge::with_opts(Opts::new(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
            ))?;
            let mut descs = Vec::new();
            for c in [&cpu as &dyn Collector, &rss, &fds, &start] {
                descs.extend(c.desc().into_iter().cloned());
            }
            Ok(ProcessCollector {
                cpu,
                rss,
                fds,
                start,
                descs,
            })
        };
        if let Ok(c) = make() {
            let _ = prometheus::register(Box::new(c));
        }
    });
}
