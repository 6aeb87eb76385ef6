//! Drawing the console: the flow list (or one flow's tabs), the helpers' progress, the message
//! or prompt line and the key hints. Narrow terminals get fewer columns, never a broken layout.

use std::path::Path;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, Tabs, Wrap,
};
use ratatui::Frame;
use serde_json::Value;

use super::{App, Row, Tab};
use crate::journal::diff::{changes, Side};
use crate::journal::CallRecord;

/// Below this width the list drops its id, duration and marks columns.
const NARROW: u16 = 70;

pub fn draw(f: &mut Frame, app: &mut App) {
    let helpers: Vec<String> = app
        .helpers
        .iter()
        .filter(|(_, at)| at.elapsed().as_secs() < 60)
        .map(|(m, _)| m.clone())
        .collect();
    let [top, main, help_area, line, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(helpers.len() as u16),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_top(f, app, top);
    match app.detail {
        Some((id, held, tab, scroll)) => {
            let shown = draw_detail(f, app, main, id, held, tab, scroll);
            if let Some(d) = app.detail.as_mut() {
                d.3 = shown;
            }
        }
        None => draw_list(f, app, main),
    }
    let lines: Vec<Line> = helpers
        .into_iter()
        .map(|m| Line::from(m).fg(Color::Cyan))
        .collect();
    f.render_widget(Paragraph::new(lines), help_area);
    draw_line(f, app, line);
    let hints = match (app.detail.is_some(), keys.width < NARROW) {
        (true, false) => "q back  Tab/1-4 tabs  j/k scroll  a accept  d drop  e edit  r replay  E curl  ? help",
        (true, true) => "q back  Tab tabs  ? help",
        (false, false) => "Enter open  f filter  i intercept  a/A accept  d drop  e edit  r replay  E curl  w record  z clear  ? help  q quit",
        (false, true) => "Enter f i a A d e r E ? q",
    };
    f.render_widget(Paragraph::new(hints).dim(), keys);
    if app.help {
        popup(f, "keys (any key closes)", HELP);
    }
    if let Some((title, text)) = &app.popup {
        popup(f, title, text);
    }
}

/// The `?` screen (docs/control.md shows it too; a test keeps them the same).
pub const HELP: &str = "\
List
  j/k ↑/↓ PgUp/PgDn g/G   move (mouse wheel too; a click selects)
  Enter                   open the flow: Request, Response, Hooks, Diff
  f                       filter the list: ~m POST & ~u create, ~s 4.., ~b (?i)denied, ~e …
  i                       intercept: hold matching calls before the daemon (empty: off)
  a / A                   accept the held call / all held calls
  d                       drop the held call (its client gets a 403); a finished flow leaves the list
  e                       edit the held call in $EDITOR (JSON), then let it go on
  r                       replay the call through the gateway (every phase again)
  E                       export the call as the client sent it, as curl on the gateway's socket
  w                       record every call to a file (w again stops)
  z                       clear the list
  q                       back, or quit (intercept set here is turned off)
Detail
  Tab/Shift-Tab ←/→ 1-4   switch tabs; j/k PgUp/PgDn scroll; q or Esc back
Marks: H hooks ran  Δ hooks changed it  ! error  R replay  S stream or session";

fn popup(f: &mut Frame, title: &str, text: &str) {
    let area = f.area();
    let w = area.width.saturating_sub(4).min(110);
    // Lines as wrapped inside the borders.
    let inner = usize::from(w.saturating_sub(2)).max(1);
    let wrapped: usize = text
        .lines()
        .map(|l| l.chars().count().div_ceil(inner).max(1))
        .sum();
    let h = (wrapped as u16 + 2).min(area.height.saturating_sub(2));
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text.to_string())
            .wrap(Wrap { trim: false })
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(title.to_string()),
            ),
        r,
    );
}

