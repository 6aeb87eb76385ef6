//! What the console shows, fetched off the UI thread: the journal's recent calls, then every
//! call as it finishes (`/tail`), helper progress, and the held queue (`/intercepted`, polled).
//! A gateway that goes away is reported and reached again; flows already shown stay.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::control::client::Flows;
use crate::journal::CallRecord;

/// One thing the feed learnt.
pub enum Msg {
    /// Calls finished, oldest first (the first batch is the journal so far).
    Calls(Vec<CallRecord>),
    /// A helper's progress line.
    Helper { helper: String, message: String },
    /// The held calls and the intercept filter.
    Held {
        filter: Option<String>,
        held: Vec<Value>,
    },
    /// The gateway cannot be reached (why); the feed keeps trying.
    Gone(String),
    /// The gateway answers (again).
    Back,
}

/// How often the held queue is asked for.
const HELD_EVERY: Duration = Duration::from_millis(250);

/// Start feeding `tx` from `flows` on a thread of its own; it ends when the receiver goes.
pub fn start(flows: Arc<Flows>, tx: Sender<Msg>) {
    if let Flows::File { calls, .. } = &*flows {
        let _ = tx.send(Msg::Calls(calls.clone()));
        return;
    }
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let held = tokio::spawn(poll_held(flows.clone(), tx.clone()));
            follow(&flows, &tx).await;
            held.abort();
        });
    });
}

/// `/tail`, then the journal so far (a call finishing in between comes twice; the console
/// keeps one), then every line; reconnects after a break.
async fn follow(flows: &Flows, tx: &Sender<Msg>) {
    loop {
        let res = match flows.send(Method::GET, "/tail", "").await {
            Ok(res) if res.status().is_success() => res,
            Ok(res) => {
                if tx.send(Msg::Gone(res.status().to_string())).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                if tx.send(Msg::Gone(e)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let recent = flows
            .call(Method::GET, "/calls?limit=1000", "")
            .await
            .ok()
            .and_then(|v| serde_json::from_value::<Vec<CallRecord>>(v).ok())
            .unwrap_or_default();
        if tx.send(Msg::Back).is_err() || tx.send(Msg::Calls(recent)).is_err() {
            return;
        }
        let mut body = res.into_body();
        let mut pending = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let msg = match v["event"].as_str() {
                    Some("helper") => Msg::Helper {
                        helper: v["helper"].as_str().unwrap_or("").to_string(),
                        message: v["message"].as_str().unwrap_or("").to_string(),
                    },
                    Some(_) => continue,
                    None => match serde_json::from_value::<CallRecord>(v) {
                        Ok(rec) => Msg::Calls(vec![rec]),
                        Err(_) => continue,
                    },
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        }
        if tx
            .send(Msg::Gone("the gateway closed the feed".into()))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn poll_held(flows: Arc<Flows>, tx: Sender<Msg>) {
    loop {
        if let Ok(v) = flows.call(Method::GET, "/intercepted", "").await {
            let msg = Msg::Held {
                filter: v["filter"].as_str().map(str::to_string),
                held: v["held"].as_array().cloned().unwrap_or_default(),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
        tokio::time::sleep(HELD_EVERY).await;
    }
}
