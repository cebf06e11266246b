//! Support for Switchboard's benchmarks: reading a process's CPU time and memory from `/proc`,
//! medians, descriptor limits, sockets bound to a chosen source address, and the JSON report a
//! load run prints.
//!
//! The binaries in `src/bin` are the end-to-end pieces:
//!
//! | binary | what it is |
//! |---|---|
//! | `baseline_echo` | the yardstick: a plain tokio echo server (accept, spawn, read, write back) |
//! | `scale_server` | a Switchboard echo server on the library that times registry count/list/broadcast on demand |
//! | `load_client` | pipelined echo load (throughput, ping-pong latency, bandwidth) printing one JSON report |
//! | `accept_rate` | connect, one-byte echo, close, N at a time, for a while: connections/s |
//! | `hold_clients` | opens N idle connections from a source-address range and holds them |
//! | `e2e` | runs every scenario A/B/A/B against the baseline and prints the table |
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Latency percentiles of a load run, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median round trip.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest round trip seen.
    pub max: f64,
}

/// What one load run measured; the same fields `switchboard load --json` prints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// Echoed messages per second.
    pub msgs_per_s: f64,
    /// Echoed payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Round-trip latency of each message.
    pub latency_us: Latency,
    /// Connections that failed (connect, read or write errors).
    pub errors: u64,
    /// Messages echoed in the measured window.
    #[serde(default)]
    pub messages: u64,
    /// Length of the measured window in seconds.
    #[serde(default)]
    pub seconds: f64,
    /// The server's CPU seconds over the window, when its PID was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// The load client's own CPU seconds over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_s: Option<f64>,
    /// CPU seconds every other user process used over the window: how much other work
    /// disturbed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_cpu_s: Option<f64>,
    /// The server's context switches (all its threads, voluntary and not) over the window,
    /// when its PID was given: how often its threads slept and woke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_context_switches: Option<u64>,
    /// Messages echoed on the slowest and the fastest connection: how fairly the server
    /// shares itself between connections.
    #[serde(default)]
    pub messages_per_connection: (u64, u64),
    /// With `load_client --per-connection`: each connection's client port and messages
    /// echoed, busiest first, to find which sessions a server favours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionCount>,
}

/// One connection's share of a [`LoadReport`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConnectionCount {
    /// The client's local port (the server sees it as the peer's port).
    pub port: u16,
    /// Messages echoed in the measured window.
    pub messages: u64,
    /// Reads that completed at least one message in the measured window: `messages / reads` is
    /// about how many answers came together on this connection.
    #[serde(default)]
    pub reads: u64,
}

/// A process's CPU time so far (user + system, all threads), in seconds, from `/proc/PID/stat`.
///
/// # Errors
///
/// The process is gone or its stat line cannot be parsed.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc stat"))
    };
    let ticks = parse(11)? + parse(12)?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// A process's context switches so far, voluntary and involuntary, summed over its threads
/// (`/proc/PID/task/*/status`; threads that already ended are not counted).
///
/// # Errors
///
/// The process is gone.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ends between the listing and the read is skipped.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// CPU seconds used so far by every user process on the machine except `exclude` (user +
/// system time, plus the time of their children already reaped, from each `/proc/PID/stat`;
/// kernel threads are left out, since they do this run's network work too). Sampled around a
/// run, it shows how much other work shared the machine.
///
/// # Errors
///
/// `/proc` cannot be listed.
pub fn others_cpu_seconds(exclude: &[u32]) -> io::Result<f64> {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if exclude.contains(&pid) || pid == 2 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': ppid is index 1; utime, stime, cutime, cstime are indexes 11 to 14.
        if fields.get(1) == Some(&"2") {
            continue;
        }
        ticks += (11..=14)
            .filter_map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum::<u64>();
    }
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The kernel's clock ticks per second (`_SC_CLK_TCK`), the unit of `/proc` CPU times.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A process's resident set size in KiB, from `VmRSS` in `/proc/PID/status`.
///
/// # Errors
///
/// The process is gone or has no `VmRSS` line.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc status"))
}

/// Number of descriptors a process has open, from `/proc/PID/fd`.
///
/// # Errors
///
/// The process is gone.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The median of `values` (the mean of the middle two for an even count); `NaN` when empty.
///
/// # Examples
///
/// ```
/// assert_eq!(switchboard_benches::median(&[3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(switchboard_benches::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(values: &[f64]) -> f64 {
    let sorted = sorted_numbers(values);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A distribution-free confidence interval for the median of `values`: the `k`-th smallest and
