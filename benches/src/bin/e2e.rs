//! The end-to-end measurement runner: every scenario, Switchboard against the plain-tokio
//! baseline, alternating A B A B in the same run, medians of the rounds, ratios.
//!
//! It builds nothing. First:
//!
//! ```text
//! cargo build --release -p switchboard-cli -p switchboard-benches
//! target/release/e2e [--quick] [--rounds 3] [--duration 5] [--only throughput,latency,...]
//!                    [--out target/e2e/results.json] [--file-mib 1024] [--workers N]
//!                    [--spin-us 200]
//! ```
//!
//! `--workers N` starts every echo server (both sides) with N worker threads instead of one per
//! core. `--spin-us N` is the window of the latency-mode row (`switchboard serve --spin-us`);
//! 0 leaves that row out.
//!
//! Scenarios (names for `--only`): `throughput`, `workers` (throughput with 1 and with 2
//! workers on both servers, side by side), `crosscheck` (throughput again with
//! `switchboard load` as the client), `latency` (also Switchboard in latency mode against
//! the plain baseline, with the server CPU it costs), `bandwidth` (then again with both servers'
//! receive buffers fixed, `--recv-buffer`), `accept`, `memory`, `scale`,
//! `registry`, `file`, `tls` (against a plain tokio-rustls echo, `baseline_tls_echo`), `unix`
//! (Switchboard over a Unix socket against itself over TCP loopback), and, only when named,
//! `ops` (the cost of metrics, logging and the admin socket: all on against all off) and
//! `ops-listing` (its listing half alone), and `instructions` (the throughput load with both
//! servers under valgrind's callgrind: user-space instructions per turn, a count that machine
//! noise barely moves; needs `valgrind`). `--sb-server library` runs the Switchboard side as `scale_server` (the
//! library, same raw echo) when the `switchboard` binary is not built. Loopback only. Every child it starts is killed by its own PID when the runner is done
//! with it (or unwinds). The table goes to stdout, everything measured to the JSON file.
//!
//! Beside each ratio the table gives its interval: the order statistics of the per-round
//! ratios that cover their median with 95% (the whole range, and the coverage it has, when the
//! rounds are too few: five give 93.75%). A verdict whose interval covers the target, or covers
//! the median with less than 90%, is marked "not resolved": more rounds could turn it.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::{json, Value};
use switchboard::{Registry, SlowConsumerPolicy};
use switchboard_benches::{
    median, median_interval, open_fds, parse_seconds, raise_nofile, rss_kib, Args,
};

/// A child process, killed (by its PID) and reaped when dropped.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(command: &mut Command) -> Proc {
        let mut child = die_with_parent(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read child stdout");
        line.trim().to_string()
    }

    fn json(&mut self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes the child's stdin (hold_clients and scale_server exit on it) and waits up to
    /// `wait` for it to exit.
    fn close_stdin(&mut self, wait: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the child get SIGKILL if this runner dies first (killed, or a panic that aborts), so no
/// server or client outlives a run.
fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Switchboard,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Switchboard => "switchboard",
        }
    }
}

/// A running echo server.
struct Server {
    proc: Proc,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

struct Opts {
    quick: bool,
    rounds: usize,
    duration: f64,
    warmup: f64,
    bin_dir: PathBuf,
    switchboard: PathBuf,
    out: PathBuf,
    only: Option<Vec<String>>,
    file_mib: u64,
    threads: usize,
    /// Worker threads for every echo server, both sides (default: their own, one per core).
    workers: Option<usize>,
    /// Latency-mode window for the latency scenario's extra row; 0: no such row.
    spin_us: u64,
    /// Run the Switchboard side as `scale_server` (the library with the same raw echo handler
    /// and default session config) instead of `switchboard serve`.
    library_server: bool,
}

impl Opts {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Whether `--only` names `scenario` (for those not in the default set).
    fn named(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_some_and(|only| only.iter().any(|s| s == scenario))
    }

    fn wants(&self, scenario: &str) -> bool {
        match &self.only {
            Some(only) => only.iter().any(|s| s == scenario),
            None => true,
        }
    }
}

/// Whether a smaller or a larger Switchboard/baseline ratio is better.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// An absolute bound on the Switchboard figure.
    AbsAtMost(f64),
    AbsAtLeast(f64),
    None,
}

struct Row {
    scenario: &'static str,
    metric: String,
    unit: &'static str,
    switchboard: f64,
    baseline: Option<f64>,
    ratio: Option<f64>,
    /// The per-round ratios' median interval at 95% (or the whole range when the rounds are too
    /// few for that): `(low, high, coverage)`.
    interval: Option<(f64, f64, f64)>,
    goal: Goal,
    command: String,
}

impl Row {
    fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::AtLeast(t) => self.ratio.map(|r| r >= t),
            Goal::AtMost(t) => self.ratio.map(|r| r <= t),
            Goal::AbsAtMost(t) => Some(self.switchboard <= t),
            Goal::AbsAtLeast(t) => Some(self.switchboard >= t),
            Goal::None => None,
        }
    }

    /// Whether the rounds settle the verdict: the ratio's interval covers the median with at
    /// least 90% (five rounds or more) and lies wholly on the met side of the target (the
    /// target itself counting as met, as in [`met`](Self::met)) or wholly on the missed side.
    /// `None` for rows without a ratio target or an interval.
    fn resolved(&self) -> Option<bool> {
        let (low, high, coverage) = self.interval?;
        let one_side = match self.goal {
            Goal::AtLeast(t) => low >= t || high < t,
            Goal::AtMost(t) => high <= t || low > t,
            _ => return None,
        };
        Some(coverage >= 0.9 && one_side)
    }

    fn target(&self) -> String {
        match self.goal {
            Goal::AtLeast(t) => format!("≥ {t:.2}×"),
            Goal::AtMost(t) => format!("≤ {t:.2}×"),
            Goal::AbsAtMost(t) => format!("≤ {t} {}", self.unit),
            Goal::AbsAtLeast(t) => format!("≥ {t} {}", self.unit),
            Goal::None => "—".to_string(),
        }
    }
}

struct Report {
    rows: Vec<Row>,
    raw: serde_json::Map<String, Value>,
}

impl Report {
    /// Adds a row from paired rounds: medians of each side, median of the per-round ratios.
    #[allow(clippy::too_many_arguments)]
    fn paired(
        &mut self,
        scenario: &'static str,
        metric: &str,
        unit: &'static str,
        sb: &[f64],
        base: &[f64],
        goal: Goal,
        command: &str,
    ) {
        let ratios: Vec<f64> = sb.iter().zip(base).map(|(s, b)| s / b).collect();
        self.rows.push(Row {
            scenario,
            metric: metric.to_string(),
            unit,
            switchboard: median(sb),
            baseline: Some(median(base)),
            ratio: Some(median(&ratios)),
            interval: median_interval(&ratios, 0.95),
            goal,
            command: command.to_string(),
        });
    }

    fn single(
        &mut self,
        scenario: &'static str,
        metric: &str,
        unit: &'static str,
        value: f64,
        goal: Goal,
        command: &str,
    ) {
        self.rows.push(Row {
            scenario,
            metric: metric.to_string(),
            unit,
            switchboard: value,
            baseline: None,
            ratio: None,
            interval: None,
            goal,
            command: command.to_string(),
        });
    }
}

/// Scenario names `--only` takes.
const SCENARIOS: &[&str] = &[
    "throughput",
    "workers",
    "crosscheck",
    "latency",
    "bandwidth",
    "accept",
    "memory",
    "scale",
    "registry",
    "file",
    "tls",
    "unix",
    "ops",
    "ops-listing",
    "instructions",
];

const USAGE: &str = "\
usage: e2e [--quick] [--rounds N] [--duration SECS] [--only SCENARIO,...] [--out FILE]
           [--file-mib N] [--workers N] [--spin-us N] [--threads N]
           [--switchboard PATH] [--bin-dir DIR] [--sb-server library]

Switchboard against the plain-tokio baseline, A B A B, medians of the rounds. Build first:
cargo build --release -p switchboard-cli -p switchboard-benches
Without --only every scenario runs but ops, ops-listing and instructions. Scenarios:";

