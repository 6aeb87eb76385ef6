//! Aggregates over the journal for `GET /metrics` (Prometheus text) and the per-route numbers of
//! `GET /routes`. They are kept by a journal observer, on the worker that records each call: a
//! few map updates under a lock. (A task following the journal's broadcast instead cost a
//! thread wake-up per call, 10-20 % of pass-through throughput, and could miss records.)

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

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
    calls: BTreeMap<(&'static str, u16), u64>,
    /// error source → count.
    errors: BTreeMap<String, u64>,
    /// (phase, pattern, location) → stats.
    routes: BTreeMap<(String, String, String), RouteStats>,
    streams: u64,
    hijacks: u64,
}

/// Live aggregates.
#[derive(Default, Clone)]
pub struct Stats(Arc<Mutex<Inner>>);

impl Stats {
    /// Aggregate every call `journal` records from now on.
    pub fn observe(journal: &Journal) -> Stats {
        let stats = Stats::default();
        let s = stats.clone();
        journal.observe(Box::new(move |rec| s.add(rec)));
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
        o
    }
}

/// A metrics label for a method: the methods Docker's API uses, and `OTHER` for anything a
/// client makes up, so that labels stay bounded whatever clients send.
fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
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
    fn every_record_is_counted_however_fast_they_come() {
        // Far more records than the journal's broadcast holds (1024), with no task to run:
        // the observer sees each one as it is recorded.
        let journal = Journal::new(16, 1 << 20);
        let stats = Stats::observe(&journal);
        for id in 0..5000 {
            let mut rec = CallRecord::unfinished(id, "POST", "/containers/create", "/x");
            rec.status = Some(201);
            journal.record(rec);
        }
        journal.record(CallRecord::unfinished(5000, "BREW", "/coffee", "/coffee"));
        let text = stats.prometheus();
        assert!(
            text.contains("luastrip_calls_total{method=\"POST\",status=\"201\"} 5000"),
            "{text}"
        );
        assert!(
            text.contains("luastrip_calls_total{method=\"OTHER\",status=\"0\"} 1"),
            "{text}"
        );
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
