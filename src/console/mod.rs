//! `luastrip console`: a full-screen terminal UI (ratatui + crossterm) on the control socket, for
//! people who know mitmproxy's console. A live flow list, a detail view with request, response,
//! hooks and diff tabs, interception with a visible held queue, editing in `$EDITOR`, replay,
//! export as `curl`, recording, and the helpers' progress. It also opens a recorded file,
//! read-only.
//!
//! The feed ([`feed`]) fetches off the UI thread; this module keeps the state and handles keys;
//! [`view`] draws. Actions are control-socket calls ([`Flows`]), so the console can do nothing
//! the REPL and curl cannot.

mod feed;
mod view;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use ratatui::crossterm::event::{
    self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use serde_json::Value;

use crate::control::client::Flows;
use crate::control::filter::Filter;
use crate::journal::CallRecord;
use feed::Msg;

/// Most flows kept; the oldest go first.
const MAX_FLOWS: usize = 5000;

/// The detail view's tabs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Request,
    Response,
    Hooks,
    Diff,
}

impl Tab {
    const ALL: [Tab; 4] = [Tab::Request, Tab::Response, Tab::Hooks, Tab::Diff];

    fn title(self) -> &'static str {
        match self {
            Tab::Request => "Request",
            Tab::Response => "Response",
            Tab::Hooks => "Hooks",
            Tab::Diff => "Diff",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// One row of the flow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// A finished call (index into `App::flows`).
    Call(usize),
    /// A held call (index into `App::held`).
    Held(usize),
}

/// What the bottom line is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Filter,
    Intercept,
    Record,
}

impl Ask {
    fn label(self) -> &'static str {
        match self {
            Ask::Filter => "filter",
            Ask::Intercept => "intercept",
            Ask::Record => "record to file",
        }
    }
}

/// Everything on screen.
pub struct App {
    flows_from: Arc<Flows>,
    /// The gateway's listen socket, for exported `curl` commands.
    listen: PathBuf,
    flows: VecDeque<CallRecord>,
    held: Vec<Value>,
    /// The intercept filter, as the gateway reports it.
    intercept: Option<String>,
    /// Whether this console turned intercept on (quitting turns it off again).
    intercepting: bool,
    /// The view filter: which flows the list shows.
    filter: Option<(String, Filter)>,
    rows: Vec<Row>,
    selected: usize,
    /// Keep the selection on the newest flow as flows arrive.
    follow: bool,
    /// The flow shown in detail: its id, whether it is held, the tab and the scroll.
    detail: Option<(u64, bool, Tab, u16)>,
    prompt: Option<(Ask, String)>,
    /// The last message for the user and when it came.
    message: Option<(String, Instant)>,
    /// Recent helper progress lines.
    helpers: VecDeque<(String, Instant)>,
    /// Why the gateway cannot be reached, while it cannot.
    gone: Option<String>,
    /// Files being recorded to.
    recording: Vec<String>,
    help: bool,
    /// A popup: title and text (an exported command).
    popup: Option<(String, String)>,
    /// Rows the list had on screen at the last draw (for paging and mouse clicks).
    list_height: usize,
    /// Screen row of the list's first entry at the last draw.
    list_top: u16,
    rt: tokio::runtime::Runtime,
    quit: bool,
}

/// Run the console on `flows` until the user quits. `listen` is the gateway's socket, used in
/// exported `curl` commands.
pub fn run(flows: Flows, listen: &Path) -> Result<(), String> {
    let flows = Arc::new(flows);
    let (tx, rx) = channel();
    feed::start(flows.clone(), tx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut app = App {
        flows_from: flows,
        listen: listen.to_path_buf(),
        flows: VecDeque::new(),
        held: Vec::new(),
        intercept: None,
        intercepting: false,
        filter: None,
        rows: Vec::new(),
        selected: 0,
        follow: true,
        detail: None,
        prompt: None,
        message: None,
        helpers: VecDeque::new(),
        gone: None,
        recording: Vec::new(),
        help: false,
        popup: None,
        list_height: 10,
        list_top: 1,
        rt,
        quit: false,
    };
    if app.flows_from.is_file() {
        app.say(format!(
            "{} — read-only: f filter, Enter details, E export",
            app.flows_from.describe()
        ));
    }
    let mut terminal = start_terminal()?;
    let result = app.main_loop(&mut terminal, &rx);
    stop_terminal();
    if app.intercepting {
        let _ = app.control(Method::POST, "/intercept", "off");
    }
    result
}

fn start_terminal() -> Result<ratatui::DefaultTerminal, String> {
    let terminal = ratatui::try_init().map_err(|e| format!("cannot use this terminal: {e}"))?;
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::EnableMouseCapture
    );
    Ok(terminal)
}