fn main() {
    let args = Args::from_env();
    let usage = format!("{USAGE} {}", SCENARIOS.join(", "));
    args.check(
        &usage,
        &["--quick"],
        &[
            "--rounds",
            "--duration",
            "--only",
            "--out",
            "--file-mib",
            "--workers",
            "--spin-us",
            "--threads",
            "--switchboard",
            "--bin-dir",
            "--sb-server",
        ],
    );
    if let Some(only) = args.value("--only") {
        if let Some(unknown) = only.split(',').find(|s| !SCENARIOS.contains(s)) {
            eprintln!("unknown scenario `{unknown}`\n\n{usage}");
            std::process::exit(2);
        }
    }
    let quick = args.flag("--quick");
    let exe = std::env::current_exe().expect("current exe");
    let bin_dir = args
        .value("--bin-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.parent().expect("exe dir").to_path_buf());
    let opts = Opts {
        quick,
        rounds: args.get("--rounds", if quick { 1 } else { 3 }),
        duration: parse_seconds(
            args.value("--duration")
                .unwrap_or(if quick { "1" } else { "5" }),
        )
        .expect("--duration")
        .as_secs_f64(),
        warmup: if quick { 0.2 } else { 1.0 },
        switchboard: args
            .value("--switchboard")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_dir.join("switchboard")),
        out: args
            .value("--out")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/e2e/results.json")),
        only: args
            .value("--only")
            .map(|s| s.split(',').map(String::from).collect()),
        file_mib: args.get("--file-mib", if quick { 64 } else { 1024 }),
        threads: args.get("--threads", 1),
        workers: args
            .value("--workers")
            .map(|n| n.parse().expect("--workers N")),
        spin_us: args.get("--spin-us", 200),
        library_server: args.value("--sb-server") == Some("library"),
        bin_dir,
    };
    raise_nofile().expect("raise descriptor limit");
    for needed in [
        "baseline_echo",
        "load_client",
        "accept_rate",
        "hold_clients",
        "scale_server",
        "baseline_tls_echo",
        "tls_client",
    ] {
        assert!(
            opts.bin(needed).exists(),
            "{} missing: run `cargo build --release -p switchboard-cli -p switchboard-benches` first",
            opts.bin(needed).display()
        );
    }
    assert!(
        opts.library_server || opts.switchboard.exists(),
        "{} missing: run `cargo build --release -p switchboard-cli` first (or pass --sb-server library)",
        opts.switchboard.display()
    );

    let started = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        raw: serde_json::Map::new(),
    };
    eprintln!(
        "e2e: {} round(s), {} s per run, {} s warm-up{}",
        opts.rounds,
        opts.duration,
        opts.warmup,
        if quick { " (quick)" } else { "" }
    );
    if opts.named("instructions") {
        require_callgrind();
    }
    if opts.wants("throughput") {
        throughput(&opts, &mut report);
    }
    if opts.wants("workers") {
        workers(&opts, &mut report);
    }
    if opts.wants("crosscheck") && opts.switchboard.exists() {
        crosscheck(&opts, &mut report);
    }
    if opts.wants("latency") {
        latency(&opts, &mut report);
    }
    if opts.wants("bandwidth") {
        bandwidth(&opts, &mut report);
    }
    if opts.wants("accept") {
        accept(&opts, &mut report);
    }
    if opts.wants("memory") {
        memory(&opts, &mut report);
    }
    if opts.wants("scale") {
        scale(&opts, &mut report);
    }
    if opts.wants("registry") {
        registry(&opts, &mut report);
    }
    if opts.wants("file") && opts.switchboard.exists() {
        file(&opts, &mut report);
    }
    if opts.wants("tls") && opts.switchboard.exists() {
        tls(&opts, &mut report);
    }
    if opts.wants("unix") && opts.switchboard.exists() {
        unix(&opts, &mut report);
    }
    if opts.named("instructions") {
        instructions(&opts, &mut report);
    }
    if opts.named("ops") && opts.switchboard.exists() {
        ops(&opts, &mut report);
    } else if opts.named("ops-listing") && opts.switchboard.exists() {
        let dir = ScratchDir::new("e2e-ops");
        let listing = ops_listing(&opts, &mut report, dir.join("admin.sock"));
        report
            .raw
            .insert("ops".into(), json!({ "listing": listing }));
    }

    let table = table(&report.rows);
    println!("{table}");
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario, "metric": r.metric, "unit": r.unit,
                "switchboard": r.switchboard, "baseline": r.baseline, "ratio": r.ratio,
                "ratio_interval": r.interval.map(|(low, high, _)| [low, high]),
                "interval_coverage": r.interval.map(|(_, _, coverage)| coverage),
                "target": r.target(), "met": r.met(), "resolved": r.resolved(),
                "command": r.command,
            })
        })
        .collect();
    let doc = json!({
        "rounds": opts.rounds,
        "duration_s": opts.duration,
        "quick": opts.quick,
        "workers": opts.workers,
        "spin_us": opts.spin_us,
        "switchboard_server": if opts.library_server { "scale_server (library)" } else { "switchboard serve --mode echo --codec raw" },
        "elapsed_s": started.elapsed().as_secs_f64(),
        "rows": rows,
        "raw": report.raw,
    });
    if let Some(dir) = opts.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&doc).expect("json"))
        .expect("write results");
    eprintln!(
        "e2e: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        opts.out.display()
    );
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | metric | Switchboard | baseline | ratio | ratio's interval | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let num = |v: f64| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else if v.abs() >= 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.3}")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {}{} |",
            r.scenario,
            r.metric,
            r.unit,
            num(r.switchboard),
            r.baseline.map_or("—".to_string(), num),
            r.ratio.map_or("—".to_string(), |x| format!("{x:.3}×")),
            r.interval
                .map_or("—".to_string(), |(low, high, coverage)| format!(
                    "{low:.3}–{high:.3} ({:.0}%)",
                    coverage * 100.0
                )),
            r.target(),
            match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            },
            // A verdict the interval straddles is the median's only: more rounds could turn it.
            if r.resolved() == Some(false) {
                ", not resolved"
            } else {
                ""
            }
        );
    }
    out
}

fn start_server(opts: &Opts, side: Side, extra: &[&str]) -> Server {
    start_server_with(opts, side, extra, "warn")
}

/// [`start_server`] with `switchboard serve` logging at `log` (`RUST_LOG`); its stderr, where
/// the log goes, is /dev/null either way.
fn start_server_with(opts: &Opts, side: Side, extra: &[&str], log: &str) -> Server {
    let mut command = server_command(opts, side, extra, log);
    let mut proc = Proc::spawn(&mut command);
    let addr = listening(&mut proc);
    Server { proc, addr }
}

/// The command [`start_server_with`] runs.
fn server_command(opts: &Opts, side: Side, extra: &[&str], log: &str) -> Command {
    let mut command = match side {
        Side::Baseline => Command::new(opts.bin("baseline_echo")),
        Side::Switchboard if opts.library_server => {
            let mut c = Command::new(opts.bin("scale_server"));
            c.args(["--idle-timeout", "120"]);
            c
        }
        Side::Switchboard => {
            let mut c = Command::new(&opts.switchboard);
            c.args(["serve", "--mode", "echo", "--codec", "raw", "--port", "0"]);
            // Logs at warn by default: the per-connection info lines would measure the terminal.
            c.env("RUST_LOG", log);
            c
        }
    };
    command.args(extra).stderr(Stdio::null());
    if let Some(workers) = opts.workers.filter(|_| !extra.contains(&"--workers")) {
        command.args(["--workers", &workers.to_string()]);
    }
    command
}

fn listening(proc: &mut Proc) -> SocketAddr {
    printed(proc, "listening on ")
        .parse()
        .expect("listening address")
}