fn draw_top(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::from(" luastrip console ").bold().reversed()];
    spans.push(Span::from(format!(" {} ", app.flows_from.describe())));
    if let Some(i) = &app.intercept {
        spans.push(Span::from(format!(" intercept: {i} ")).black().on_yellow());
    }
    if let Some((t, _)) = &app.filter {
        spans.push(Span::from(format!(" filter: {t} ")).black().on_cyan());
    }
    if !app.recording.is_empty() {
        spans.push(Span::from(" ● rec ").white().on_red());
    }
    if let Some(why) = &app.gone {
        spans.push(
            Span::from(format!(" gateway unreachable: {why} "))
                .white()
                .on_red(),
        );
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_line(f: &mut Frame, app: &App, area: Rect) {
    if let Some((ask, text)) = &app.prompt {
        let p = Line::from(vec![
            Span::from(format!("{}: ", ask.label())).bold(),
            Span::from(text.clone()),
            Span::from("█"),
        ]);
        f.render_widget(Paragraph::new(p), area);
        return;
    }
    let held = app.held.len();
    let mut text = match held {
        0 => String::new(),
        n => format!("{n} held (a accept, A accept all, d drop, e edit)  "),
    };
    match &app.message {
        Some((m, at)) if at.elapsed().as_secs() < 15 => text.push_str(m),
        _ if held > 0 => {}
        _ => text.push_str(&format!("{} flows", app.rows.len())),
    }
    let style = if held > 0 {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default()
    };
    f.render_widget(Paragraph::new(text).style(style), area);
}

fn marks(c: &CallRecord) -> String {
    let mut m = String::new();
    m.push(if c.hooks.is_empty() { ' ' } else { 'H' });
    m.push(if c.before.is_some() { 'Δ' } else { ' ' });
    m.push(if c.error.is_some() { '!' } else { ' ' });
    m.push(if c.replay_of.is_some() { 'R' } else { ' ' });
    m.push(if c.streaming || c.hijack != crate::hijack::Hijack::No {
        'S'
    } else {
        ' '
    });
    m
}

fn draw_list(f: &mut Frame, app: &mut App, area: Rect) {
    let narrow = area.width < NARROW;
    let height = area.height.saturating_sub(1) as usize;
    app.list_height = height;
    app.list_top = area.y + 1;
    // The window keeps the selection on screen, at the bottom while following.
    let first = app.selected.saturating_sub(height.saturating_sub(1));
    let rows: Vec<TableRow> = app
        .rows
        .iter()
        .enumerate()
        .skip(first)
        .take(height)
        .map(|(i, row)| {
            let cells: Vec<Cell> = match *row {
                Row::Call(n) => {
                    let c = &app.flows[n];
                    let status = c.status.map_or_else(
                        || {
                            if c.cancelled {
                                "gone".into()
                            } else {
                                "-".into()
                            }
                        },
                        |s| s.to_string(),
                    );
                    let colour = match c.status {
                        _ if c.error.is_some() => Color::Red,
                        Some(s) if s >= 500 => Color::Red,
                        Some(s) if s >= 400 => Color::Magenta,
                        _ => Color::Green,
                    };
                    let mut cells = vec![
                        Cell::from(c.method.clone()),
                        Cell::from(status).fg(colour),
                        Cell::from(short_ids(&c.raw)),
                    ];
                    if !narrow {
                        cells.insert(0, Cell::from(c.id.to_string()).dim());
                        cells.insert(3, Cell::from(duration(c.duration_us)));
                        cells.insert(4, Cell::from(marks(c)).fg(Color::Cyan));
                    }
                    cells
                }
                Row::Held(n) => {
                    let h = &app.held[n];
                    let mut cells = vec![
                        Cell::from(h["method"].as_str().unwrap_or("").to_string()),
                        Cell::from("HELD").black().on_yellow(),
                        Cell::from(short_ids(h["raw"].as_str().unwrap_or(""))),
                    ];
                    if !narrow {
                        cells.insert(0, Cell::from(h["id"].to_string()).dim());
                        cells.insert(3, Cell::from("waiting"));
                        cells.insert(4, Cell::from(""));
                    }
                    cells
                }
            };
            let style = if i == app.selected {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            TableRow::new(cells).style(style)
        })
        .collect();
    let (widths, header): (Vec<Constraint>, Vec<&str>) = if narrow {
        (
            vec![
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
            vec!["method", "code", "path"],
        )
    } else {
        (
            vec![
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(5),
                Constraint::Min(20),
            ],
            vec!["id", "method", "code", "time", "marks", "path"],
        )
    };
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).bold().underlined())
        .column_spacing(1);
    f.render_widget(table, area);
}

/// A path for the list: full 64-digit IDs shortened to 12 digits, as `docker ps` shows them,
/// so that what follows an ID (`/start`, `/attach`) stays in view. The detail view shows it all.
fn short_ids(raw: &str) -> String {
    let (path, query) = raw
        .split_once('?')
        .map_or((raw, None), |(p, q)| (p, Some(q)));
    let mut out: String = path
        .split('/')
        .map(|seg| {
            if seg.len() == 64 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                &seg[..12]
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn duration(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else {
        format!("{:.1}ms", us as f64 / 1000.0)
    }
}

fn draw_detail(
    f: &mut Frame,
    app: &App,
    area: Rect,
    id: u64,
    held: bool,
    tab: Tab,
    scroll: u16,
) -> u16 {
    let [tabs_area, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let titles: Vec<String> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {}", i + 1, t.title()))
        .collect();
    f.render_widget(
        Tabs::new(titles)
            .select(tab.index())
            .highlight_style(Style::default().bold().reversed()),
        tabs_area,
    );
    let text = if held {
        match app.held_call(id) {
            Some(h) => held_text(h, tab),
            None => Text::from(format!("call {id} is no longer held; q goes back")),
        }
    } else {
        match app.flow(id) {
            Some(c) => flow_text(c, tab),
            None => Text::from(format!("call {id} is not in the list")),
        }
    };
    // Scrolling stops where the last line reaches the bottom (wrapping aside).
    let last = (text.lines.len() as u16).saturating_sub(body.height.saturating_sub(1));
    let scroll = scroll.min(last);
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(Block::default().borders(Borders::TOP)),
        body,
    );
    scroll
}

fn heads<'a>(pairs: impl Iterator<Item = (String, String)>) -> Vec<Line<'a>> {
    pairs
        .map(|(k, v)| Line::from(vec![Span::from(format!("{k}: ")).bold(), Span::from(v)]))
        .collect()
}

fn body_lines<'a>(body: Option<&str>, what: &str) -> Vec<Line<'a>> {
    match body {
        Some(b) if !b.trim().is_empty() => {
            let pretty = match serde_json::from_str::<Value>(b) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| b.to_string()),
                Err(_) => b.to_string(),
            };
            pretty.lines().map(|l| Line::from(l.to_string())).collect()
        }
        Some(_) => vec![Line::from("(empty body)").dim()],
        None => vec![Line::from(format!(
            "({what} not kept: only bodies a hook read are journaled)"
        ))
        .dim()],
    }
}

fn header_pairs(h: &http::HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    h.iter().map(|(k, v)| {
        (
            k.to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    })
}

fn flow_text(c: &CallRecord, tab: Tab) -> Text<'static> {
    let mut lines: Vec<Line> = Vec::new();
    match tab {
        Tab::Request => {
            lines.push(Line::from(format!("{} {}", c.method, c.raw)).bold());
            if let Some(b) = &c.before {
                if b.method.is_some() || b.raw.is_some() {
                    lines.push(
                        Line::from(format!(
                            "as sent by the client: {} {}",
                            b.method.as_deref().unwrap_or(&c.method),
                            b.raw.as_deref().unwrap_or(&c.raw)
                        ))
                        .dim(),
                    );
                }
            }
            lines.extend(heads(header_pairs(&c.request_headers)));
            lines.push(Line::from(""));
            lines.extend(body_lines(c.request_body.as_deref(), "the body"));
        }
        Tab::Response => {
            let status = match c.status {
                Some(s) => http::StatusCode::from_u16(s).map_or(s.to_string(), |st| st.to_string()),
                None if c.cancelled => "cancelled: the client went away".into(),
                None => "no answer".into(),
            };
            lines.push(Line::from(status).bold());
            lines.push(
                Line::from(format!(
                    "{} in all{}{}",
                    duration(c.duration_us),
                    c.upstream_us
                        .map(|u| format!(", the daemon {}", duration(u)))
                        .unwrap_or_else(|| ", the daemon was not asked".into()),
                    if c.streaming { ", streamed" } else { "" }
                ))
                .dim(),
            );
            if let Some(b) = c.stream_bytes {
                lines.push(
                    Line::from(format!(
                        "the stream carried {} bytes to the client, {} to the daemon",
                        b.daemon_to_client, b.client_to_daemon
                    ))
                    .dim(),
                );
            }
            if let Some(e) = &c.error {
                lines.push(Line::from(format!("error ({}): {}", e.source, e.message)).red());
            }
            lines.extend(heads(header_pairs(&c.response_headers)));
            lines.push(Line::from(""));
            let what = if c.streaming { "a stream" } else { "the body" };
            lines.extend(body_lines(c.response_body.as_deref(), what));
        }
        Tab::Hooks => {
            if c.hooks.is_empty() {
                lines.push(Line::from("no hook ran on this call").dim());
            }
            for h in &c.hooks {
                lines.push(Line::from(vec![
                    Span::from(format!("{:8} ", h.phase)).bold(),
                    Span::from(format!("{:32} ", h.route)),
                    Span::from(h.location.clone()).cyan(),
                    Span::from(format!("  {}", duration(h.duration_us))),
                ]));
                if let Some(e) = &h.error {
                    lines.push(Line::from(format!("         ! {e}")).red());
                }
            }
        }
        Tab::Diff => {
            let all = changes(c);
            if all.is_empty() {
                lines.push(Line::from("the hooks changed nothing").dim());
            }
            let mut side = None;
            for ch in all {
                if side != Some(ch.side) {
                    side = Some(ch.side);
                    lines.push(
                        Line::from(match ch.side {
                            Side::Request => "request (client → daemon)",
                            Side::Response => "response (daemon → client)",
                        })
                        .bold(),
                    );
                }
                let colour = match (&ch.before, &ch.after) {
                    (None, _) => Color::Green,
                    (_, None) => Color::Red,
                    _ => Color::Yellow,
                };
                lines.push(Line::from(format!("  {ch}")).fg(colour));
            }
        }
    }
    Text::from(lines)
}

fn held_text(h: &Value, tab: Tab) -> Text<'static> {
    let mut lines: Vec<Line> = Vec::new();
    match tab {
        Tab::Request => {
            lines.push(
                Line::from(format!(
                    "{} {}   (held: a accept, d drop, e edit)",
                    h["method"].as_str().unwrap_or(""),
                    h["raw"].as_str().unwrap_or("")
                ))
                .bold(),
            );
            let pairs = h["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()));
            lines.extend(heads(pairs));
            lines.push(Line::from(""));
            lines.extend(body_lines(h["body"].as_str(), "the body (a stream)"));
        }
        _ => lines.push(Line::from("held: the daemon has not seen this call yet").dim()),
    }
    Text::from(lines)
}

/// A shell word in single quotes.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `rec` as the client sent it, as a `curl` command on the gateway's socket `listen`.
pub fn curl(rec: &CallRecord, listen: &Path) -> String {
    let crate::journal::Sent {
        method,
        raw,
        headers,
        body,
    } = rec.as_sent();
    let mut cmd = format!(
        "curl -sS --unix-socket {} -X {method} {}",
        quote(&listen.display().to_string()),
        quote(&format!("http://docker{raw}"))
    );
    for (k, v) in header_pairs(&headers) {
        if matches!(
            k.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        cmd.push_str(&format!(" -H {}", quote(&format!("{k}: {v}"))));
    }
    match body {
        Some(b) if !b.is_empty() => cmd.push_str(&format!(" --data-binary {}", quote(&b))),
        Some(_) => {}
        None if matches!(rec.method.as_str(), "POST" | "PUT") => {
            cmd.push_str(" # the body was not journaled (no hook read it)")
        }
        None => {}
    }
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_shows_short_ids() {
        let id = "7120ed861533e49839e2c91ee395f204f7d4c728b9d07a88575a9001e394a626";
        assert_eq!(
            super::short_ids(&format!("/v1.41/containers/{id}/attach?stream=1")),
            "/v1.41/containers/7120ed861533/attach?stream=1"
        );
        // Only whole 64-digit hex segments; names and queries are kept as they are.
        let name = "x".repeat(64);
        assert_eq!(
            super::short_ids(&format!("/containers/{name}/json?id={id}")),
            format!("/containers/{name}/json?id={id}")
        );
    }

    use super::*;

    #[test]
    fn the_readme_shows_the_help_screen_as_it_is() {
        let readme = include_str!("../../docs/control.md");
        assert!(
            readme.contains(HELP),
            "docs/control.md's console keys differ from HELP"
        );
    }

    #[test]
    fn curl_sends_what_the_client_sent() {
        let mut rec = CallRecord::unfinished(
            7,
            "POST",
            "/containers/create",
            "/v1.41/containers/create?name=it's",
        );
        rec.request_body = Some(r#"{"Image":"b","Labels":{"x":"y"}}"#.into());
        rec.request_headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        rec.request_headers
            .insert("content-length", http::HeaderValue::from_static("33"));
        rec.before = Some(Box::new(crate::journal::Before {
            request_body: Some(r#"{"Image":"b"}"#.into()),
            ..Default::default()
        }));
        let cmd = curl(&rec, Path::new("/run/luastrip.sock"));
        assert_eq!(
            cmd,
            "curl -sS --unix-socket '/run/luastrip.sock' -X POST \
             'http://docker/v1.41/containers/create?name=it'\\''s' \
             -H 'content-type: application/json' --data-binary '{\"Image\":\"b\"}'"
        );
    }
}