fn stop_terminal() {
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::DisableMouseCapture
    );
    ratatui::restore();
}

impl App {
    fn main_loop(
        &mut self,
        terminal: &mut ratatui::DefaultTerminal,
        rx: &Receiver<Msg>,
    ) -> Result<(), String> {
        let mut last_record_check = Instant::now() - Duration::from_secs(10);
        while !self.quit {
            while let Ok(msg) = rx.try_recv() {
                self.take(msg);
            }
            if !self.flows_from.is_file() && last_record_check.elapsed() > Duration::from_secs(2) {
                self.refresh_recording();
                last_record_check = Instant::now();
            }
            self.build_rows();
            terminal
                .draw(|f| view::draw(f, self))
                .map_err(|e| e.to_string())?;
            if event::poll(Duration::from_millis(100)).map_err(|e| e.to_string())? {
                match event::read().map_err(|e| e.to_string())? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if let Some(edit) = self.key(k) {
                            // The editor needs the terminal: leave the full screen for it.
                            stop_terminal();
                            let r = self.edit(edit);
                            *terminal = start_terminal()?;
                            let _ = terminal.clear();
                            self.say(r.unwrap_or_else(|e| e));
                        }
                    }
                    Event::Mouse(m) => self.mouse(m.kind, m.row),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Calls(calls) => {
                for c in calls {
                    // In id order, each once: the journal's batch may overlap the tail.
                    if let Err(at) = self.flows.binary_search_by_key(&c.id, |f| f.id) {
                        self.flows.insert(at, c);
                    }
                }
                while self.flows.len() > MAX_FLOWS {
                    self.flows.pop_front();
                }
            }
            Msg::Helper { helper, message } => {
                self.helpers
                    .push_back((format!("{helper}: {message}"), Instant::now()));
                while self.helpers.len() > 3 {
                    self.helpers.pop_front();
                }
            }
            Msg::Held { filter, held } => {
                self.intercept = filter;
                self.held = held;
            }
            Msg::Gone(why) => self.gone = Some(why),
            Msg::Back => self.gone = None,
        }
    }