/// `k`-th largest value, with `k` the largest for which the interval covers the median with at
/// least `wanted` probability (for independent rounds, whatever their distribution: the count
/// of values below the median is Binomial(n, ½)). Returns `(low, high, coverage)`; with too few
/// values for `wanted` (5 give at most 93.75%) it is the whole range and the coverage it has.
/// `None` for fewer than two values.
///
/// # Examples
///
/// ```
/// use switchboard_benches::median_interval;
/// let rounds: Vec<f64> = (1..=15).map(f64::from).collect();
/// let (low, high, coverage) = median_interval(&rounds, 0.95).unwrap();
/// assert_eq!((low, high), (4.0, 12.0));
/// assert!(coverage >= 0.95);
/// // Five rounds cannot give 95%: the range, at 1 − 2/32.
/// assert_eq!(median_interval(&rounds[..5], 0.95), Some((1.0, 5.0, 0.9375)));
/// ```
pub fn median_interval(values: &[f64], wanted: f64) -> Option<(f64, f64, f64)> {
    let sorted = sorted_numbers(values);
    let n = sorted.len();
    if n < 2 {
        return None;
    }
    // The interval [x(k), x(n+1−k)] misses the median with probability 2·P(Bin(n, ½) ≤ k−1).
    // P(Bin = j) is kept as a logarithm, stepped by (n−j)/(j+1): ½ⁿ itself underflows past
    // n = 1074.
    let mut ln_p = -(n as f64) * std::f64::consts::LN_2;
    let mut below = ln_p.exp();
    let (mut k, mut coverage) = (1, 1.0 - 2.0 * below);
    while k < n / 2 {
        ln_p += ((n - k + 1) as f64 / k as f64).ln();
        let through_k = below + ln_p.exp();
        let wider = 1.0 - 2.0 * through_k;
        if wider < wanted {
            break;
        }
        (below, k, coverage) = (through_k, k + 1, wider);
    }
    Some((sorted[k - 1], sorted[n - k], coverage))
}

/// `values` without NaNs, in ascending order.
fn sorted_numbers(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted
}

/// Raises the soft descriptor limit to the hard one; returns the new soft limit. The library's
/// own function: nothing else of Switchboard runs in the baseline.
pub use switchboard::raise_fd_limit as raise_nofile;

/// The `index`-th loopback source address of a range starting at `127.0.0.first`, wrapping
/// inside `127.0.0.first ..= 127.0.0.last` (then on to `127.0.1.x`, and so on).
///
/// # Examples
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// let ip = switchboard_benches::loopback_source(2, 2, 1);
/// assert_eq!(ip, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
/// let ip = switchboard_benches::loopback_source(2, 2, 2);
/// assert_eq!(ip, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
/// ```
pub fn loopback_source(first: u32, count: u32, index: u32) -> IpAddr {
    let n = first + index % count.max(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, (n >> 8) as u8, (n & 0xff) as u8))
}

/// Connects to `server` from `source` (port chosen at connect time, so one source address
/// serves every destination port: `IP_BIND_ADDRESS_NO_PORT`), as a tokio stream with
/// `TCP_NODELAY` on.
///
/// # Errors
///
/// The socket, bind or connect error.
pub async fn connect_from(
    source: Option<IpAddr>,
    server: SocketAddr,
) -> io::Result<tokio::net::TcpStream> {
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        set_bind_no_port(&socket);
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn set_bind_no_port(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option value of the right size. Failure only means
    // the port is chosen at bind time, which still works for the address counts used here.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Parses a duration given in seconds, possibly fractional (`5`, `0.5`).
///
/// # Errors
///
/// Not a non-negative number.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {text}"))
}

/// Why [`Args::check`] stops a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgProblem {
    /// `--help` or `-h`.
    Help,
    /// An argument the tool does not take.
    Unknown(String),
    /// An option that takes a value came last.
    MissingValue(String),
}

impl std::fmt::Display for ArgProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgProblem::Help => f.write_str("help asked for"),
            ArgProblem::Unknown(arg) => write!(f, "unknown argument `{arg}`"),
            ArgProblem::MissingValue(arg) => write!(f, "{arg} needs a value"),
        }
    }
}