/// The rest of the first line the server prints that starts with `prefix` (lines before it are
/// skipped).
fn printed(proc: &mut Proc, prefix: &str) -> String {
    loop {
        let line = proc.line();
        assert!(
            !line.is_empty(),
            "server exited before it printed {prefix:?}"
        );
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
}

fn run_json(command: &mut Command) -> Value {
    let output = die_with_parent(command)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("{command:?} printed no JSON: {stdout:?}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v.pointer(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// One load run of `load_client` against `server`; the report with the server's CPU.
fn load(opts: &Opts, server: &Server, c: usize, p: usize, size: usize) -> Value {
    load_with(opts, server, c, p, size, &[])
}

fn load_with(
    opts: &Opts,
    server: &Server,
    c: usize,
    p: usize,
    size: usize,
    extra: &[&str],
) -> Value {
    run_json(
        Command::new(opts.bin("load_client"))
            .arg(server.addr.to_string())
            .args(extra)
            .args(["--connections", &c.to_string()])
            .args(["--pipeline", &p.to_string()])
            .args(["--size", &size.to_string()])
            .args(["--duration", &opts.duration.to_string()])
            .args(["--warmup", &opts.warmup.to_string()])
            .args(["--threads", &opts.threads.to_string()])
            .args(["--server-pid", &server.pid().to_string()]),
    )
}

fn load_command(opts: &Opts, c: usize, p: usize, size: usize) -> String {
    format!(
        "load_client ADDR --connections {c} --pipeline {p} --size {size} --duration {} --warmup {} --threads {}",
        opts.duration, opts.warmup, opts.threads
    )
}

/// Other work on the machine above this share of one core during a run makes its round be
/// run again (after a pause), up to `MAX_RETRIES` times: the figures are A/B pairs, and a pair
/// in which one side was disturbed says nothing.
const BUSY_SHARE: f64 = 0.15;
const MAX_RETRIES: usize = 3;

/// Runs `f` on each side, A B A B, `rounds` times, with both servers up the whole time. A round
/// whose runs report more than `BUSY_SHARE` of a core of foreign CPU is run again.
fn alternate(
    opts: &Opts,
    label: &str,
    f: impl FnMut(&Server, Side) -> Value,
) -> (Vec<Value>, Vec<Value>) {
    let servers = [
        (Side::Baseline, start_server(opts, Side::Baseline, &[])),
        (
            Side::Switchboard,
            start_server(opts, Side::Switchboard, &[]),
        ),
    ];
    alternate_on(opts, label, &servers, f)
}

/// [`alternate`] on servers already started (the baseline first).
fn alternate_on(
    opts: &Opts,
    label: &str,
    servers: &[(Side, Server); 2],
    mut f: impl FnMut(&Server, Side) -> Value,
) -> (Vec<Value>, Vec<Value>) {
    let (mut base, mut sb) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for attempt in 0..=MAX_RETRIES {
            let pair: Vec<Value> = servers
                .iter()
                .map(|(side, server)| {
                    let v = f(server, *side);
                    eprintln!("{label} round {} {}: {v}", round + 1, side.name());
                    v
                })
                .collect();
            let busy = pair
                .iter()
                .map(|v| num(v, "/foreign_cpu_s") / opts.duration)
                .fold(0.0, f64::max);
            if busy <= BUSY_SHARE || attempt == MAX_RETRIES {
                let mut pair = pair.into_iter().map(|mut v| {
                    v["attempts"] = json!(attempt + 1);
                    v["busy_share"] = json!(busy);
                    v
                });
                base.push(pair.next().expect("baseline run"));
                sb.push(pair.next().expect("switchboard run"));
                break;
            }
            eprintln!(
                "{label} round {}: other work used {:.0}% of a core; pausing, then again",
                round + 1,
                busy * 100.0
            );
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    (base, sb)
}

fn column(values: &[Value], f: impl Fn(&Value) -> f64) -> Vec<f64> {
    values.iter().map(f).collect()
}

fn throughput(opts: &Opts, report: &mut Report) {
    let (c, p, size) = (100, 16, 64);
    let (base, sb) = alternate(opts, "throughput", |s, _| load(opts, s, c, p, size));
    let command = load_command(opts, c, p, size);
    let rate = |v: &Value| num(v, "/msgs_per_s");
    let cpu_per_msg = |v: &Value| num(v, "/server_cpu_s") / num(v, "/messages") * 1e9;
    report.paired(
        "throughput",
        "100 conn × 16 in flight × 64 B",
        "msgs/s",
        &column(&sb, rate),
        &column(&base, rate),
        Goal::AtLeast(1.0),
        &command,
    );
    report.paired(
        "throughput",
        "server CPU per message",
        "ns",
        &column(&sb, cpu_per_msg),
        &column(&base, cpu_per_msg),
        Goal::AtMost(1.10),
        &command,
    );
    report.raw.insert(
        "throughput".into(),
        json!({"baseline": base, "switchboard": sb}),
    );
}

/// The throughput scenario with 1 and with 2 worker threads on both servers (the baseline's
/// tokio runtime gets as many workers), rows side by side.
fn workers(opts: &Opts, report: &mut Report) {
    let (c, p, size) = (100, 16, 64);
    let command = load_command(opts, c, p, size);
    let rate = |v: &Value| num(v, "/msgs_per_s");
    let cpu_per_msg = |v: &Value| num(v, "/server_cpu_s") / num(v, "/messages") * 1e9;
    let mut runs = Vec::new();
    for n in [1usize, 2] {
        let count = n.to_string();
        let extra = ["--workers", count.as_str()];
        let servers = [
            (Side::Baseline, start_server(opts, Side::Baseline, &extra)),
            (
                Side::Switchboard,
                start_server(opts, Side::Switchboard, &extra),
            ),
        ];
        let (base, sb) = alternate_on(opts, &format!("workers {n}"), &servers, |s, _| {
            load(opts, s, c, p, size)
        });
        runs.push((n, base, sb));
    }
    let label = |n: usize| {
        if n == 1 {
            "1 worker".to_string()
        } else {
            format!("{n} workers")
        }
    };
    for (n, base, sb) in &runs {
        report.paired(
            "workers",
            &format!("100 conn × 16 in flight × 64 B, {}", label(*n)),
            "msgs/s",
            &column(sb, rate),
            &column(base, rate),
            Goal::AtLeast(1.0),
            &format!("{command}; servers --workers {n}"),
        );
    }
    for (n, base, sb) in &runs {
        report.paired(
            "workers",
            &format!("server CPU per message, {}", label(*n)),
            "ns",
            &column(sb, cpu_per_msg),
            &column(base, cpu_per_msg),
            Goal::AtMost(1.10),
            &format!("{command}; servers --workers {n}"),
        );
    }
    let raw: serde_json::Map<String, Value> = runs
        .into_iter()
        .map(|(n, base, sb)| (n.to_string(), json!({"baseline": base, "switchboard": sb})))
        .collect();
    report.raw.insert("workers".into(), Value::Object(raw));
}

/// The throughput scenario again with `switchboard load` (the library's own, verifying load
/// generator) as the client instead of `load_client`.
fn crosscheck(opts: &Opts, report: &mut Report) {
    let duration = opts.duration.to_string();
    let args = [
        "load",
        "--connections",
        "100",
        "--pipeline",
        "16",
        "--size",
        "64",
        "--codec",
        "raw",
        "--duration",
        &duration,
        "--json",
    ];
    let (base, sb) = alternate(opts, "crosscheck", |s, _| {
        run_json(
            Command::new(&opts.switchboard)
                .args(args)
                .arg(s.addr.to_string())
                .env("RUST_LOG", "error"),
        )
    });
    let rate = |v: &Value| num(v, "/msgs_per_s");
    report.paired(
        "throughput",
        "same, client `switchboard load` (cross-check)",
        "msgs/s",
        &column(&sb, rate),
        &column(&base, rate),
        Goal::AtLeast(1.0),
        &format!("switchboard {} ADDR", args.join(" ")),
    );
    report.raw.insert(
        "crosscheck".into(),
        json!({"baseline": base, "switchboard": sb}),
    );
}

/// Threads at `SCHED_IDLE` priority spinning on every core while alive: they run only when
/// nothing else wants the core, so they take no time from the server or the client, but they
/// keep this VM's virtual CPUs from halting between two ping-pong messages (waking a halted
/// virtual CPU costs tens of microseconds here, and would be most of what a quiet ping-pong
/// measures).
struct Spinners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start() -> Spinners {
        use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: sets this thread's own policy; the struct outlives the call.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn latency(opts: &Opts, report: &mut Report) {
    let command = load_command(opts, 1, 1, 64);
    let me = std::process::id().to_string();
    for hot in [false, true] {
        let spinners = hot.then(Spinners::start);
        let (base, sb) = alternate(opts, "latency", |s, _| {
            load_with(opts, s, 1, 1, 64, &["--exclude-pid", &me])
        });
        drop(spinners);
        let (tag, command) = if hot {
            (
                "CPUs kept awake",
                format!("{command} (with SCHED_IDLE spinners on every core)"),
            )
        } else {
            ("idle CPUs", command.clone())
        };
        percentile_rows(
            report,
            tag,
            &command,
            (&sb, &base),
            &[
                ("/latency_us/p50", "p50", Goal::AtMost(1.05)),
                ("/latency_us/p99", "p99", Goal::AtMost(1.05)),
                ("/latency_us/p999", "p99.9", Goal::None),
            ],
        );
        report.raw.insert(
            if hot { "latency_hot" } else { "latency" }.into(),
            json!({"baseline": base, "switchboard": sb}),
        );
    }
    if opts.spin_us > 0 {
        latency_mode(opts, report, &command, &me);
    }
}

/// One paired row per ping-pong percentile `(JSON key, name, goal)`, Switchboard's runs first.
fn percentile_rows(
    report: &mut Report,
    tag: &str,
    command: &str,
    (sb, base): (&[Value], &[Value]),
    percentiles: &[(&str, &str, Goal)],
) {
    for &(key, name, goal) in percentiles {
        report.paired(
            "latency",
            &format!("ping-pong 64 B {name}, {tag}"),
            "µs",
            &column(sb, |v| num(v, key)),
            &column(base, |v| num(v, key)),
            goal,
            command,
        );
    }
}

/// Ping-pong against Switchboard in latency mode (`--spin-us`, idle CPUs, no spinners) and the
/// plain baseline, with what it costs: the server's CPU per message and in cores.
fn latency_mode(opts: &Opts, report: &mut Report, command: &str, me: &str) {
    let spin = opts.spin_us.to_string();
    let servers = [
        (Side::Baseline, start_server(opts, Side::Baseline, &[])),
        (
            Side::Switchboard,
            start_server(opts, Side::Switchboard, &["--spin-us", &spin]),
        ),
    ];
    let (base, sb) = alternate_on(opts, "latency mode", &servers, |s, _| {
        load_with(opts, s, 1, 1, 64, &["--exclude-pid", me])
    });
    drop(servers);
    let tag = format!("Switchboard --spin-us {spin}, idle CPUs");
    let command = format!("{command}; switchboard serve --spin-us {spin}");
    percentile_rows(
        report,
        &tag,
        &command,
        (&sb, &base),
        &[
            ("/latency_us/p50", "p50", Goal::AtMost(0.90)),
            ("/latency_us/p99", "p99", Goal::None),
        ],
    );
    report.paired(
        "latency",
        &format!("ping-pong server CPU per message, {tag}"),
        "µs",
        &column(&sb, |v| num(v, "/server_cpu_s") / num(v, "/messages") * 1e6),
        &column(&base, |v| {
            num(v, "/server_cpu_s") / num(v, "/messages") * 1e6
        }),
        Goal::None,
        &command,
    );
    report.paired(
        "latency",
        &format!("ping-pong server CPU, {tag}"),
        "cores",
        &column(&sb, |v| num(v, "/server_cpu_s") / opts.duration),
        &column(&base, |v| num(v, "/server_cpu_s") / opts.duration),
        Goal::None,
        &command,
    );
    report.raw.insert(
        "latency_mode".into(),
        json!({"spin_us": opts.spin_us, "baseline": base, "switchboard": sb}),
    );
}

/// Issue 10's target for an idle connection's RSS (1.5 KiB), at 10,000 and 19,000.
const IDLE_BYTES_TARGET: f64 = 1536.0;

/// How `idle_cost` measures, for the report.
fn idle_cost_command(total: usize) -> String {
    format!(
        "fresh server; hold_clients ADDR --count {} ×2 (127.0.0.2, .3); VmRSS delta / connections",
        total / 2
    )
}

/// The receive buffer both servers fix for the bandwidth scenario's second half.
const FIXED_RECV_BUFFER: &str = "1048576";

fn bandwidth(opts: &Opts, report: &mut Report) {
    let (c, p, size) = (10, 4, 64 * 1024);
    let run = |s: &Server, _| {
        // The kernel's tail loss probes over the run: on this loopback they fire when ACKs
        // wait (delayed ACKs, socket backlog), and runs with many of them stall on both servers.
        let probes = loss_probes();
        let mut v = load(opts, s, c, p, size);
        v["tcp_loss_probes"] = json!(loss_probes()
            .zip(probes)
            .map(|(after, before)| after - before));
        v
    };
    let command = load_command(opts, c, p, size);
    let (base, sb) = alternate(opts, "bandwidth", run);
    bandwidth_rows(report, "", size, &base, &sb, &command);
    let mut raw = json!({"baseline": base, "switchboard": sb});
    // `scale_server` (`--sb-server library`) takes no `--recv-buffer`: a fixed half would not
    // be what it says.
    if !opts.library_server {
        // Both servers again with the receive buffer fixed (`--recv-buffer`): a large receive
        // window from the start, whatever the kernel's autotuning does, which is what splits
        // rounds into fast and slow ones on this loopback.
        let extra = ["--recv-buffer", FIXED_RECV_BUFFER];
        let servers = [
            (Side::Baseline, start_server(opts, Side::Baseline, &extra)),
            (
                Side::Switchboard,
                start_server(opts, Side::Switchboard, &extra),
            ),
        ];
        let (fixed_base, fixed_sb) = alternate_on(opts, "bandwidth, fixed buffers", &servers, run);
        bandwidth_rows(
            report,
            ", receive buffer fixed at 1 MiB on both servers",
            size,
            &fixed_base,
            &fixed_sb,
            &format!("{command} (servers started with --recv-buffer {FIXED_RECV_BUFFER})"),
        );
        raw["fixed_recv_buffer"] = json!({"baseline": fixed_base, "switchboard": fixed_sb});
    }
    report.raw.insert("bandwidth".into(), raw);
}

fn bandwidth_rows(
    report: &mut Report,
    suffix: &str,
    size: usize,
    base: &[Value],
    sb: &[Value],
    command: &str,
) {
    let cpu_per_mb =
        |v: &Value| num(v, "/server_cpu_s") / (num(v, "/messages") * size as f64) * 1e9;
    let fairness = |v: &Value| {
        num(v, "/messages_per_connection/0") / num(v, "/messages_per_connection/1").max(1.0)
    };
    let rows: [(&str, &'static str, Measure<'_>, Goal); 5] = [
        (
            "10 conn × 64 KiB messages, 4 in flight",
            "MB/s",
            &|v| num(v, "/mb_per_s"),
            Goal::AtLeast(1.1),
        ),
        ("server CPU per MB", "ms", &cpu_per_mb, Goal::None),
        // Fairness between bulk sessions: a session that waits behind its neighbours shows
        // here, not in the MB/s.
        (
            "p99 time per 64 KiB message",
            "µs",
            &|v| num(v, "/latency_us/p99"),
            Goal::AtMost(1.2),
        ),
        (
            "messages on the slowest connection ÷ on the fastest",
            "ratio",
            &fairness,
            Goal::None,
        ),
        (
            "TCP tail loss probes during the run (nstat TcpExtTCPLossProbes, whole machine)",
            "probes",
            &|v| num(v, "/tcp_loss_probes"),
            Goal::None,
        ),
    ];
    for (metric, unit, value, goal) in rows {
        // The targets are judged on the servers as they come; the fixed-buffer rows explain.
        let goal = if suffix.is_empty() { goal } else { Goal::None };
        report.paired(
            "bandwidth",
            &format!("{metric}{suffix}"),
            unit,
            &column(sb, value),
            &column(base, value),
            goal,
            command,
        );
    }
}

/// What a row reads off one run's report.
type Measure<'a> = &'a dyn Fn(&Value) -> f64;

/// `TcpExtTCPLossProbes` from /proc/net/netstat (machine-wide).
fn loss_probes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names
        .split_whitespace()
        .position(|n| n == "TCPLossProbes")?;
    values.split_whitespace().nth(index)?.parse().ok()
}

fn accept(opts: &Opts, report: &mut Report) {
    let run = |s: &Server, _| {
        run_json(
            Command::new(opts.bin("accept_rate"))
                .arg(s.addr.to_string())
                .args(["--concurrency", "8"])
                .args(["--duration", &opts.duration.to_string()])
                .args(["--warmup", "0.5"])
                .args(["--server-pid", &s.pid().to_string()]),
        )
    };
    let command = format!(
        "accept_rate ADDR --concurrency 8 --duration {} --warmup 0.5",
        opts.duration
    );
    let (base, sb) = alternate(opts, "accept", run);
    accept_rows(report, "", &base, &sb, &command);
    // The same against a baseline of its own run, with the accept loop on a worker.
    let mut on_worker = None;
    if !opts.library_server {
        let servers = [
            (Side::Baseline, start_server(opts, Side::Baseline, &[])),
            (
                Side::Switchboard,
                start_server(opts, Side::Switchboard, &["--accept-on-worker"]),
            ),
        ];
        let (base_w, sb_w) = alternate_on(opts, "accept --accept-on-worker", &servers, run);
        let command = format!("{command}; serve --accept-on-worker");
        accept_rows(
            report,
            ", `serve --accept-on-worker`",
            &base_w,
            &sb_w,
            &command,
        );
        on_worker = Some(json!({"baseline": base_w, "switchboard": sb_w}));
    }
    report.raw.insert(
        "accept".into(),
        json!({"baseline": base, "switchboard": sb, "accept_on_worker": on_worker}),
    );
}

/// The accept scenario's two rows (rate, server CPU per connection) for one configuration.
fn accept_rows(report: &mut Report, suffix: &str, base: &[Value], sb: &[Value], command: &str) {
    report.paired(
        "accept",
        &format!("connect + 1-byte echo + close, 8 at a time{suffix}"),
        "conn/s",
        &column(sb, |v| num(v, "/conns_per_s")),
        &column(base, |v| num(v, "/conns_per_s")),
        Goal::AtLeast(0.95),
        command,
    );
    let cpu = |v: &Value| num(v, "/server_cpu_s") / num(v, "/connections") * 1e6;
    report.paired(
        "accept",
        &format!("server CPU per connection{suffix}"),
        "µs",
        &column(sb, cpu),
        &column(base, cpu),
        Goal::AtMost(1.10),
        command,
    );
}

/// Opens `total` idle connections to `addr` from `processes` hold_clients (source addresses
/// 127.0.0.first, first+1, …, one per process); returns them and how many opened.
fn hold(
    opts: &Opts,
    addr: SocketAddr,
    total: usize,
    processes: usize,
    first: u32,
) -> (Vec<Proc>, usize) {
    let per = total.div_ceil(processes);
    let mut clients: Vec<Proc> = (0..processes)
        .map(|k| {
            let count = per.min(total - per * k);
            Proc::spawn(
                Command::new(opts.bin("hold_clients"))
                    .arg(addr.to_string())
                    .args(["--count", &count.to_string()])
                    .args(["--source-first", &(first + k as u32).to_string()])
                    .args(["--source-count", "1"])
                    .args(["--hold", "300"])
                    .stderr(Stdio::inherit()),
            )
        })
        .collect();
    let opened = clients
        .iter_mut()
        .map(|c| num(&c.json(), "/opened") as usize)
        .sum();
    (clients, opened)
}

/// Waits until the server has `fds` descriptors open (the accepted connections), up to 60 s.
fn wait_fds(pid: u32, fds: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if open_fds(pid).unwrap_or(0) >= fds {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// RSS growth per idle connection of `server` (fresh) holding `total` connections, in bytes.
fn idle_cost(opts: &Opts, server: Server, total: usize) -> Value {
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.pid();
    let (rss0, fds0) = (rss_kib(pid).expect("rss"), open_fds(pid).expect("fds"));
    let started = Instant::now();
    let (mut clients, opened) = hold(opts, server.addr, total, 2, 2);
    let accepted = wait_fds(pid, fds0 + opened);
    // Let the workers finish starting sessions.
    std::thread::sleep(Duration::from_millis(700));
    let rss_open = rss_kib(pid).expect("rss");
    // Then a quiet spell past jemalloc's decay time (10 s): what the burst of connects freed
    // goes back to the kernel, and what stays is what the idle connections hold.
    std::thread::sleep(SETTLE);
    let rss1 = rss_kib(pid).expect("rss");
    let fds1 = open_fds(pid).expect("fds");
    for client in &mut clients {
        client.close_stdin(Duration::from_secs(10));
    }
    json!({
        "opened": opened,
        "accepted_all": accepted,
        "server_fds": fds1 - fds0,
        "rss0_kib": rss0, "rss_open_kib": rss_open, "rss1_kib": rss1,
        "bytes_per_conn_at_open": (rss_open as f64 - rss0 as f64) * 1024.0 / opened.max(1) as f64,
        "bytes_per_conn": (rss1 as f64 - rss0 as f64) * 1024.0 / opened.max(1) as f64,
        "open_s": started.elapsed().as_secs_f64(),
    })
}

/// How long `idle_cost` waits, connections open and quiet, before it reads the RSS it reports.
const SETTLE: Duration = Duration::from_secs(12);

/// INFO lines without a span per session (`switchboard::SESSION_SPAN_TARGET`).
const INFO_WITHOUT_SPANS: &str = "info,switchboard::session_span=off";

/// The log levels the memory scenario runs `serve` at: the key of its raw figures, what its
/// row adds to the metric's name, and `RUST_LOG`. `serve` logs at INFO unless told otherwise,
/// and each session then holds a span.
const MEMORY_LOG_LEVELS: [(&str, &str, &str); 3] = [
    ("switchboard", "", "warn"),
    (
        "switchboard_info",
        " at `serve`'s default log level (INFO)",
        "info",
    ),
    (
        "switchboard_info_no_spans",
        " at INFO with the session spans off",
        INFO_WITHOUT_SPANS,
    ),
];

fn memory(opts: &Opts, report: &mut Report) {
    // The target's two sizes; the log levels at the first only (each run takes ~15 s).
    let totals: &[usize] = if opts.quick {
        &[1000]
    } else {
        &[10_000, 19_000]
    };
    let mut raw = serde_json::Map::new();
    for (i, &total) in totals.iter().enumerate() {
        // The library's server has no log levels to choose from.
        let levels = if opts.library_server || i > 0 {
            &MEMORY_LOG_LEVELS[..1]
        } else {
            &MEMORY_LOG_LEVELS[..]
        };
        let mut base = Vec::new();
        let mut sb: Vec<Vec<Value>> = vec![Vec::new(); levels.len()];
        for round in 0..opts.rounds {
            let v = idle_cost(opts, start_server(opts, Side::Baseline, &[]), total);
            eprintln!("memory round {} at {total} baseline: {v}", round + 1);
            base.push(v);
            for ((key, _, log), runs) in levels.iter().zip(&mut sb) {
                let v = idle_cost(
                    opts,
                    start_server_with(opts, Side::Switchboard, &[], log),
                    total,
                );
                eprintln!("memory round {} at {total} {key}: {v}", round + 1);
                runs.push(v);
            }
        }
        let settled = |v: &Value| num(v, "/bytes_per_conn");
        let at_open = |v: &Value| num(v, "/bytes_per_conn_at_open");
        let command = idle_cost_command(total);
        for (j, ((key, label, log), runs)) in levels.iter().zip(sb).enumerate() {
            let command = format!("{command}; RUST_LOG={log}, log to /dev/null");
            if j == 0 {
                report.paired(
                    "memory",
                    &format!(
                        "{total} idle connections, 0.7 s after the last opened: RSS per connection"
                    ),
                    "B",
                    &column(&runs, at_open),
                    &column(&base, at_open),
                    Goal::None,
                    &command,
                );
            }
            report.paired(
                "memory",
                &format!("{total} idle connections{label}: RSS per connection"),
                "B",
                &column(&runs, settled),
                &column(&base, settled),
                Goal::AbsAtMost(IDLE_BYTES_TARGET),
                &format!("{command}; read after {} s quiet", SETTLE.as_secs()),
            );
            let key = if i == 0 {
                (*key).to_string()
            } else {
                format!("{key}_{total}")
            };
            raw.insert(key, json!(runs));
        }
        let key = if i == 0 {
            "baseline".to_string()
        } else {
            format!("baseline_{total}")
        };
        raw.insert(key, json!(base));
    }
    report.raw.insert("memory".into(), Value::Object(raw));
}

fn scale(opts: &Opts, report: &mut Report) {
    let total = if opts.quick { 2_000 } else { 19_200 };
    let processes = if opts.quick { 1 } else { 3 };
    let mut server = Proc::spawn(
        Command::new(opts.bin("scale_server"))
            .args(["--max-connections", "19900"])
            .stderr(Stdio::null()),
    );
    let addr = listening(&mut server);
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_kib(server.pid()).expect("rss");
    let started = Instant::now();
    let (mut clients, opened) = hold(opts, addr, total, processes, 2);
    server.send(&format!("wait {opened} 60"));
    let waited = server.json();
    let open_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    server.send("measure");
    let measured = server.json();
    for client in &mut clients {
        client.close_stdin(Duration::from_secs(20));
    }
    server.send("wait 0 30");
    let drained = server.json();
    eprintln!("scale: opened {opened} in {open_s:.1} s; {waited}; {measured}; {drained}");
    let count = num(&measured, "/count");
    let command = format!(
        "scale_server --max-connections 19900; hold_clients ADDR --count {} ×{processes} (127.0.0.2..); stdin `measure`",
        total / processes
    );
    report.single(
        "scale",
        &format!("idle connections held by one server (of {total} opened)"),
        "conn",
        count,
        Goal::AbsAtLeast(if opts.quick { 2_000.0 } else { 19_000.0 }),
        &command,
    );
    report.single(
        "scale",
        "registry count == connections held, then 0 after close",
        "bool",
        f64::from(count as usize == opened && num(&drained, "/count") == 0.0),
        Goal::AbsAtLeast(1.0),
        &command,
    );
    report.single(
        "scale",
        &format!("registry list at {count}"),
        "ms",
        num(&measured, "/list_ms"),
        Goal::AbsAtMost(20.0),
        &command,
    );
    report.single(
        "scale",
        &format!("registry broadcast 64 B to {count} sessions"),
        "ms",
        num(&measured, "/broadcast_ms"),
        Goal::None,
        &command,
    );
    let per_conn = (num(&measured, "/rss_kib") - rss0 as f64) * 1024.0 / count.max(1.0);
    report.single(
        "scale",
        &format!("RSS per connection at {count}"),
        "B",
        per_conn,
        Goal::AbsAtMost(IDLE_BYTES_TARGET),
        &command,
    );
    report.raw.insert(
        "scale".into(),
        json!({"opened": opened, "open_s": open_s, "rss0_kib": rss0, "waited": waited,
               "measured": measured, "drained": drained, "bytes_per_conn": per_conn}),
    );
}

/// Times `f` five times; the median in ms.
fn timed_ms<T>(mut f: impl FnMut() -> T) -> f64 {
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&times)
}

fn registry(opts: &Opts, report: &mut Report) {
    let sizes: &[usize] = if opts.quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    let pid = std::process::id();
    let local: SocketAddr = "127.0.0.1:7000".parse().expect("address");
    let mut raw = Vec::new();
    for &entries in sizes {
        let registry = Registry::new();
        let rss0 = rss_kib(pid).expect("rss");
        let fill = Instant::now();
        let held: Vec<_> = (0..entries)
            .map(|i| {
                let peer = SocketAddr::from(([127, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9));
                registry.register_placeholder(peer, local)
            })
            .collect();
        let fill_ms = fill.elapsed().as_secs_f64() * 1e3;
        let rss1 = rss_kib(pid).expect("rss");
        let count = registry.count();
        let count_ms = timed_ms(|| registry.count());
        let ids_ms = timed_ms(|| registry.ids().len());
        let list_ms = timed_ms(|| registry.list().len());
        let message = Bytes::from_static(&[b'x'; 64]);
        let broadcast_ms = timed_ms(|| {
            registry
                .broadcast(message.clone(), None, SlowConsumerPolicy::Drop)
                .report()
        });
        let bytes_per_entry = (rss1 as f64 - rss0 as f64) * 1024.0 / entries as f64;
        let v = json!({
            "entries": entries, "count": count, "fill_ms": fill_ms, "count_ms": count_ms,
            "ids_ms": ids_ms, "list_ms": list_ms, "broadcast_ms": broadcast_ms,
            "bytes_per_entry": bytes_per_entry,
        });
        eprintln!("registry {entries}: {v}");
        let command = "e2e --only registry (placeholder entries, in process); also `cargo bench -p switchboard-benches --bench registry`";
        report.single(
            "registry",
            &format!("list {entries} entries"),
            "ms",
            list_ms,
            if entries == 100_000 {
                Goal::AbsAtMost(100.0)
            } else {
                Goal::None
            },
            command,
        );
        report.single(
            "registry",
            &format!("broadcast loop over {entries} placeholder entries"),
            "ms",
            broadcast_ms,
            Goal::None,
            command,
        );
        report.single(
            "registry",
            &format!("memory per registry entry at {entries}"),
            "B",
            bytes_per_entry,
            Goal::None,
            command,
        );
        drop(held);
        raw.push(v);
    }
    report.raw.insert("registry".into(), Value::Array(raw));
}

/// Writes `mib` MiB of pseudo-random bytes to `path` unless it already has that size.
fn make_file(path: &Path, mib: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == mib << 20) {
        return;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk).expect("write file");
    }
    file.flush().expect("flush file");
}

fn file(opts: &Opts, report: &mut Report) {
    let dir = PathBuf::from("target/e2e");
    std::fs::create_dir_all(&dir).expect("target/e2e");
    let path = dir.join(format!("payload-{}mib.bin", opts.file_mib));
    make_file(&path, opts.file_mib);
    let bytes = (opts.file_mib << 20) as f64;
    let received = dir.join(format!("received-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&received);
    std::fs::create_dir_all(&received).expect("received dir");
    let mut server = Proc::spawn(
        Command::new(&opts.switchboard)
            .args(["serve", "--mode", "files", "--port", "0", "--dir"])
            .arg(&received)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let addr = listening(&mut server);
    let (mut cat, mut direct, mut sha, mut send) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let shell_mb_s = |script: String| {
        let start = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stderr(Stdio::null())
            .status()
            .expect("sh");
        assert!(status.success(), "{script} failed");
        bytes / 1e6 / start.elapsed().as_secs_f64()
    };
    for round in 0..opts.rounds {
        // The issue's ceiling: reading the (page-cached) file.
        cat.push(shell_mb_s(format!("cat '{}' > /dev/null", path.display())));
        // The disk itself: the same read with the page cache bypassed.
        direct.push(shell_mb_s(format!(
            "dd if='{}' of=/dev/null bs=4M iflag=direct",
            path.display()
        )));
        // The issue's target: reading and hashing the same file, as `send` must.
        sha.push(shell_mb_s(format!(
            "sha256sum '{}' > /dev/null",
            path.display()
        )));

        let start = Instant::now();
        let output = Command::new(&opts.switchboard)
            .args(["send", &addr.to_string()])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .output()
            .expect("switchboard send");
        let seconds = start.elapsed().as_secs_f64();
        assert!(
            output.status.success(),
            "send failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        send.push(bytes / 1e6 / seconds);
        eprintln!(
            "file round {}: cat {:.0} MB/s, dd direct {:.0} MB/s, sha256sum {:.0} MB/s, \
             send {:.0} MB/s",
            round + 1,
            cat[round],
            direct[round],
            sha[round],
            send[round]
        );
        // The server never overwrites: clear the upload before the next round.
        let _ = std::fs::remove_dir_all(&received);
        std::fs::create_dir_all(&received).expect("received dir");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&received);
    let send_command = format!(
        "switchboard serve --mode files --port 0 --dir D; switchboard send ADDR {}",
        path.display()
    );
    report.paired(
        "file",
        &format!(
            "send {} MiB via serve --mode files; baseline `cat FILE > /dev/null` (page cache)",
            opts.file_mib
        ),
        "MB/s",
        &send,
        &cat,
        Goal::AtLeast(0.5),
        &send_command,
    );
    report.paired(
        "file",
        "same; baseline `dd iflag=direct` (disk read, cache bypassed)",
        "MB/s",
        &send,
        &direct,
        Goal::AtLeast(0.5),
        &send_command,
    );
    report.paired(
        "file",
        "same; baseline `sha256sum FILE` (page cache, read and hash)",
        "MB/s",
        &send,
        &sha,
        Goal::AtLeast(0.8),
        &send_command,
    );
    report.raw.insert(
        "file".into(),
        json!({
            "cat_mb_s": cat,
            "dd_direct_mb_s": direct,
            "sha256sum_mb_s": sha,
            "send_mb_s": send,
        }),
    );
}

/// A CA and a `localhost` certificate it signed, as PEM files, for the TLS scenario.
struct TlsFiles {
    dir: PathBuf,
    ca: String,
    cert: String,
    key: String,
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_files(opts: &Opts) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = opts
        .out
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("TLS file directory");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "e2e CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path.to_string_lossy().into_owned()
    };
    TlsFiles {
        ca: write("ca.pem", ca_pem),
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", key.serialize_pem()),
        dir,
    }
}

/// The TLS echo on `side`: `baseline_tls_echo`, or `switchboard serve --tls-cert` (raw echo).
fn start_tls_server(opts: &Opts, side: Side, files: &TlsFiles) -> Server {
    let mut command = match side {
        Side::Switchboard => {
            let mut c = Command::new(&opts.switchboard);
            c.args(["serve", "--mode", "echo", "--codec", "raw", "--port", "0"])
                .args(["--tls-cert", &files.cert, "--tls-key", &files.key])
                .env("RUST_LOG", "warn");
            c
        }
        Side::Baseline => {
            let mut c = Command::new(opts.bin("baseline_tls_echo"));
            c.args(["--cert", &files.cert, "--key", &files.key]);
            c
        }
    };
    command.stderr(Stdio::null());
    let mut proc = Proc::spawn(&mut command);
    let addr = loop {
        let line = proc.line();
        assert!(!line.is_empty(), "TLS server exited before it listened");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr
                .trim()
                .trim_start_matches("tls://")
                .parse()
                .expect("listening address");
        }
    };
    Server { proc, addr }
}

fn tls_client(opts: &Opts, mode: &str, target: &str, server: &Server, extra: &[&str]) -> Value {
    run_json(
        Command::new(opts.bin("tls_client"))
            .args([mode, target])
            .args(extra)
            .args(["--duration", &opts.duration.to_string()])
            .args(["--warmup", &opts.warmup.to_string()])
            .args(["--server-pid", &server.pid().to_string()]),
    )
}

/// TLS against a plain tokio-rustls echo built the same way: bulk bandwidth, full and resumed
/// handshakes per second, and idle memory per TLS connection.
fn tls(opts: &Opts, report: &mut Report) {
    let files = tls_files(opts);
    let servers = [
        (
            Side::Baseline,
            start_tls_server(opts, Side::Baseline, &files),
        ),
        (
            Side::Switchboard,
            start_tls_server(opts, Side::Switchboard, &files),
        ),
    ];
    let ca = files.ca.clone();
    let bulk = [
        "--ca",
        &ca,
        "--connections",
        "10",
        "--pipeline",
        "4",
        "--size",
        "65536",
    ];
    let (base, sb) = alternate_on(opts, "tls bulk", &servers, |s, _| {
        tls_client(opts, "bulk", &format!("tls://{}", s.addr), s, &bulk)
    });
    let command = format!(
        "tls_client bulk tls://ADDR --ca CA --connections 10 --pipeline 4 --size 65536 --duration {} --warmup {}",
        opts.duration, opts.warmup
    );
    report.paired(
        "tls",
        "bulk: 10 conn × 64 KiB messages, 4 in flight (TLS 1.3, AES-128-GCM)",
        "MB/s",
        &column(&sb, |v| num(v, "/mb_per_s")),
        &column(&base, |v| num(v, "/mb_per_s")),
        Goal::AtLeast(0.95),
        &command,
    );
    let cpu_per_mb = |v: &Value| num(v, "/server_cpu_s") / (num(v, "/messages") * 65536.0) * 1e9;
    report.paired(
        "tls",
        "bulk: server CPU per MB",
        "ms",
        &column(&sb, cpu_per_mb),
        &column(&base, cpu_per_mb),
        Goal::None,
        &command,
    );
    let mut raw = serde_json::Map::new();
    raw.insert("bulk".into(), json!({"baseline": base, "switchboard": sb}));
    for (name, resume) in [("full", false), ("resumed", true)] {
        let mut extra = vec!["--ca", ca.as_str(), "--concurrency", "4"];
        if resume {
            extra.push("--resume");
        }
        let (base, sb) = alternate_on(opts, &format!("tls {name} handshakes"), &servers, |s, _| {
            tls_client(opts, "handshakes", &s.addr.to_string(), s, &extra)
        });
        let command = format!(
            "tls_client handshakes ADDR --ca CA --concurrency 4{} --duration {} --warmup {}",
            if resume { " --resume" } else { "" },
            opts.duration,
            opts.warmup
        );
        let resumed_share = |v: &Value| num(v, "/resumed") / num(v, "/handshakes");
        eprintln!(
            "tls {name}: resumed share baseline {:.2}, switchboard {:.2}",
            median(&column(&base, resumed_share)),
            median(&column(&sb, resumed_share))
        );
        report.paired(
            "tls",
            &format!("{name} handshakes (connect, handshake, 1-byte echo, close), 4 at a time"),
            "hs/s",
            &column(&sb, |v| num(v, "/per_s")),
            &column(&base, |v| num(v, "/per_s")),
            if resume {
                Goal::None
            } else {
                Goal::AtLeast(0.95)
            },
            &command,
        );
        raw.insert(name.into(), json!({"baseline": base, "switchboard": sb}));
    }
    drop(servers);
    // Idle memory: a fresh server per run, `total` handshaken connections that send nothing.
    let total = if opts.quick { 500 } else { 2000 };
    let (mut base, mut sb) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for side in [Side::Baseline, Side::Switchboard] {
            let server = start_tls_server(opts, side, &files);
            std::thread::sleep(Duration::from_millis(300));
            let pid = server.pid();
            let (rss0, fds0) = (rss_kib(pid).expect("rss"), open_fds(pid).expect("fds"));
            let mut client = Proc::spawn(
                Command::new(opts.bin("tls_client"))
                    .args(["hold", &server.addr.to_string(), "--ca", &ca])
                    .args(["--count", &total.to_string()])
                    .stderr(Stdio::inherit()),
            );
            let opened = num(&client.json(), "/opened") as usize;
            let accepted = wait_fds(pid, fds0 + opened);
            std::thread::sleep(Duration::from_millis(700));
            let rss1 = rss_kib(pid).expect("rss");
            client.close_stdin(Duration::from_secs(10));
            let v = json!({
                "opened": opened,
                "accepted_all": accepted,
                "rss0_kib": rss0, "rss1_kib": rss1,
                "bytes_per_conn": (rss1 as f64 - rss0 as f64) * 1024.0 / opened.max(1) as f64,
            });
            eprintln!("tls memory round {} {}: {v}", round + 1, side.name());
            match side {
                Side::Baseline => base.push(v),
                Side::Switchboard => sb.push(v),
            }
        }
    }
    report.paired(
        "tls",
        &format!("{total} idle TLS connections: RSS per connection"),
        "B",
        &column(&sb, |v| num(v, "/bytes_per_conn")),
        &column(&base, |v| num(v, "/bytes_per_conn")),
        Goal::None,
        &format!(
            "fresh server; tls_client hold ADDR --ca CA --count {total}; VmRSS delta / connections"
        ),
    );
    raw.insert(
        "memory".into(),
        json!({"baseline": base, "switchboard": sb}),
    );
    report.raw.insert("tls".into(), Value::Object(raw));
}

/// The throughput load (100 × 16 × 64 B) against each server running under callgrind: the
/// user-space instructions (program and libraries, not the kernel) per turn, counted between
/// `callgrind_control --zero` and `--dump` inside the load. A turn is one write: both servers
/// write once per turn of a connection (read, echo, write), so the calls to `send` count them.
/// Under callgrind the servers run several times slower, so the rates are not this row's; the
/// counts per turn are, and a server's rounds agree within about 1.5% (a run's window and the
/// messages per turn move them a little between runs), which makes them the measure for
/// changes too small for msgs/s to resolve. The baseline as actix actors (`baseline_echo
/// --thread-per-worker --actor`) is measured too: what the actor runtime and the thread layout
/// cost a turn before any session code runs.
fn instructions(opts: &Opts, report: &mut Report) {
    let dir = ScratchDir::new("e2e-callgrind");
    let (c, p, size) = (100, 16, 64);
    let actor = ["--thread-per-worker", "--actor"];
    let servers = [
        (
            "baseline",
            start_under_callgrind(opts, Side::Baseline, &[], &dir),
        ),
        (
            "actor",
            start_under_callgrind(opts, Side::Baseline, &actor, &dir),
        ),
        (
            "switchboard",
            start_under_callgrind(opts, Side::Switchboard, &[], &dir),
        ),
    ];
    let mut runs: [Vec<Value>; 3] = Default::default();
    for round in 0..opts.rounds {
        for ((name, server), runs) in servers.iter().zip(runs.iter_mut()) {
            let v = turn_instructions(opts, server, &dir, c, p, size);
            eprintln!("instructions round {} {name}: {v}", round + 1);
            runs.push(v);
        }
    }
    let [base, actor, sb] = runs;
    let command = format!(
        "valgrind --tool=callgrind SERVER; load_client ADDR --connections {c} --pipeline {p} --size {size}; callgrind_control --zero PID, {} s, --dump PID",
        opts.duration
    );
    let per_turn = |v: &Value| num(v, "/ir_per_turn");
    for (metric, key) in [
        (
            "user-space instructions per turn (one write)",
            "/ir_per_turn",
        ),
        (
            "same, per message (messages per turn from the rate under callgrind: noisier)",
            "/ir_per_message",
        ),
    ] {
        let figure = |v: &Value| num(v, key);
        report.paired(
            "instructions",
            metric,
            "Ir",
            &column(&sb, figure),
            &column(&base, figure),
            Goal::None,
            &command,
        );
    }
    report.single(
        "instructions",
        "per turn, the baseline as actix actors (`--thread-per-worker --actor`; in the Switchboard column)",
        "Ir",
        median(&column(&actor, per_turn)),
        Goal::None,
        &command,
    );
    report.raw.insert(
        "instructions".into(),
        json!({"baseline": base, "actor_baseline": actor, "switchboard": sb}),
    );
}

/// Stops the run before any scenario when `--only` names `instructions` and valgrind's tools
/// are missing, so no other scenario's figures are lost to it.
fn require_callgrind() {
    for tool in ["valgrind", "callgrind_control"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            eprintln!(
                "e2e: `--only instructions` needs {tool} (valgrind's package; callgrind_control \
                 is a perl script): install it with `apt-get install -y valgrind`"
            );
            std::process::exit(2);
        }
    }
}

/// A directory under the system's temp dir, removed with everything in it when dropped (also
/// on a panic).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// [`start_server`] with the server under callgrind, writing its dumps, and valgrind's gdb
/// pipes, into `dir`.
fn start_under_callgrind(opts: &Opts, side: Side, extra: &[&str], dir: &Path) -> Server {
    let plain = server_command(opts, side, extra, "warn");
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
        .arg(format!("--vgdb-prefix={}", vgdb_prefix(dir)))
        .arg(plain.get_program())
        .args(plain.get_args());
    for (key, value) in plain.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    // Valgrind's own messages (and a server's panic) go to a file beside the dumps.
    let log = std::fs::File::create(dir.join(format!("valgrind-{}.log", side.name())))
        .expect("valgrind log");
    command.stderr(log);
    let mut proc = Proc::spawn(&mut command);
    let addr = listening(&mut proc);
    Server { proc, addr }
}

fn vgdb_prefix(dir: &Path) -> String {
    format!("{}/vgdb", dir.display())
}

/// One count: the load runs `duration` + 2 s; the counters are zeroed 1.5 s in and dumped
/// `duration` later, inside it.
fn turn_instructions(
    opts: &Opts,
    server: &Server,
    dir: &Path,
    c: usize,
    p: usize,
    size: usize,
) -> Value {
    let control = |what: &str| {
        let status = Command::new("callgrind_control")
            .arg(format!("--vgdb-prefix={}", vgdb_prefix(dir)))
            .args([what, &server.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {what} failed");
    };
    let mut load = Proc::spawn(
        Command::new(opts.bin("load_client"))
            .arg(server.addr.to_string())
            .args(["--connections", &c.to_string()])
            .args(["--pipeline", &p.to_string()])
            .args(["--size", &size.to_string()])
            .args(["--duration", &(opts.duration + 2.0).to_string()])
            .args(["--warmup", "1"])
            .stderr(Stdio::inherit()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    control("--zero");
    let zeroed = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(opts.duration));
    control("--dump");
    let window = zeroed.elapsed().as_secs_f64();
    let load = load.json();
    let dump = newest_dump(dir, server.pid());
    let text = std::fs::read_to_string(&dump).expect("read the callgrind dump");
    let (ir, sends) = callgrind_counts(&text, &["send", "__send", "__libc_send"]);
    let _ = std::fs::remove_file(&dump);
    assert!(
        ir > 0 && sends > 0,
        "the dump {} holds {ir} instructions and {sends} calls to send: nothing to count turns by",
        dump.display()
    );
    let turns = sends as f64;
    let messages = num(&load, "/msgs_per_s") * window;
    json!({
        "ir": ir, "sends": sends, "window_s": window,
        "ir_per_turn": ir as f64 / turns,
        "messages_per_turn": messages / turns,
        "ir_per_message": ir as f64 / messages,
        "msgs_per_s_under_callgrind": num(&load, "/msgs_per_s"),
    })
}

/// The dump `callgrind_control --dump` wrote last for `pid` (`cg.PID.N`, the highest N).
fn newest_dump(dir: &Path, pid: u32) -> PathBuf {
    let prefix = format!("cg.{pid}.");
    std::fs::read_dir(dir)
        .expect("callgrind dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let part: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((part, dir.join(name)))
        })
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("no callgrind dump for {pid} in {}", dir.display()))
}

/// The total instructions of a callgrind dump (its first event, as `--tool=callgrind` records
/// only `Ir` by default) and the calls it records to any function in `callees` (names are
/// compressed: `(id) name` the first time, `(id)` after; `fn` and `cfn` share ids).
fn callgrind_counts(text: &str, callees: &[&str]) -> (u64, u64) {
    let mut names = std::collections::HashMap::new();
    let mut callee_matches = false;
    let (mut total, mut calls) = (0, 0);
    for line in text.lines() {
        let named = line
            .strip_prefix("cfn=")
            .map(|rest| (true, rest))
            .or_else(|| line.strip_prefix("fn=").map(|rest| (false, rest)));
        if let Some((is_callee, rest)) = named {
            let (id, given) = match rest.split_once(' ') {
                Some((id, given)) => (id, Some(given)),
                None => (rest, None),
            };
            if let Some(given) = given {
                names.insert(id.to_string(), given.to_string());
            }
            if is_callee {
                callee_matches = names
                    .get(id)
                    .is_some_and(|n: &String| callees.contains(&n.as_str()));
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee_matches {
                calls += rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        } else if let Some(rest) = line.strip_prefix("summary:") {
            total = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    (total, calls)
}

/// Switchboard's raw echo over a Unix socket against the same server over TCP loopback (the
/// "baseline" column): small pipelined messages and 64 KiB bulk.
fn unix(opts: &Opts, report: &mut Report) {
    let dir = opts
        .out
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("socket directory");
    let path = dir.join("echo.sock");
    let mut proc = Proc::spawn(
        Command::new(&opts.switchboard)
            .args(["serve", "--mode", "echo", "--codec", "raw"])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--listen", &format!("unix:{}", path.display())])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let (mut tcp, mut unix) = (None, None);
    while tcp.is_none() || unix.is_none() {
        let line = proc.line();
        assert!(!line.is_empty(), "serve exited before it listened");
        match line.strip_prefix("listening on ") {
            Some(rest) if rest.starts_with("unix:") => unix = Some(rest.to_string()),
            Some(rest) => tcp = Some(format!("tcp://{rest}")),
            None => {}
        }
    }
    let server = Server {
        proc,
        addr: "127.0.0.1:0".parse().expect("placeholder"),
    };
    let targets = [tcp.expect("tcp"), unix.expect("unix")];
    let mut raw = serde_json::Map::new();
    for (name, extra) in [
        (
            "small",
            ["--connections", "100", "--pipeline", "16", "--size", "64"],
        ),
        (
            "bulk",
            ["--connections", "10", "--pipeline", "4", "--size", "65536"],
        ),
    ] {
        let (mut over_tcp, mut over_unix) = (Vec::new(), Vec::new());
        for round in 0..opts.rounds {
            for (i, target) in targets.iter().enumerate() {
                let v = tls_client(opts, "bulk", target, &server, &extra);
                eprintln!("unix {name} round {} {target}: {v}", round + 1);
                if i == 0 {
                    over_tcp.push(v);
                } else {
                    over_unix.push(v);
                }
            }
        }
        let command = format!(
            "tls_client bulk unix:PATH|tcp://ADDR {} --duration {} --warmup {} (one switchboard serve on both)",
            extra.join(" "),
            opts.duration,
            opts.warmup
        );
        let (metric, unit, key) = if name == "small" {
            (
                "echo: 100 conn × 16 in flight × 64 B, Unix vs TCP",
                "msgs/s",
                "/msgs_per_s",
            )
        } else {
            (
                "bulk: 10 conn × 64 KiB, 4 in flight, Unix vs TCP",
                "MB/s",
                "/mb_per_s",
            )
        };
        report.paired(
            "unix",
            metric,
            unit,
            &column(&over_unix, |v| num(v, key)),
            &column(&over_tcp, |v| num(v, key)),
            Goal::None,
            &command,
        );
        raw.insert(name.into(), json!({"tcp": over_tcp, "unix": over_unix}));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    report.raw.insert("unix".into(), Value::Object(raw));
}

/// `switchboard serve` with everything an operator turns on (issue §7): `/metrics` on a port
/// the OS picks, the admin socket at `admin`, and the log at INFO (to /dev/null, as
/// [`start_server_with`] always sends it).
struct OpsServer {
    server: Server,
    admin: PathBuf,
    metrics: SocketAddr,
}

fn start_ops_server(opts: &Opts, admin: PathBuf) -> OpsServer {
    let path = admin.to_str().expect("UTF-8 temp path");
    let extra = ["--metrics", "127.0.0.1:0", "--admin", path];
    let mut server = start_server_with(opts, Side::Switchboard, &extra, "info");
    let metrics = printed(&mut server.proc, "metrics on http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("metrics address");
    OpsServer {
        server,
        admin,
        metrics,
    }
}

/// A connection to an admin socket, reads bounded by 10 s.
struct AdminConn(BufReader<std::os::unix::net::UnixStream>);

impl AdminConn {
    fn connect(path: &Path) -> AdminConn {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        AdminConn(BufReader::new(stream))
    }

    /// Sends `command` (ending in `--json`) and reads its one-line reply; the reply and the
    /// milliseconds from sending to its last byte.
    fn json(&mut self, command: &str) -> (String, f64) {
        let start = Instant::now();
        let stream = self.0.get_mut();
        writeln!(stream, "{command}").expect("write admin command");
        let mut line = String::new();
        self.0.read_line(&mut line).expect("admin reply");
        assert!(line.ends_with('\n'), "admin socket closed: {line:?}");
        (line, start.elapsed().as_secs_f64() * 1e3)
    }
}

/// The operator's `top`: an admin client asking `sessions --json` every 100 ms on its own
/// thread until [`Poller::finish`].
struct Poller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Value>,
}

impl Poller {
    fn start(path: &Path) -> Poller {
        use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
        let stop = Arc::new(AtomicBool::new(false));
        let mut conn = AdminConn::connect(path);
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut polls, mut max_ms) = (0u64, 0.0f64);
                // Bounded by the stop flag and by a count no run reaches (an hour of polls).
                while !stop.load(Ordering::Relaxed) && polls < 36_000 {
                    let (_, ms) = conn.json("sessions --json");
                    polls += 1;
                    max_ms = max_ms.max(ms);
                    std::thread::sleep(
                        Duration::from_millis(100)
                            .saturating_sub(Duration::from_secs_f64(ms / 1e3)),
                    );
                }
                json!({"polls": polls, "max_ms": max_ms})
            }
        });
        Poller { stop, thread }
    }

    fn finish(self) -> Value {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("poller thread")
    }
}

/// One `GET /metrics` on a new connection; the milliseconds to the last byte of the reply.
fn scrape_ms(addr: SocketAddr) -> f64 {
    use std::io::Read as _;
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write scrape");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read scrape");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "scrape failed: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
    ms
}

/// A 64 B ping-pong on one connection, one round trip per millisecond on its own thread, each
/// timed, until [`Pinger::finish`]; a session stalled by a listing shows as a long round trip.
struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, f64)>>,
}

impl Pinger {
    fn start(addr: SocketAddr) -> Pinger {
        use std::io::Read as _;
        use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream = std::net::TcpStream::connect(addr).expect("connect pinger");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (ping, mut pong) = ([7u8; 64], [0u8; 64]);
                let mut times = Vec::new();
                // Bounded by the stop flag and by ten minutes of round trips.
                while !stop.load(Ordering::Relaxed) && times.len() < 600_000 {
                    let start = Instant::now();
                    stream.write_all(&ping).expect("ping");
                    stream.read_exact(&mut pong).expect("pong");
                    times.push((start, start.elapsed().as_secs_f64() * 1e6));
                    std::thread::sleep(Duration::from_millis(1));
                }
                times
            }
        });
        Pinger { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, f64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("pinger thread")
    }
}

/// The most, and how many, of `times` that started in `[from, to)`.
fn max_between(times: &[(Instant, f64)], from: Instant, to: Instant) -> (f64, usize) {
    let window: Vec<f64> = times
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, rtt)| *rtt)
        .collect();
    (window.iter().copied().fold(0.0, f64::max), window.len())
}

