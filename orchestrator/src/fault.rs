//! Fault injection for crash tests: `TESSERA_CRASH_AT=NAME[:N]` kills the process the
//! N-th time (default 1st) it reaches the point named NAME, as abruptly as SIGKILL
//! (no destructors, no flushing). Unset, a point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// A named point where a crash can be injected.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("TESSERA_CRASH_AT").ok()?;
        let (n, count) = match v.split_once(':') {
            Some((n, c)) => (n.to_owned(), c.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((n, count))
    });
    if let Some((n, count)) = target
        && n == name
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *count
    {
        eprintln!("tessera: injected crash at {name}");
        std::process::abort();
    }
}
