//! `luastrip test SCRIPTS [--against FILE] [--expect FILE [--update]]`: route scripts tested
//! like code, with no dockerd.
//!
//! The scripts run in a real gateway ([`crate::serve::run`], every phase, the same checks of
//! bodies and queries), started in this process on private sockets. Behind it, instead of
//! dockerd, [`daemon::Recorded`] answers each call as the recording says dockerd did. For every
//! recorded call the report says what the scripts did: the status, what they changed (the
//! journal's [`diff`](crate::journal::diff)), what they denied, and errors with `file:line`.
//! `*_test.lua` files beside the scripts run as test cases ([`cases`]).
//!
//! It fails (exit 1) on a script error, a failed case, or a report that differs from the saved
//! expectation; `--update` saves the new report instead, so that a policy change is reviewed
//! in the diff of that file like any other change.

mod cases;
mod daemon;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::control::client::Flows;
use crate::journal::{diff, CallRecord};
use crate::outbound::{Outbound, Url};
use crate::serve::{self, Config};
use crate::upstream::UpstreamAddr;
use daemon::{Answer, Recorded};

/// What `luastrip test` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// A script file or a directory of them.
    pub scripts: PathBuf,
    /// A recording to replay through the scripts.
    pub against: Option<PathBuf>,
    /// The saved report to compare with.
    pub expect: Option<PathBuf>,
    /// Save the report to `expect` instead of comparing.
    pub update: bool,
}

/// The gateway under test and what stands behind it.
pub struct Harness {
    /// The gateway's socket.
    pub socket: PathBuf,
    control: Flows,
    pub daemon: Arc<Recorded>,
    client: Outbound,
}