/// What operating a server costs (issue §7), all in one run: throughput and ping-pong p99 of
/// a server with metrics, INFO logging and an admin client polling `sessions` every 100 ms
/// against one with all of it off (the "baseline" column), A B A B; idle memory per connection
/// likewise; and, with 19,200 idle connections, how long a full `sessions --json` and a
/// `GET /metrics` take and whether a ping-pong session stalls meanwhile. Not in the default set
/// (minutes of connections opened and closed): `--only ops`.
fn ops(opts: &Opts, report: &mut Report) {
    let dir = ScratchDir::new("e2e-ops");
    let mut started = 0;
    let mut admin_path = || {
        started += 1;
        dir.join(format!("admin-{started}.sock"))
    };
    let me = std::process::id().to_string();
    let mut raw = serde_json::Map::new();

    let on = start_ops_server(opts, admin_path());
    // The "baseline" slot is Switchboard with everything off.
    let servers = [
        (Side::Baseline, start_server(opts, Side::Switchboard, &[])),
        (Side::Switchboard, on.server),
    ];
    let with_poller = |s: &Server, side: Side, run: &dyn Fn(&Server) -> Value| {
        let poller = (side == Side::Switchboard).then(|| Poller::start(&on.admin));
        let mut v = run(s);
        if let Some(poller) = poller {
            v["poller"] = poller.finish();
        }
        v
    };
    let (c, p, size) = (100, 16, 64);
    let (off_tp, on_tp) = alternate_on(
        opts,
        "ops throughput (baseline: all off)",
        &servers,
        |s, side| {
            with_poller(s, side, &|s| {
                load_with(opts, s, c, p, size, &["--exclude-pid", &me])
            })
        },
    );
    let (off_lat, on_lat) = alternate_on(
        opts,
        "ops latency (baseline: all off)",
        &servers,
        |s, side| {
            with_poller(s, side, &|s| {
                load_with(opts, s, 1, 1, 64, &["--exclude-pid", &me])
            })
        },
    );
    drop(servers);
    let all_on = "all on vs all off";
    let on_command = "; all on: --metrics 127.0.0.1:0, --admin PATH polled `sessions --json` every 100 ms, RUST_LOG=info to /dev/null";
    report.paired(
        "ops",
        &format!("{c} conn × {p} in flight × {size} B, {all_on}"),
        "msgs/s",
        &column(&on_tp, |v| num(v, "/msgs_per_s")),
        &column(&off_tp, |v| num(v, "/msgs_per_s")),
        Goal::AtLeast(0.97),
        &format!("{}{on_command}", load_command(opts, c, p, size)),
    );
    report.paired(
        "ops",
        &format!("ping-pong 64 B p99, idle CPUs, {all_on}"),
        "µs",
        &column(&on_lat, |v| num(v, "/latency_us/p99")),
        &column(&off_lat, |v| num(v, "/latency_us/p99")),
        Goal::AtMost(1.03),
        &format!("{}{on_command}", load_command(opts, 1, 1, 64)),
    );
    raw.insert("throughput".into(), json!({"off": off_tp, "on": on_tp}));
    raw.insert("latency".into(), json!({"off": off_lat, "on": on_lat}));

    let total = if opts.quick { 1000 } else { 10_000 };
    let (mut off_mem, mut on_mem) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        let off = idle_cost(opts, start_server(opts, Side::Switchboard, &[]), total);
        let on = idle_cost(opts, start_ops_server(opts, admin_path()).server, total);
        eprintln!("ops memory round {}: off {off}; on {on}", round + 1);
        off_mem.push(off);
        on_mem.push(on);
    }
    let per = |v: &Value| num(v, "/bytes_per_conn");
    let mem_command = idle_cost_command(total);
    report.paired(
        "ops",
        &format!("{total} idle connections: RSS per connection, all on vs all off"),
        "B",
        &column(&on_mem, per),
        &column(&off_mem, per),
        Goal::None,
        &mem_command,
    );
    let rise: Vec<f64> = on_mem
        .iter()
        .zip(&off_mem)
        .map(|(a, b)| per(a) - per(b))
        .collect();
    report.single(
        "ops",
        &format!("{total} idle connections: RSS per connection, all on − all off"),
        "B",
        median(&rise),
        Goal::AbsAtMost(128.0),
        &mem_command,
    );
    raw.insert("memory".into(), json!({"off": off_mem, "on": on_mem}));

    raw.insert("listing".into(), ops_listing(opts, report, admin_path()));
    report.raw.insert("ops".into(), Value::Object(raw));
}