/// Minimal `--name value` argument reading for the bench binaries (no parser dependency).
#[derive(Debug)]
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// This process's arguments, less the program name.
    pub fn from_env() -> Args {
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// Arguments from a list (for tests).
    pub fn from_vec(args: Vec<String>) -> Args {
        Args { args }
    }

    /// Whether the flag `--name` is present.
    pub fn flag(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The value after `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The value after `--name` parsed, or `default`.
    ///
    /// # Panics
    ///
    /// The value does not parse (a usage error in a bench tool).
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.value(name) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value for {name}: {v}")),
            None => default,
        }
    }

    /// Exits with `usage` for `--help` (status 0) or for an argument that is none of
    /// `flags` (switches) or `valued` (each followed by its value): status 2, so a mistyped
    /// option stops the tool instead of being ignored.
    pub fn check(&self, usage: &str, flags: &[&str], valued: &[&str]) {
        match self.problem(flags, valued) {
            None => {}
            Some(ArgProblem::Help) => {
                println!("{usage}");
                std::process::exit(0);
            }
            Some(problem) => {
                eprintln!("{problem}\n\n{usage}");
                std::process::exit(2);
            }
        }
    }

    /// For tools that take `HOST:PORT` first: [`check`](Args::check)s the options after it
    /// and returns the address, or exits with `usage` (status 2) when it is missing or does
    /// not parse.
    pub fn address_then_check(
        &self,
        usage: &str,
        flags: &[&str],
        valued: &[&str],
    ) -> std::net::SocketAddr {
        if matches!(self.args.first().map(String::as_str), Some("--help" | "-h")) {
            println!("{usage}");
            std::process::exit(0);
        }
        let Some(text) = self.positional() else {
            eprintln!("HOST:PORT comes first\n\n{usage}");
            std::process::exit(2);
        };
        let Ok(address) = text.parse() else {
            eprintln!("`{text}` is not an address (HOST:PORT, an IP address)\n\n{usage}");
            std::process::exit(2);
        };
        Args {
            args: self.args[1..].to_vec(),
        }
        .check(usage, flags, valued);
        address
    }

    /// What [`check`](Args::check) stops for, if anything.
    pub fn problem(&self, flags: &[&str], valued: &[&str]) -> Option<ArgProblem> {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Some(ArgProblem::Help);
            }
            if valued.contains(&arg.as_str()) {
                if args.next().is_none() {
                    return Some(ArgProblem::MissingValue(arg.clone()));
                }
            } else if !flags.contains(&arg.as_str()) {
                return Some(ArgProblem::Unknown(arg.clone()));
            }
        }
        None
    }

    /// The first argument, when it is not a flag (tools take their address first).
    pub fn positional(&self) -> Option<&str> {
        self.args
            .first()
            .filter(|a| !a.starts_with("--"))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(open_fds(pid).unwrap() > 0);
        assert!(others_cpu_seconds(&[pid]).unwrap() >= 0.0);
    }

    #[test]
    fn median_interval_takes_the_order_statistics_the_binomial_allows() {
        // Ten rounds: P(Bin(10, ½) ≤ 1) = 11/1024, so the 2nd and 9th values cover 97.9%; the
        // 3rd and 8th would cover only 89.1%.
        let rounds = [0.9, 1.3, 0.7, 1.0, f64::NAN, 1.1, 0.8, 1.2, 0.6, 1.4, 0.5];
        let (low, high, coverage) = median_interval(&rounds, 0.95).unwrap();
        assert_eq!((low, high), (0.6, 1.3));
        assert!((coverage - (1.0 - 22.0 / 1024.0)).abs() < 1e-12);
        let (low, high, coverage) = median_interval(&rounds, 0.85).unwrap();
        assert_eq!((low, high), (0.7, 1.2));
        assert!((coverage - (1.0 - 112.0 / 1024.0)).abs() < 1e-12);
        assert_eq!(median_interval(&[1.0], 0.95), None);
        // Past where ½ⁿ underflows: still the order statistics around the middle, not the
        // middle values alone (the 95% interval of 2,001 rounds is about ±44 around the 1,001st).
        let many: Vec<f64> = (0..2001).map(f64::from).collect();
        let (low, high, coverage) = median_interval(&many, 0.95).unwrap();
        assert!((940.0..=970.0).contains(&low) && (1030.0..=1060.0).contains(&high));
        assert!((0.95..0.96).contains(&coverage));
    }

    #[test]
    fn args_values_and_positional() {
        let args = Args::from_vec(
            ["127.0.0.1:1", "--connections", "4", "--quick"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(args.get("--connections", 1usize), 4);
        assert_eq!(args.get("--size", 64usize), 64);
        assert_eq!(args.positional(), Some("127.0.0.1:1"));
    }

    #[test]
    fn args_check_finds_help_unknown_and_missing_values() {
        let of = |list: &[&str]| Args::from_vec(list.iter().map(|s| s.to_string()).collect());
        let (flags, valued) = (&["--quick"][..], &["--rounds"][..]);
        assert_eq!(
            of(&["--quick", "--rounds", "3"]).problem(flags, valued),
            None
        );
        assert_eq!(
            of(&["--rounds", "3", "-h"]).problem(flags, valued),
            Some(ArgProblem::Help)
        );
        assert_eq!(
            of(&["--rounds", "3", "--round", "2"]).problem(flags, valued),
            Some(ArgProblem::Unknown("--round".into()))
        );
        assert_eq!(
            of(&["--quick", "--rounds"]).problem(flags, valued),
            Some(ArgProblem::MissingValue("--rounds".into()))
        );
        // A value that looks like a flag is still the option's value.
        assert_eq!(of(&["--rounds", "--quick"]).problem(flags, valued), None);
    }
}