/// Run `luastrip test`; the report goes to `out`. Whether everything passed.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<bool, String> {
    let dir = std::env::temp_dir().join(format!("luastrip-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = with_gateway(opts, &dir, out).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn with_gateway(opts: &Options, dir: &Path, out: &mut dyn Write) -> Result<bool, String> {
    let recorded = match &opts.against {
        Some(f) => crate::journal::record::read(f, false).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let cases = cases::find(&opts.scripts)?;
    if opts.against.is_none() && cases.is_empty() {
        return Err(format!(
            "nothing to test: no --against recording, and no *_test.lua beside {}",
            opts.scripts.display()
        ));
    }
    let daemon = Arc::new(Recorded::default());
    let daemon_socket = dir.join("daemon.sock");
    let listener = crate::socket::bind(&crate::socket::ListenOptions {
        path: daemon_socket.clone(),
        mode: 0o600,
        group: None,
    })
    .map_err(|e| e.to_string())?;
    let accept = tokio::net::UnixListener::from_std(
        listener
            .std_listener()
            .try_clone()
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let (stop_daemon, stopping) = tokio::sync::watch::channel(false);
    let answers = daemon.clone();
    tokio::spawn(crate::socket::serve_http(
        "recorded daemon",
        accept,
        move |req, ()| answers.clone().answer(req),
        stopping,
    ));
    let socket = dir.join("gateway.sock");
    let mut config = Config::new(
        &socket,
        UpstreamAddr::parse(&format!("unix://{}", daemon_socket.display()))?,
    );
    config.scripts = Some(opts.scripts.clone());
    config.threads = 1;
    let (stop_gateway, stop) = tokio::sync::oneshot::channel::<()>();
    let gateway = serve::run(config, async {
        let _ = stop.await;
    });
    let harness = Arc::new(Harness {
        control: Flows::Live(serve::control_path_for(&socket)),
        socket,
        daemon,
        client: Outbound::new(),
    });
    let work = async {
        harness.wait_ready().await?;
        let mut ok = true;
        if !recorded.is_empty() {
            ok &= replay(&harness, &recorded, opts, out).await?;
        }
        if !cases.is_empty() {
            ok &= cases::run(&harness, &cases, out).await?;
        }
        Ok::<bool, String>(ok)
    };
    tokio::pin!(gateway);
    tokio::pin!(work);
    let result = tokio::select! {
        served = &mut gateway => match served {
            Err(e) => Err(e.to_string()),
            Ok(()) => Err("the gateway under test stopped".into()),
        },
        r = &mut work => {
            let _ = stop_gateway.send(());
            let _ = gateway.await;
            r
        }
    };
    let _ = stop_daemon.send(true);
    drop(listener);
    result
}

impl Harness {
    async fn wait_ready(&self) -> Result<(), String> {
        for _ in 0..500 {
            if self.socket.exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("the gateway under test did not start".into())
    }

    /// Send one call through the gateway: its status, headers and whole body.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let url = Url::parse(&format!("unix://{}:{target}", self.socket.display()))?;
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?)
            .body(crate::body::full(body.clone()))
            .map_err(|e| e.to_string())?;
        for (k, v) in headers {
            if !matches!(
                k.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                req.headers_mut().append(k, v.clone());
            }
        }
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("docker"));
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let res = self
            .client
            .send(&url, req, Duration::from_secs(30))
            .await
            .map_err(|e| format!("{method} {target}: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .map_err(|_| format!("{method} {target}: the answer never ended"))?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// The journal's record of the last call.
    pub async fn last_call(&self) -> Result<CallRecord, String> {
        let v = self.control.call(Method::GET, "/calls?limit=1", "").await?;
        serde_json::from_value::<Vec<CallRecord>>(v)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "the journal has no call".to_string())
    }
}

/// The daemon's answer in a recording: as the daemon sent it, before post hooks.
fn daemon_answer(rec: &CallRecord) -> Option<Answer> {
    rec.upstream_us?;
    let before = rec.before.as_deref();
    let status = before.and_then(|b| b.status).or(rec.status)?;
    Some(Answer {
        call: Some((
            Method::from_bytes(rec.method.as_bytes()).ok()?,
            rec.path.clone(),
        )),
        status: StatusCode::from_u16(status).ok()?,
        headers: before
            .and_then(|b| b.response_headers.clone())
            .unwrap_or_else(|| rec.response_headers.clone()),
        body: Bytes::from(
            before
                .and_then(|b| b.response_body.clone())
                .or_else(|| rec.response_body.clone())
                .unwrap_or_default(),
        ),
    })
}

/// Replay every recorded call as its client sent it; report each; compare or save the report.
async fn replay(
    h: &Harness,
    recorded: &[CallRecord],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let mut report = String::new();
    let mut errors = 0;
    for rec in recorded {
        let line = format!("call {} {} {}", rec.id, rec.method, rec.raw);
        if rec.hijack != crate::hijack::Hijack::No {
            report.push_str(&format!("{line} → skipped: a hijacked session\n"));
            continue;
        }
        h.daemon.expect(daemon_answer(rec));
        let sent = rec.as_sent();
        let mut headers = sent.headers;
        headers.insert(crate::journal::REPLAY_HEADER, HeaderValue::from(rec.id));
        let body = Bytes::from(sent.body.unwrap_or_default());
        h.send(&sent.method, &sent.raw, &headers, body).await?;
        let now = h.last_call().await?;
        let (text, error) = describe(&line, rec, &now);
        errors += usize::from(error);
        report.push_str(&text);
    }
    let _ = write!(out, "{report}");
    let _ = writeln!(
        out,
        "{} calls replayed, {errors} with script errors",
        recorded.len()
    );
    let mut ok = errors == 0;
    if let Some(expect) = &opts.expect {
        if opts.update {
            std::fs::write(expect, &report).map_err(|e| format!("{}: {e}", expect.display()))?;
            let _ = writeln!(out, "saved the report to {}", expect.display());
        } else {
            let saved = std::fs::read_to_string(expect).map_err(|e| {
                format!(
                    "--expect {}: {e} (--update saves the report there)",
                    expect.display()
                )
            })?;
            if saved != report {
                ok = false;
                let _ = writeln!(
                    out,
                    "\nthe report differs from {} (- saved, + now; --update accepts it):",
                    expect.display()
                );
                for l in line_diff(&saved, &report) {
                    let _ = writeln!(out, "{l}");
                }
            } else {
                let _ = writeln!(out, "the report matches {}", expect.display());
            }
        }
    }
    Ok(ok)
}

/// One call's lines in the report, and whether a script failed on it.
fn describe(line: &str, recorded: &CallRecord, now: &CallRecord) -> (String, bool) {
    let status = now.status.map_or("-".to_string(), |s| s.to_string());
    let was = match (recorded.status, now.status) {
        (Some(a), Some(b)) if a != b => format!(" (recorded: {a})"),
        _ => String::new(),
    };
    let mut text = format!("{line} → {status}{was}");
    let script_error = now
        .error
        .as_ref()
        .is_some_and(|e| e.source == crate::error::Source::Script)
        || now.hooks.iter().any(|h| h.error.is_some());
    let answered_by_hook = now.upstream_us.is_none() && now.status.is_some() && now.error.is_none();
    if let Some(e) = &now.error {
        text.push_str(&format!(" error ({}): {}", e.source, e.message));
    } else if answered_by_hook {
        let by = now
            .hooks
            .last()
            .map_or("a hook".to_string(), |h| h.location.clone());
        let message = now
            .response_body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        text.push_str(&format!(" answered by {by}"));
        if !message.is_empty() {
            text.push_str(&format!(": {message}"));
        }
    }
    text.push('\n');
    for change in diff::changes(now) {
        if change.what == "answer" {
            continue;
        }
        text.push_str(&format!("  {change}\n"));
    }
    (text, script_error)
}

/// The lines of `a` and `b` as a diff: `-` only in `a`, `+` only in `b`, `  ` in both (around
/// changes only, with two lines of context).
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 16_000_000 {
        // Too long for a table: the lines of each that the other lacks.
        let mut out: Vec<String> = a
            .iter()
            .filter(|l| !b.contains(l))
            .map(|l| format!("- {l}"))
            .collect();
        out.extend(
            b.iter()
                .filter(|l| !a.contains(l))
                .map(|l| format!("+ {l}")),
        );
        return out;
    }
    // Longest common subsequence, from the end.
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut all = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            all.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // What went comes before what came, as in a unified diff.
            all.push(('-', a[i]));
            i += 1;
        } else {
            all.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        all[k.saturating_sub(2)..(k + 3).min(all.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    all.iter()
        .enumerate()
        .filter(|(k, (c, _))| *c != ' ' || near(*k))
        .map(|(_, (c, l))| format!("{c} {l}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_shows_changes_with_context() {
        let a = "1\n2\n3\n4\n5\n6\n7\n";
        let b = "1\n2\n3\nfour\n5\n6\n7\n";
        assert_eq!(
            line_diff(a, b),
            vec!["  2", "  3", "- 4", "+ four", "  5", "  6"]
        );
        assert!(line_diff(a, a).is_empty());
    }
}