/// The listing half of [`ops`] (alone: `--only ops-listing`): an all-on server holding 19,200
/// idle connections (2,000 with `--quick`); per round, ten full `sessions --json` and then ten
/// `GET /metrics`, timed, while a ping-pong session runs, and its longest round trip during
/// the listings and during the scrapes against the second before each round. Replies are
/// checked after the timed windows, so that parsing them does not compete with the server.
fn ops_listing(opts: &Opts, report: &mut Report, admin: PathBuf) -> Value {
    let (total, processes) = if opts.quick { (2_000, 1) } else { (19_200, 3) };
    let on = start_ops_server(opts, admin);
    let pid = on.server.pid();
    std::thread::sleep(Duration::from_millis(300));
    let fds0 = open_fds(pid).expect("fds");
    let (mut clients, opened) = hold(opts, on.server.addr, total, processes, 2);
    let accepted = wait_fds(pid, fds0 + opened);
    std::thread::sleep(Duration::from_millis(500));
    let mut admin = AdminConn::connect(&on.admin);
    let pinger = Pinger::start(on.server.addr);
    let (mut list_ms, mut scrape, mut windows) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_reply = String::new();
    for round in 0..opts.rounds {
        std::thread::sleep(Duration::from_secs(1));
        let listing = Instant::now();
        for _ in 0..10 {
            let (reply, ms) = admin.json("sessions --json");
            list_ms.push(ms);
            last_reply = reply;
        }
        let scraping = Instant::now();
        for _ in 0..10 {
            scrape.push(scrape_ms(on.metrics));
        }
        windows.push((listing, scraping, Instant::now()));
        eprintln!(
            "ops listing round {}: sessions --json {:?} ms",
            round + 1,
            &list_ms[list_ms.len() - 10..]
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let times = pinger.finish();
    let reply: Value = serde_json::from_str(&last_reply).expect("sessions JSON");
    let listed = reply["sessions"].as_array().map_or(0, Vec::len) as f64;
    let rtts: Vec<Value> = windows
        .iter()
        .map(|&(listing, scraping, done)| {
            let before = max_between(&times, listing - Duration::from_secs(1), listing);
            let during_listings = max_between(&times, listing, scraping);
            let during_scrapes = max_between(&times, scraping, done);
            json!({
                "before_us": before.0, "n_before": before.1,
                "listings_us": during_listings.0, "n_listings": during_listings.1,
                "scrapes_us": during_scrapes.0, "n_scrapes": during_scrapes.1,
            })
        })
        .collect();
    for client in &mut clients {
        client.close_stdin(Duration::from_secs(20));
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let rounds = opts.rounds;
    let command = format!(
        "switchboard serve --metrics 127.0.0.1:0 --admin PATH (RUST_LOG=info); hold_clients ADDR --count {} ×{processes} (127.0.0.2..)",
        total / processes
    );
    let list_command = format!(
        "{command}; `sessions --json` (no limit) ×10 per round on one admin connection, {rounds} rounds"
    );
    // The ping-pong connection is one more session.
    report.single(
        "ops",
        &format!("sessions listed (of {opened} held + 1 ping-pong)"),
        "sessions",
        listed,
        Goal::AbsAtLeast(opened as f64 + 1.0),
        &list_command,
    );
    report.single(
        "ops",
        &format!(
            "full `sessions --json` at {listed}, p50 of {}",
            list_ms.len()
        ),
        "ms",
        median(&list_ms),
        Goal::AbsAtMost(50.0),
        &list_command,
    );
    report.single(
        "ops",
        &format!(
            "full `sessions --json` at {listed}, max of {}",
            list_ms.len()
        ),
        "ms",
        max(&list_ms),
        Goal::AbsAtMost(50.0),
        &list_command,
    );
    let scrape_command =
        format!("{command}; GET /metrics ×10 per round, a new connection each, {rounds} rounds");
    report.single(
        "ops",
        &format!("GET /metrics at {listed} sessions, p50 of {}", scrape.len()),
        "ms",
        median(&scrape),
        Goal::AbsAtMost(50.0),
        &scrape_command,
    );
    report.single(
        "ops",
        &format!("GET /metrics at {listed} sessions, max of {}", scrape.len()),
        "ms",
        max(&scrape),
        Goal::AbsAtMost(50.0),
        &scrape_command,
    );
    let column = |key: &str| -> Vec<f64> { rtts.iter().map(|r| num(r, key)).collect() };
    let ping_command = format!("{command}; one more connection, 64 B ping-pong every 1 ms");
    report.paired(
        "ops",
        "ping-pong 64 B max round trip during the listings vs the second before (per round)",
        "µs",
        &column("/listings_us"),
        &column("/before_us"),
        Goal::None,
        &ping_command,
    );
    report.paired(
        "ops",
        "ping-pong 64 B max round trip during the scrapes vs the second before (per round)",
        "µs",
        &column("/scrapes_us"),
        &column("/before_us"),
        Goal::None,
        &ping_command,
    );
    json!({
        "opened": opened, "accepted_all": accepted, "listed": listed,
        "list_ms": list_ms, "scrape_ms": scrape, "pingpong_max_per_round": rtts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throughput_row(ratios: &[f64]) -> Row {
        let mut report = Report {
            rows: Vec::new(),
            raw: serde_json::Map::new(),
        };
        let base = vec![1.0; ratios.len()];
        report.paired(
            "throughput",
            "msgs/s",
            "msgs/s",
            ratios,
            &base,
            Goal::AtLeast(1.0),
            "",
        );
        report.rows.pop().expect("one row")
    }

    #[test]
    fn a_verdict_is_resolved_only_when_enough_rounds_lie_on_one_side() {
        // Fifteen rounds, all but the last under the target (so the 4th to the 12th too):
        // missed, and settled.
        let mut under: Vec<f64> = (0..15).map(|i| 0.90 + 0.005 * f64::from(i)).collect();
        under[14] = 1.2;
        let row = throughput_row(&under);
        assert_eq!(row.met(), Some(false));
        assert_eq!(row.resolved(), Some(true));
        // The same median with rounds on both sides of the target: not settled.
        let mut straddling = under.clone();
        for r in &mut straddling[9..] {
            *r = 1.05;
        }
        let row = throughput_row(&straddling);
        assert_eq!(row.met(), Some(false));
        assert_eq!(row.resolved(), Some(false));
        // Five rounds all under the target cover the median with only 93.75%, which is enough;
        // three give 75%, which is not.
        assert_eq!(throughput_row(&under[..5]).resolved(), Some(true));
        assert_eq!(throughput_row(&under[..3]).resolved(), Some(false));
        // An interval whose low end is the target itself: every round meets it, settled.
        let at_target = vec![1.0, 1.0, 1.0, 1.02, 1.05];
        let row = throughput_row(&at_target);
        assert_eq!((row.met(), row.resolved()), (Some(true), Some(true)));
    }

    #[test]
    fn a_callgrind_dump_gives_its_total_and_the_calls_to_one_function() {
        // The shape callgrind writes: names compressed to `(id)` after their first use, `fn` and
        // `cfn` sharing ids, a `calls=` line after each `cfn=`.
        let dump = "\
version: 1
events: Ir
fn=(1) poll
10 5
cfn=(2) send
calls=7 0
10 70
cfn=(3) recv
calls=9 0
11 90
fn=(4) flush
cfn=(2)
calls=3 0
12 30
fn=(2)
0 40
summary: 235
totals: 235
";
        assert_eq!(callgrind_counts(dump, &["send"]), (235, 10));
        assert_eq!(callgrind_counts(dump, &["recv", "__libc_recv"]), (235, 9));
        assert_eq!(callgrind_counts(dump, &["sendmsg"]), (235, 0));
    }
}
