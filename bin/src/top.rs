//! `switchboard top`: a live view of a server on its admin socket, drawn with ratatui.
//!
//! Each refresh asks `info --json` and `sessions --json --limit 500` (the busiest by bytes);
//! rates are the differences between two refreshes. [`draw`] is a pure function of a [`View`],
//! tested against ratatui's `TestBackend`; the terminal is set up and restored by a guard, so
//! quitting, Ctrl-C (a key in raw mode) and a lost admin connection all leave it as it was.

use std::{
    collections::HashMap,
    io::Stdout,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute,
    terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Gauge, Paragraph, Row, Table},
    Frame,
};
use serde_json::Value;

use crate::{
    cli::TopArgs,
    ops::{AdminAddr, AdminClient},
};

/// Sessions asked for at each refresh.
const SESSIONS_ASKED: usize = 500;
/// Refreshes before `top` ends by itself (a bound: a year at one per second).
const MAX_REFRESHES: u64 = 366 * 24 * 3600;

/// How the session table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    Rate,
    Total,
    Age,
}

impl SortKey {
    fn next(self) -> SortKey {
        match self {
            SortKey::Rate => SortKey::Total,
            SortKey::Total => SortKey::Age,
            SortKey::Age => SortKey::Rate,
        }
    }
    fn name(self) -> &'static str {
        match self {
            SortKey::Rate => "bytes/s",
            SortKey::Total => "bytes",
            SortKey::Age => "age",
        }
    }
}

/// One session's line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRow {
    pub(crate) id: u64,
    pub(crate) peer: String,
    pub(crate) worker: Option<u64>,
    pub(crate) rate_in: f64,
    pub(crate) rate_out: f64,
    pub(crate) bytes: u64,
    pub(crate) age_s: f64,
    pub(crate) state: String,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    pub(crate) admin: String,
    pub(crate) version: String,
    pub(crate) uptime_s: u64,
    pub(crate) accepting: bool,
    pub(crate) live: u64,
    pub(crate) accepted: u64,
    pub(crate) accepts_per_s: f64,
    pub(crate) in_per_s: f64,
    pub(crate) out_per_s: f64,
    pub(crate) drops_per_s: f64,
    pub(crate) workers: Vec<u64>,
    pub(crate) sessions: Vec<SessionRow>,
    pub(crate) sort: SortKey,
    pub(crate) selected: usize,
    pub(crate) message: String,
}

