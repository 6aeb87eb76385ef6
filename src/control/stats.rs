//! Aggregates over the journal for `GET /metrics` (Prometheus text) and the per-route numbers of
//! `GET /routes`. A task follows the journal's broadcast, so the call path pays nothing extra; a
//! follower that falls behind counts what it missed (`luastrip_journal_missed_total`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::journal::{CallRecord, Journal};

/// Hook timings kept per route for percentiles.
const SAMPLES: usize = 1024;

/// Numbers for one hook (phase, pattern, location).
#[derive(Debug, Default, Clone)]
pub struct RouteStats {
    pub hits: u64,
    pub errors: u64,
    /// Recent durations in microseconds (a ring of [`SAMPLES`]).
    samples: Vec<u64>,
    next: usize,
    pub total_us: u64,
}

impl RouteStats {
    fn add(&mut self, us: u64, error: bool) {
        self.hits += 1;
        self.errors += error as u64;
        self.total_us += us;
        if self.samples.len() < SAMPLES {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
            self.next = (self.next + 1) % SAMPLES;
        }
    }

    /// The `q` quantile (0..=1) of recent durations, in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.samples.is_empty() {
            return 0;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        s[((s.len() - 1) as f64 * q).round() as usize]
    }
}

#[derive(Default)]
struct Inner {
    /// (method, status) → count.
    calls: BTreeMap<(String, u16), u64>,
    /// error source → count.
    errors: BTreeMap<String, u64>,
    /// (phase, pattern, location) → stats.
    routes: BTreeMap<(String, String, String), RouteStats>,
    streams: u64,
    hijacks: u64,
    missed: u64,
}

/// Live aggregates.
#[derive(Default, Clone)]
pub struct Stats(Arc<Mutex<Inner>>);

impl Stats {
    /// Follow `journal` from now on. Must be called inside a Tokio runtime.
    pub fn follow(journal: &Journal) -> Stats {
        let stats = Stats::default();
        let mut rx = journal.subscribe();
        let s = stats.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(rec) => s.add(&rec),
                    Err(broadcast::error::RecvError::Lagged(n)) => s.lock().missed += n,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, rec: &CallRecord) {
        let mut i = self.lock();
        *i.calls
            .entry((method_label(&rec.method), rec.status.unwrap_or(0)))
            .or_default() += 1;
        if let Some(e) = &rec.error {
            let source = serde_json::to_value(e.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *i.errors.entry(source).or_default() += 1;
        }
        i.streams += rec.streaming as u64;
        i.hijacks += (rec.hijack != crate::hijack::Hijack::No) as u64;
        for h in &rec.hooks {
            i.routes
                .entry((h.phase.to_string(), h.route.clone(), h.location.clone()))
                .or_default()
                .add(h.duration_us, h.error.is_some());
        }
    }

    /// Numbers for one hook, if it ran.
    pub fn route(&self, phase: &str, pattern: &str, location: &str) -> RouteStats {
        self.lock()
            .routes
            .get(&(phase.to_string(), pattern.to_string(), location.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let i = self.lock();
        let mut o = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            o,
            "# HELP luastrip_calls_total Calls answered, by method and status."
        );
        let _ = writeln!(o, "# TYPE luastrip_calls_total counter");
        for ((m, s), n) in &i.calls {
            let _ = writeln!(
                o,
                "luastrip_calls_total{{method=\"{}\",status=\"{s}\"}} {n}",
                esc(m)
            );
        }
        let _ = writeln!(o, "# HELP luastrip_errors_total Calls that failed, by source (client, daemon, script, adapter, helper, internal).");
        let _ = writeln!(o, "# TYPE luastrip_errors_total counter");
        for (src, n) in &i.errors {
            let _ = writeln!(o, "luastrip_errors_total{{source=\"{}\"}} {n}", esc(src));
        }
        let _ = writeln!(o, "# HELP luastrip_streams_total Calls whose response streamed (logs -f, events, wait, build …).");
        let _ = writeln!(o, "# TYPE luastrip_streams_total counter");
        let _ = writeln!(o, "luastrip_streams_total {}", i.streams);
        let _ = writeln!(
            o,
            "# HELP luastrip_hijacks_total Calls that became raw tunnels (attach, exec)."
        );
        let _ = writeln!(o, "# TYPE luastrip_hijacks_total counter");
        let _ = writeln!(o, "luastrip_hijacks_total {}", i.hijacks);
        let _ = writeln!(
            o,
            "# HELP luastrip_hook_runs_total Hook runs, by phase, route and location."
        );
        let _ = writeln!(o, "# TYPE luastrip_hook_runs_total counter");
        let _ = writeln!(
            o,
            "# HELP luastrip_hook_errors_total Hook runs that failed."
        );
        let _ = writeln!(o, "# TYPE luastrip_hook_errors_total counter");
        let _ = writeln!(o, "# HELP luastrip_hook_seconds_sum Time spent in hooks.");
        let _ = writeln!(o, "# TYPE luastrip_hook_seconds_sum counter");
        for ((phase, route, loc), r) in &i.routes {
            let labels = format!(
                "phase=\"{}\",route=\"{}\",location=\"{}\"",
                esc(phase),
                esc(route),
                esc(loc)
            );
            let _ = writeln!(o, "luastrip_hook_runs_total{{{labels}}} {}", r.hits);
            let _ = writeln!(o, "luastrip_hook_errors_total{{{labels}}} {}", r.errors);
            let _ = writeln!(
                o,
                "luastrip_hook_seconds_sum{{{labels}}} {}",
                r.total_us as f64 / 1e6
            );
        }
        let _ = writeln!(
            o,
            "# HELP luastrip_journal_missed_total Call records the metrics follower missed."
        );
        let _ = writeln!(o, "# TYPE luastrip_journal_missed_total counter");
        let _ = writeln!(o, "luastrip_journal_missed_total {}", i.missed);
        o
    }
}

/// A metrics label for a method: the methods Docker's API uses, and `OTHER` for anything a
/// client makes up, so that labels stay bounded whatever clients send.
fn method_label(method: &str) -> String {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    match KNOWN.iter().find(|m| **m == method) {
        Some(m) => m.to_string(),
        None => "OTHER".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label("POST"), "POST");
        assert_eq!(method_label("FOOBAR"), "OTHER");
        assert_eq!(method_label("X1"), "OTHER");
    }

    #[test]
    fn quantiles_over_recent_samples() {
        let mut r = RouteStats::default();
        for us in 1..=100 {
            r.add(us, us == 100);
        }
        assert_eq!((r.hits, r.errors), (100, 1));
        assert_eq!(r.quantile(0.5), 51);
        assert_eq!(r.quantile(0.99), 99);
        for _ in 0..SAMPLES {
            r.add(7, false);
        }
        assert_eq!(r.quantile(0.99), 7, "old samples age out");
    }
}