    /// The rows the list shows: matching flows, then held calls.
    fn build_rows(&mut self) {
        let at_end = self.follow && self.selected + 1 >= self.rows.len();
        let current = self.rows.get(self.selected).map(|r| self.row_id(*r));
        self.rows = self
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| self.filter.as_ref().is_none_or(|(_, flt)| flt.matches(f)))
            .map(|(i, _)| Row::Call(i))
            .chain((0..self.held.len()).map(Row::Held))
            .collect();
        // The selection stays on its flow, or on the newest while following.
        self.selected = if at_end {
            self.rows.len().saturating_sub(1)
        } else {
            current
                .and_then(|id| self.rows.iter().position(|r| self.row_id(*r) == id))
                .unwrap_or(self.selected)
                .min(self.rows.len().saturating_sub(1))
        };
    }

    fn row_id(&self, row: Row) -> (u64, bool) {
        match row {
            Row::Call(i) => (self.flows.get(i).map_or(0, |f| f.id), false),
            Row::Held(i) => (
                self.held.get(i).and_then(|h| h["id"].as_u64()).unwrap_or(0),
                true,
            ),
        }
    }

    fn say(&mut self, m: String) {
        self.message = Some((m, Instant::now()));
    }

    /// One control call.
    fn control(&self, method: Method, path: &str, body: &str) -> Result<Value, String> {
        self.rt.block_on(self.flows_from.call(method, path, body))
    }

    fn refresh_recording(&mut self) {
        if let Ok(v) = self.control(Method::GET, "/record", "") {
            self.recording = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["file"].as_str().map(str::to_string))
                .collect();
        }
    }

    /// The flow under the cursor (or in detail): its id and whether it is held.
    fn focus(&self) -> Option<(u64, bool)> {
        match self.detail {
            Some((id, held, _, _)) => Some((id, held)),
            None => self.rows.get(self.selected).map(|r| self.row_id(*r)),
        }
    }

    pub fn flow(&self, id: u64) -> Option<&CallRecord> {
        self.flows.iter().find(|f| f.id == id)
    }

    pub fn held_call(&self, id: u64) -> Option<&Value> {
        self.held.iter().find(|h| h["id"].as_u64() == Some(id))
    }

    /// Handle a key; returns the id of a held call to edit in `$EDITOR`.
    fn key(&mut self, k: KeyEvent) -> Option<u64> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if let Some((ask, text)) = self.prompt.as_mut() {
            match k.code {
                KeyCode::Enter => {
                    let (ask, text) = (*ask, text.trim().to_string());
                    self.prompt = None;
                    self.answer(ask, text);
                }
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return None;
        }
        if self.help || self.popup.is_some() {
            // Any key closes an overlay.
            self.help = false;
            self.popup = None;
            return None;
        }
        let page = self.list_height.max(1);
        let live = !self.flows_from.is_file();
        match k.code {
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') | KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('f') => {
                let now = self
                    .filter
                    .as_ref()
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                self.prompt = Some((Ask::Filter, now));
            }
            KeyCode::Char('i') if live => {
                self.prompt = Some((Ask::Intercept, self.intercept.clone().unwrap_or_default()))
            }
            KeyCode::Char('w') if live => {
                if self.recording.is_empty() {
                    self.prompt = Some((Ask::Record, String::new()));
                } else {
                    let r = self.control(Method::POST, "/record/stop", "");
                    self.refresh_recording();
                    self.say(match r {
                        Ok(v) => format!("recording stopped: {}", files(&v)),
                        Err(e) => e,
                    });
                }
            }
            KeyCode::Char('z') => {
                self.flows.clear();
                self.selected = 0;
                self.detail = None;
            }
            KeyCode::Char('a') if live => self.decide("resume", false),
            KeyCode::Char('A') if live => self.decide("resume", true),
            KeyCode::Char('d') if live && self.focus().is_some_and(|(_, h)| h) => {
                self.decide("drop", false)
            }
            KeyCode::Char('d') => self.forget(),
            KeyCode::Char('e') if live => match self.focus() {
                Some((id, true)) => return Some(id),
                _ => self.say("e edits a held call (i sets what to hold)".into()),
            },
            KeyCode::Char('r') if live => self.replay(),
            KeyCode::Char('E') => self.export(),
            KeyCode::Enter => {
                if let Some((id, held)) = self.focus() {
                    self.detail = Some((id, held, Tab::Request, 0));
                }
            }
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => self.tab(1),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => self.tab(-1),
            KeyCode::Char(c @ '1'..='4') if self.detail.is_some() => {
                if let Some(d) = self.detail.as_mut() {
                    d.2 = Tab::ALL[c as usize - '1' as usize];
                    d.3 = 0;
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll(page as isize),
            KeyCode::PageUp => self.scroll(-(page as isize)),
            KeyCode::Home | KeyCode::Char('g') => self.scroll(-(isize::MAX / 2)),
            KeyCode::End | KeyCode::Char('G') => self.scroll(isize::MAX / 2),
            KeyCode::Char(c) if !live && "iwaAerd".contains(c) => {
                self.say(format!("{} is read-only", self.flows_from.describe()))
            }
            _ => {}
        }
        None
    }

    fn mouse(&mut self, kind: MouseEventKind, row: u16) {
        match kind {
            MouseEventKind::ScrollDown => self.scroll(3),
            MouseEventKind::ScrollUp => self.scroll(-3),
            MouseEventKind::Down(_) if self.detail.is_none() && row >= self.list_top => {
                let first = self
                    .selected
                    .saturating_sub(self.list_height.saturating_sub(1));
                let at = first + usize::from(row - self.list_top);
                if at < self.rows.len() {
                    self.selected = at;
                    self.follow = false;
                }
            }
            _ => {}
        }
    }

    fn tab(&mut self, by: isize) {
        if let Some(d) = self.detail.as_mut() {
            d.2 = d.2.step(by);
            d.3 = 0;
        }
    }

    /// Move the selection (list) or the text (detail).
    fn scroll(&mut self, by: isize) {
        if let Some(d) = self.detail.as_mut() {
            d.3 = (d.3 as isize + by).clamp(0, u16::MAX as isize) as u16;
            return;
        }
        let last = self.rows.len().saturating_sub(1) as isize;
        self.selected = (self.selected as isize + by).clamp(0, last.max(0)) as usize;
        self.follow = self.selected as isize >= last;
    }

    fn answer(&mut self, ask: Ask, text: String) {
        match ask {
            Ask::Filter if text.is_empty() => self.filter = None,
            Ask::Filter => match Filter::parse(&text) {
                Ok(f) => self.filter = Some((text, f)),
                Err(e) => self.say(e.caret(&text).replace('\n', "  ")),
            },
            Ask::Intercept => {
                let r = self.control(Method::POST, "/intercept", &text);
                match r {
                    Ok(v) => {
                        self.intercepting = v["intercept"].is_string();
                        self.intercept = v["intercept"].as_str().map(str::to_string);
                        self.say(match &self.intercept {
                            Some(f) => {
                                format!("intercepting {f}: a accept, A accept all, d drop, e edit")
                            }
                            None => format!(
                                "not intercepting; {} held call(s) let go on",
                                v["released"].as_u64().unwrap_or(0)
                            ),
                        });
                    }
                    Err(e) => self.say(e.replace('\n', "  ")),
                }
            }
            Ask::Record if text.is_empty() => {}
            Ask::Record => {
                let file = std::path::absolute(&text)
                    .map(|p| p.display().to_string())
                    .unwrap_or(text);
                let r = self.control(Method::POST, "/record", &file);
                self.refresh_recording();
                self.say(match r {
                    Ok(_) => format!("recording every call to {file} (w stops)"),
                    Err(e) => e,
                });
            }
        }
    }

    /// Accept (`resume`) or drop the focused held call, or every held call.
    fn decide(&mut self, action: &str, all: bool) {
        let path = match (all, self.focus()) {
            (true, _) => format!("/intercepted/all/{action}"),
            (false, Some((id, true))) => format!("/intercepted/{id}/{action}"),
            _ => {
                self.say("no held call here (i sets what to hold)".into());
                return;
            }
        };
        let r = self.control(Method::POST, &path, "");
        self.say(match r {
            Ok(v) if all => format!("{action}: {} held call(s)", v["calls"]),
            Ok(v) => format!("{action}: call {}", v["id"]),
            Err(e) => e,
        });
        if matches!(self.detail, Some((_, true, _, _))) {
            self.detail = None;
        }
    }

    /// `d` on a finished flow: take it off the list (mitmproxy's delete).
    fn forget(&mut self) {
        if let Some((id, false)) = self.focus() {
            self.flows.retain(|f| f.id != id);
            self.detail = None;
        }
    }

    fn replay(&mut self) {
        let Some((id, false)) = self.focus() else {
            self.say("r replays a finished call".into());
            return;
        };
        let r = self.control(Method::POST, &format!("/replay/{id}"), "");
        self.say(match r {
            Ok(v) => format!("replayed call {id}: {}", v["status"]),
            Err(e) => e,
        });
    }

    /// `E`: the focused call as the client sent it, as a `curl` command on the gateway's
    /// socket, shown and saved to `luastrip-call-ID.sh`.
    fn export(&mut self) {
        let Some((id, false)) = self.focus() else {
            self.say("E exports a finished call".into());
            return;
        };
        let Some(rec) = self.flow(id) else { return };
        let cmd = view::curl(rec, &self.listen);
        let file = PathBuf::from(format!("luastrip-call-{id}.sh"));
        let saved = std::fs::write(&file, format!("#!/bin/sh\n{cmd}\n"));
        self.popup = Some((
            format!("call {id} as curl (any key closes)"),
            match saved {
                Ok(()) => format!(
                    "saved to {}\n\n{cmd}",
                    std::path::absolute(&file).unwrap_or(file).display()
                ),
                Err(e) => format!("(cannot save {}: {e})\n\n{cmd}", file.display()),
            },
        ));
    }

    /// Edit held call `id` in `$VISUAL`/`$EDITOR` as pretty JSON, then let it go on as saved.
    fn edit(&mut self, id: u64) -> Result<String, String> {
        let held = self
            .held_call(id)
            .cloned()
            .ok_or_else(|| format!("call {id} is no longer held"))?;
        let edited = crate::control::client::edit_held(&held)?;
        self.detail = None;
        self.control(Method::POST, &format!("/intercepted/{id}/resume"), &edited)?;
        Ok(format!("call {id} went on as edited"))
    }
}

/// The files of a `record` answer, for a message.
fn files(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} ({} calls)",
                r["file"].as_str().unwrap_or(""),
                r["written"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