fn human(rate: f64) -> String {
    match rate {
        r if r >= 1e9 => format!("{:.1}G", r / 1e9),
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// Draws `view` into the frame; any size works (parts that do not fit are left out).
pub(crate) fn draw(frame: &mut Frame<'_>, view: &View) {
    let area = frame.area();
    let worker_rows = u16::try_from(view.workers.len().min(4)).unwrap_or(4);
    let [header, workers, table, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(worker_rows),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let state = if view.accepting {
        "accepting"
    } else {
        "PAUSED"
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "switchboard top  {}  v{}  up {}s  {state}",
                view.admin, view.version, view.uptime_s
            )),
            Line::from(format!(
                "live {}  accepted {}  accepts/s {}  in {}B/s  out {}B/s  drops/s {}",
                view.live,
                view.accepted,
                human(view.accepts_per_s),
                human(view.in_per_s),
                human(view.out_per_s),
                human(view.drops_per_s),
            )),
        ]),
        header,
    );
    let busiest = view.workers.iter().copied().max().unwrap_or(0).max(1);
    for (index, load) in view.workers.iter().take(4).enumerate() {
        let row = Rect {
            y: workers.y + u16::try_from(index).unwrap_or(0),
            height: 1,
            ..workers
        };
        if row.y >= workers.y + workers.height {
            break;
        }
        let ratio = (*load as f64 / busiest as f64).clamp(0.0, 1.0);
        frame.render_widget(
            Gauge::default()
                .label(format!("worker {index}: {load} sessions"))
                .ratio(ratio),
            row,
        );
    }
    let rows = view.sessions.iter().map(|s| {
        Row::new(vec![
            format!("#{}", s.id),
            s.peer.clone(),
            s.worker.map_or("-".into(), |w| w.to_string()),
            human(s.rate_in),
            human(s.rate_out),
            human(s.bytes as f64),
            format!("{:.0}s", s.age_s),
            s.state.clone(),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(21),
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Min(6),
    ];
    let mut state_of_table = ratatui::widgets::TableState::default();
    if !view.sessions.is_empty() {
        state_of_table.select(Some(view.selected.min(view.sessions.len() - 1)));
    }
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(
                Row::new(vec![
                    "ID", "PEER", "W", "IN/s", "OUT/s", "BYTES", "AGE", "STATE",
                ])
                .style(Style::default().add_modifier(Modifier::BOLD)),
            )
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .block(Block::default().borders(Borders::TOP).title(format!(
                " sessions by {} ({} shown) ",
                view.sort.name(),
                view.sessions.len()
            ))),
        table,
        &mut state_of_table,
    );
    let help = format!(
        "s sort  ↑↓ select  k kick  p pause/resume  q quit  {}",
        view.message
    );
    frame.render_widget(Paragraph::new(help), footer);
}

/// What one refresh read, to take differences from.
struct Sample {
    at: Instant,
    accepted: u64,
    bytes_in: u64,
    bytes_out: u64,
    dropped: u64,
    per_session: HashMap<u64, (u64, u64)>,
}

/// Asks the server and builds the next view from it and the previous sample.
fn refresh(
    client: &mut AdminClient,
    previous: Option<&Sample>,
    view: &mut View,
) -> anyhow::Result<Sample> {
    let info: Value = serde_json::from_str(&one(client.call("info --json")?)?)?;
    let listing: Value = serde_json::from_str(&one(
        client.call(&format!("sessions --json --limit {SESSIONS_ASKED}"))?
    )?)?;
    let now = Instant::now();
    let listener = &info["listeners"][0];
    let totals = &info["totals"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let sample = Sample {
        at: now,
        accepted: n(&listener["accepted"]),
        bytes_in: n(&totals["bytes_in"]),
        bytes_out: n(&totals["bytes_out"]),
        dropped: n(&totals["broadcasts_dropped"]),
        per_session: listing["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (n(&s["id"]), (n(&s["bytes_in"]), n(&s["bytes_out"]))))
            .collect(),
    };
    let rate = |now: u64, before: Option<u64>, secs: f64| match before {
        Some(before) if secs > 0.0 => now.saturating_sub(before) as f64 / secs,
        _ => 0.0,
    };
    let secs = previous.map_or(0.0, |p| now.duration_since(p.at).as_secs_f64());
    view.version = info["version"].as_str().unwrap_or("?").to_string();
    view.uptime_s = n(&info["uptime_s"]);
    view.accepting = listener["accepting"].as_bool().unwrap_or(true);
    view.live = n(&totals["live"]);
    view.accepted = sample.accepted;
    view.accepts_per_s = rate(sample.accepted, previous.map(|p| p.accepted), secs);
    view.in_per_s = rate(sample.bytes_in, previous.map(|p| p.bytes_in), secs);
    view.out_per_s = rate(sample.bytes_out, previous.map(|p| p.bytes_out), secs);
    view.drops_per_s = rate(sample.dropped, previous.map(|p| p.dropped), secs);
    view.workers = info["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(n)
        .collect();
    let before = |id: u64| previous.and_then(|p| p.per_session.get(&id).copied());
    view.sessions = listing["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let id = n(&s["id"]);
            let (bytes_in, bytes_out) = (n(&s["bytes_in"]), n(&s["bytes_out"]));
            SessionRow {
                id,
                peer: s["peer"].as_str().unwrap_or("?").to_string(),
                worker: s["worker"].as_u64(),
                rate_in: rate(bytes_in, before(id).map(|b| b.0), secs),
                rate_out: rate(bytes_out, before(id).map(|b| b.1), secs),
                bytes: bytes_in + bytes_out,
                age_s: s["age_s"].as_f64().unwrap_or(0.0),
                state: s["state"].as_str().unwrap_or("?").to_string(),
            }
        })
        .collect();
    sort(view);
    Ok(sample)
}

fn sort(view: &mut View) {
    let key = view.sort;
    view.sessions.sort_by(|a, b| match key {
        SortKey::Rate => (b.rate_in + b.rate_out).total_cmp(&(a.rate_in + a.rate_out)),
        SortKey::Total => b.bytes.cmp(&a.bytes),
        SortKey::Age => b.age_s.total_cmp(&a.age_s),
    });
}

fn one(reply: Vec<String>) -> anyhow::Result<String> {
    let line = reply.into_iter().next().unwrap_or_default();
    if let Some(error) = line.strip_prefix("error: ") {
        anyhow::bail!("the server said: {error}");
    }
    Ok(line)
}

/// Puts the terminal back however `top` ends.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<(
        TerminalGuard,
        ratatui::Terminal<ratatui::backend::CrosstermBackend<Stdout>>,
    )> {
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        let guard = TerminalGuard;
        execute!(std::io::stdout(), EnterAlternateScreen).context("cannot use the terminal")?;
        let terminal =
            ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }
}

pub(crate) fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let addr = AdminAddr::parse(&args.admin);
    let mut client = AdminClient::connect(&addr, Duration::from_secs(10))?;
    let mut view = View {
        admin: addr.to_string(),
        version: String::new(),
        uptime_s: 0,
        accepting: true,
        live: 0,
        accepted: 0,
        accepts_per_s: 0.0,
        in_per_s: 0.0,
        out_per_s: 0.0,
        drops_per_s: 0.0,
        workers: Vec::new(),
        sessions: Vec::new(),
        sort: SortKey::Rate,
        selected: 0,
        message: String::new(),
    };
    let mut sample = refresh(&mut client, None, &mut view)?;
    let (guard, mut terminal) = TerminalGuard::enter()?;
    let interval = args.interval.max(Duration::from_millis(100));
    let mut next = Instant::now();
    for _ in 0..MAX_REFRESHES {
        terminal.draw(|frame| draw(frame, &view))?;
        next += interval;
        // Keys until the next refresh; each wait is bounded by the time left.
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            let ctrl_c =
                key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => {
                    drop(guard);
                    return Ok(ExitCode::SUCCESS);
                }
                _ if ctrl_c => {
                    drop(guard);
                    return Ok(ExitCode::from(130));
                }
                KeyCode::Char('s') => {
                    view.sort = view.sort.next();
                    sort(&mut view);
                }
                KeyCode::Up => view.selected = view.selected.saturating_sub(1),
                KeyCode::Down => {
                    view.selected = (view.selected + 1).min(view.sessions.len().saturating_sub(1))
                }
                KeyCode::Char('k') => {
                    if let Some(s) = view.sessions.get(view.selected) {
                        let reply = client.call(&format!("kick {}", s.id))?;
                        view.message = reply.join(" ");
                    }
                }
                KeyCode::Char('p') => {
                    let command = if view.accepting { "pause" } else { "resume" };
                    view.message = client.call(command)?.join(" ");
                    view.accepting = !view.accepting;
                }
                _ => {}
            }
            terminal.draw(|frame| draw(frame, &view))?;
        }
        sample = refresh(&mut client, Some(&sample), &mut view)?;
    }
    drop(guard);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{backend::TestBackend, Terminal};

    fn known() -> View {
        View {
            admin: "tcp:127.0.0.1:9000".into(),
            version: "0.1.0".into(),
            uptime_s: 42,
            accepting: true,
            live: 2,
            accepted: 7,
            accepts_per_s: 3.0,
            in_per_s: 1500.0,
            out_per_s: 2_500_000.0,
            drops_per_s: 0.0,
            workers: vec![2, 0],
            sessions: vec![
                SessionRow {
                    id: 5,
                    peer: "127.0.0.1:50000".into(),
                    worker: Some(0),
                    rate_in: 1000.0,
                    rate_out: 2_000_000.0,
                    bytes: 9_000_000,
                    age_s: 12.0,
                    state: "connected".into(),
                },
                SessionRow {
                    id: 6,
                    peer: "127.0.0.1:50001".into(),
                    worker: Some(0),
                    rate_in: 500.0,
                    rate_out: 0.0,
                    bytes: 100,
                    age_s: 3.0,
                    state: "paused".into(),
                },
            ],
            sort: SortKey::Rate,
            selected: 0,
            message: String::new(),
        }
    }

    fn render(view: &View, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, view)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn an_80_by_24_frame_shows_totals_workers_and_sessions() {
        let lines = render(&known(), 80, 24);
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("switchboard top  tcp:127.0.0.1:9000  v0.1.0  up 42s  accepting"),
            "{text}"
        );
        assert!(
            lines[1].contains("accepts/s 3  in 1.5kB/s  out 2.5MB/s  drops/s 0"),
            "{text}"
        );
        assert!(lines[2].contains("worker 0: 2 sessions"), "{text}");
        assert!(lines[3].contains("worker 1: 0 sessions"), "{text}");
        assert!(lines[4].contains("sessions by bytes/s (2 shown)"), "{text}");
        assert!(lines[5].starts_with("ID"), "{text}");
        assert!(
            lines[6].starts_with("#5")
                && lines[6].contains("2.0M")
                && lines[6].contains("connected"),
            "{text}"
        );
        assert!(
            lines[7].starts_with("#6") && lines[7].contains("paused"),
            "{text}"
        );
        assert!(lines[23].starts_with("s sort"), "{text}");
    }

    #[test]
    fn a_paused_server_and_a_new_sort_show_in_the_frame() {
        let mut view = known();
        view.accepting = false;
        view.sort = SortKey::Age;
        sort(&mut view);
        let lines = render(&view, 80, 24);
        assert!(lines[0].ends_with("PAUSED") || lines[0].contains("PAUSED"));
        assert!(lines[4].contains("sessions by age"));
        assert!(lines[6].starts_with("#5"));
    }

    #[test]
    fn small_terminals_degrade_without_a_panic() {
        for (w, h) in [(40, 10), (20, 5), (10, 2), (1, 1), (0, 0)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|frame| draw(frame, &known())).unwrap();
        }
    }
}
