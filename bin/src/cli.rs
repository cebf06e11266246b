//! The command line: subcommands, their options and their `--help` texts.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard::{Cidr, ProxyVersion};

/// Switchboard: TCP servers, clients and a load generator on actix actors.
///
/// Results go to stdout, logs to stderr (set RUST_LOG to change what is logged). A failure
/// prints one line on stderr and exits with status 1; a bad invocation exits with status 2.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

// Parsed once at start and matched once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Serve(ServeArgs),
    Connect(ConnectArgs),
    Send(SendArgs),
    Load(LoadArgs),
    Ctl(CtlArgs),
    Top(TopArgs),
}

/// How bytes on a connection are cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CodecKind {
    /// Bytes as they arrive, no framing.
    Raw,
    /// UTF-8 text lines ending in `\n` (`\r\n` accepted).
    Lines,
    /// A 4-byte big-endian length, then the payload.
    Frames,
}

impl CodecKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CodecKind::Raw => "raw",
            CodecKind::Lines => "lines",
            CodecKind::Frames => "frames",
        }
    }
}

/// What `serve` does with its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Every line goes to every other client.
    Chat,
    /// Every message is written back to its sender.
    Echo,
    /// Receives uploads from `switchboard send`.
    Files,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Chat => "chat",
            Mode::Echo => "echo",
            Mode::Files => "files",
        }
    }
}

/// Run a server: chat, echo or file uploads.
///
/// Once bound, prints exactly one line on stdout, `listening on IP:PORT` (the real port when
/// --port is 0), and flushes it. On SIGINT or SIGTERM it stops accepting, closes every session
/// gracefully (what was read is answered, pending writes are flushed), aborts what is still
/// open after --drain-timeout, prints one summary line and exits 0:
///
///   shutdown: served N connections, X bytes in, Y bytes out, drained D, aborted A, unflushed U bytes,
///   M messages dropped for slow consumers
///
/// A second signal during the drain aborts the remaining sessions at once.
///
/// Modes:
///
///   chat   Lines only. A client's line goes to every other client as `[#ID] text`; the
///          sender does not get it back. A new client is greeted with `* welcome #ID, N online`;
///          the others see `* #ID joined` and later `* #ID left`. Lines typed on the server's
///          stdin go to everyone as `[server] text`. Works with `switchboard connect` and plain
///          line clients (nc, telnet). A client too slow to take a message misses it (counted).
///
///   echo   Every message is written back as it came (with --codec raw: a pure byte echo, for
///          any TCP client or load tool).
///
///   files  Frames only. Receives uploads from `switchboard send` into --dir, several at once on
///          different workers. Data goes to a hidden temporary file in --dir and gets its final
///          name only once its size and SHA-256 match what the sender announced; the server then
///          confirms the SHA-256. Names with `/`, `\`, `..`, a leading `.` or control characters,
///          empty names and names that already exist are refused (nothing is ever overwritten).
///          A failed or cut-off upload leaves nothing behind. Files are not fsynced.
///
/// Examples:
///
///   switchboard serve                                        chat on 127.0.0.1:7878
///   switchboard serve --listen 127.0.0.1:7878 --listen '[::1]:7878' --listen unix:/tmp/sb.sock
///   switchboard serve --listen unix:@switchboard             a Linux abstract socket name
///   switchboard serve --tls-cert cert.pem --tls-key key.pem [--tls-client-ca ca.pem] [--alpn x]
///   switchboard serve --proxy-protocol --proxy-from 127.0.0.1/32    behind HAProxy
///   switchboard serve --mode echo --codec raw --reuseport 2 --port 7878   (twice: both share it)
///   switchboard serve --mode echo --port 7878 --admin /tmp/sb.admin
///   switchboard serve --mode echo --port 7878 --takeover /tmp/sb.admin   restart, no refused client
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ServeArgs {
    /// Address to listen on (0.0.0.0 or :: for every interface).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,

    /// Port to listen on; 0 lets the OS choose (the real port is printed).
    #[arg(long, short, value_name = "P", default_value_t = 7878)]
    pub(crate) port: u16,

    /// Listen here instead of --bind/--port; repeatable, all sharing one connection limit,
    /// registry and worker pool: `127.0.0.1:7878`, `[::1]:7878`, `unix:/run/sb.sock`,
    /// `unix:@abstract-name`. Each prints its own `listening on` line, with its scheme.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Vec<String>,

    /// TLS: the certificate chain (PEM) every listen address serves; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// TLS: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// TLS: require client certificates that chain to a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// TLS: ALPN protocols to offer, comma-separated, in order of preference.
    #[arg(
        long,
        value_name = "P,...",
        value_delimiter = ',',
        requires = "tls_cert"
    )]
    pub(crate) alpn: Vec<String>,

    /// TLS: refuse session resumption (by default clients may resume with a session ticket,
    /// a shorter handshake; with this every handshake is a full one).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_no_resumption: bool,

    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's `send-proxy` / `send-proxy-v2`
    /// send) first on every connection, before TLS; the client it names is the session's
    /// peer (and what --max-connections-per-ip counts). Needs --proxy-from, e.g.
    /// `--proxy-protocol --proxy-from 127.0.0.1/32,10.0.0.0/8`. A connection without a valid
    /// header, or from a peer not on the list, is closed.
    #[arg(long, requires = "proxy_from")]
    pub(crate) proxy_protocol: bool,

    /// The proxies allowed to send PROXY headers: IP networks, comma-separated
    /// (`10.0.0.0/8`, `::1/128`; a bare address is a network of one).
    #[arg(
        long,
        value_name = "CIDR,...",
        value_delimiter = ',',
        requires = "proxy_protocol"
    )]
    pub(crate) proxy_from: Vec<Cidr>,

    /// Bind N sockets on each TCP address with SO_REUSEPORT (the kernel spreads connections
    /// over them), which also lets other `serve --reuseport` processes of this user share the
    /// port. Without it a second server on the port fails with "address in use".
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) reuseport: Option<u16>,

    /// Give up on a connection whose handshakes (PROXY header, TLS) take longer than this.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) handshake_timeout: Duration,

    /// Worker threads the sessions run on [default: one per core].
    #[arg(long, short, value_name = "N")]
    pub(crate) workers: Option<usize>,

    /// Latency mode: a worker that just moved bytes keeps polling its sockets, without
    /// blocking, for N microseconds before it sleeps, so a request arriving within that window
    /// does not wait for a thread (or vCPU) to wake. Costs a full core per busy worker while
    /// traffic lasts (idle workers still sleep); pair it with --workers below the core count.
    /// At most 100000 [default: 0, off].
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub(crate) spin_us: u64,

    /// Accept on a worker thread instead of the listener's own: a connection that lands on
    /// that worker starts without a hand-off, so connection-heavy loads go faster, but a
    /// handler that keeps that worker busy delays accepting.
    #[arg(long)]
    pub(crate) accept_on_worker: bool,

    /// Fix each TCP connection's kernel receive buffer (SO_RCVBUF) at this many bytes; the
    /// kernel books twice that and stops tuning it [default: the kernel's, grown with the
    /// traffic up to net.ipv4.tcp_rmem].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub(crate) recv_buffer: Option<u32>,

    /// Fix each TCP connection's kernel send buffer (SO_SNDBUF) at this many bytes: with
    /// --recv-buffer, the most a client that stops reading can hold in the server's kernel
    /// [default: the kernel's, up to net.ipv4.tcp_wmem].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub(crate) send_buffer: Option<u32>,

    /// What to do with clients.
    #[arg(long, short, value_enum, default_value_t = Mode::Chat)]
    pub(crate) mode: Mode,

    /// Framing [default: lines; files mode: frames, the only one it takes; chat mode takes
    /// only lines].
    #[arg(long, short, value_enum)]
    pub(crate) codec: Option<CodecKind>,

    /// Where files mode stores uploads (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./received")]
    pub(crate) dir: PathBuf,

    /// Most clients at once; more wait in the kernel backlog [default: the descriptor limit
    /// less 64].
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,

    /// Longest line or frame accepted, in bytes; a client over it is disconnected
    /// [default: lines 65536, frames 1048576].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_frame: Option<usize>,

    /// Close a connection on which nothing moved for this long; 0 turns it off.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub(crate) idle_timeout: Duration,

    /// Close a connection whose partial line or frame has waited this long for the rest
    /// (slowloris); 0 turns it off.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) frame_timeout: Duration,

    /// Most clients at once from one IP address, counted with --max-connections; a client
    /// over it is closed at once [default: off: clients behind NAT or a proxy share one
    /// address]. The defence against one host holding every slot.
    #[arg(long, value_name = "N")]
    pub(crate) max_connections_per_ip: Option<usize>,

    /// On SIGINT/SIGTERM, how long sessions get to close gracefully before they are aborted.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) drain_timeout: Duration,

    /// Chat: a client that takes nothing of what it is sent for this long is a slow consumer
    /// and misses lines (counted) until it reads again; until then, senders wait for it.
    /// Must be above 0.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub(crate) slow_consumer_timeout: Duration,

    /// Chat mode only: join the cluster on this Redis (redis://HOST:PORT), so the room spans
    /// every node on it. Adds `/count`, `/who` and `/msg NODE#N text`; ids become NODE#N.
    #[arg(long, value_name = "URL")]
    pub(crate) cluster: Option<String>,

    /// This node's name in the cluster (letters, digits, '-', '_', '.') [default: node-PID].
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub(crate) node_name: Option<String>,

    /// Serve OpenMetrics at http://ADDR/metrics (e.g. 127.0.0.1:9100; port 0: the OS chooses,
    /// printed as `metrics on ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,

    /// Open the admin socket (for `ctl` and `top`): a Unix socket PATH (mode 0600), or
    /// tcp:HOST:PORT (loopback only: anyone who connects steers the server). Printed as
    /// `admin on ADDR`.
    #[arg(long, value_name = "PATH")]
    pub(crate) admin: Option<String>,

    /// Restart without dropping a connection: take the listening sockets of the server whose
    /// admin socket is ADMIN_PATH (a Unix socket), start accepting on them, then tell it to
    /// stop accepting, drain within its --drain-timeout and exit. The listen options
    /// (--listen, or --bind/--port; port 0 matches any), TLS and --proxy-protocol must be the
    /// old server's. Its admin socket is taken too (unless --admin names another), so the
    /// new server can be taken over in turn. Fails (exit 1) and leaves the old server serving
    /// when anything does not match.
    #[arg(long, value_name = "ADMIN_PATH")]
    pub(crate) takeover: Option<PathBuf>,
}

/// Run one admin command on a running server, or an interactive prompt without one.
///
/// ADMIN is the server's --admin: a Unix socket path or tcp:HOST:PORT. The reply is printed
/// on stdout; an `error: ...` reply exits 1. Without a command, commands are read at a prompt
/// (line editing and history) until end of input or `quit`. `help` lists the commands.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CtlArgs {
    /// The admin socket: a path, or tcp:HOST:PORT.
    #[arg(value_name = "ADMIN")]
    pub(crate) admin: String,

    /// The command and its arguments (e.g. `sessions --sort bytes --limit 10`).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) command: Vec<String>,

    /// Give up on a reply after this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
}

/// A live view of a running server, on its admin socket.
///
/// Refreshed every --interval: totals and rates (accepts/s, bytes/s in and out, drops/s), a
/// load bar per worker, and the busiest sessions by bytes/s. Keys: s changes the sort, up and
/// down select a session, k kicks it, p pauses or resumes accepting, q or Ctrl-C quits. The
/// terminal is restored on exit, also when the admin connection is lost.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The admin socket: a path, or tcp:HOST:PORT.
    #[arg(value_name = "ADMIN")]
    pub(crate) admin: String,

    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub(crate) interval: Duration,
}

/// Interactive client: stdin lines are sent, received data is printed.
///
/// Each line read from stdin is sent as one message (lines: the line; raw: the line and its
/// `\n`; frames: the line as one frame). Received data goes to stdout (lines and frames: one
/// per line; raw: as it arrives). `connected to IP:PORT` and `disconnected: REASON` are
/// printed on stderr.
///
/// Exits 0 when the server closes the connection, or when stdin ends: then it flushes what is
/// left to send, waits until the server has been quiet for --grace (at most 10 times that),
/// and closes. A connection lost to an error (reset, bad data) exits 1.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ConnectArgs {
    /// The server: `HOST:PORT`, `tls://HOST:PORT`, `unix:/path`, `unix:@abstract`.
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,

    #[command(flatten)]
    pub(crate) client: ClientOptions,

    /// Framing.
    #[arg(long, short, value_enum, default_value_t = CodecKind::Lines)]
    pub(crate) codec: CodecKind,

    /// Give up connecting after this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,

    /// After stdin ends, how long the server must stay quiet before the connection is closed.
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = parse_secs)]
    pub(crate) grace: Duration,
}

/// How `connect`, `send` and `load` reach a server: TLS trust and identity, a PROXY header.
#[derive(Debug, Args)]
pub(crate) struct ClientOptions {
    /// TLS (for `tls://` targets): trust the CAs in this PEM file [default: the Mozilla roots].
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,

    /// TLS: present this client certificate (PEM); needs --key and --ca.
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca"])]
    pub(crate) cert: Option<PathBuf>,

    /// TLS: the private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,

    /// Send a PROXY protocol header first on each connection (before TLS), naming its own
    /// addresses, as a proxy would: for a server run with --proxy-protocol.
    #[arg(long, value_name = "v1|v2")]
    pub(crate) proxy_header: Option<ProxyVersion>,
}

/// Upload files to `switchboard serve --mode files`.
///
/// Each file goes over its own connection, up to --parallel at once, under its base name. The
/// SHA-256 is computed while the file is read (never all in memory) and must match the one the
/// server confirms. A progress bar (bytes, rate, ETA) is drawn when stdout is a terminal;
/// otherwise a plain progress line is printed every second. The result of each file and a
/// summary follow on stdout:
///
///   ok      NAME  SIZE bytes  sha256 HEX
///   FAILED  NAME: REASON
///   sent N of M files, B bytes in S s (R MiB/s)
///
/// Exits 1 if any file failed. The wire protocol is in the source (bin/src/protocol.rs):
///   FILE <size> <name>  ->  READY | ERR <reason>
///   <size bytes in frames>, END <sha256>  ->  OK <sha256> | ERR <reason>
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct SendArgs {
    /// The server: `HOST:PORT`, `tls://HOST:PORT`, `unix:/path`.
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,

    #[command(flatten)]
    pub(crate) client: ClientOptions,

    /// Files to upload.
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,

    /// Uploads at once, one connection each.
    #[arg(long, short, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) parallel: u16,

    /// Give up connecting after this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
}

/// Load-test an echo server (`switchboard serve --mode echo`, or any echo server).
///
/// Opens --connections connections (on a pool of worker threads, through Switchboard's own
/// Connector and Session), keeps --pipeline messages of --size bytes in flight on each, and
/// checks that every echoed byte is the one sent (with --codec raw the echo may come back split
/// or merged any way: the byte stream is compared). Each message is different (it depends on
/// the connection and its sequence number), so a lost, reordered or mixed-up reply is caught.
///
/// Stops by itself: after --duration (default 10 s) or once --messages replies arrived (then
/// also when no reply came for 10 s). Connections start sending as soon as they are up; the
/// duration counts from when the last one is up. Throughput is messages (and payload bytes)
/// echoed per second of traffic, latency the round trip of each message (HDR histogram).
/// Progress goes to stderr once a second unless --json.
///
/// Prints a report on stdout, or with --json one JSON object: connections, connect_errors,
/// connect_ms {p50, p99, max}, messages, bytes, errors (+ error_detail), elapsed_s,
/// msgs_per_s, mb_per_s (10^6 payload bytes/s, one way), latency_us {p50, p90, p99, p999,
/// max, mean}. Exits 1 if any connection failed or any payload did not match.
///
/// Past ~28,000 connections to one address the local ports run out: spread the source
/// addresses with --bind-ip 127.0.0.2,127.0.0.3,... (each adds its own port range).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct LoadArgs {
    /// The echo server: `HOST:PORT`, `tls://HOST:PORT`, `unix:/path`.
    #[arg(value_name = "TARGET", required_unless_present = "compare")]
    pub(crate) target: Option<String>,

    #[command(flatten)]
    pub(crate) client: ClientOptions,

    /// Draw the latency distribution as an HDR percentile plot (SVG) into FILE; with
    /// --compare, the two runs overlaid.
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,

    /// Write the latency histogram (microseconds) to FILE in HdrHistogram's interval-log
    /// format, for HdrHistogram's tools and --compare.
    #[arg(long, value_name = "FILE")]
    pub(crate) hdr: Option<PathBuf>,

    /// Compare two runs saved with --hdr: print their percentiles side by side (and plot them
    /// with --plot); no load is generated.
    #[arg(long, value_names = ["A.hdr", "B.hdr"], num_args = 2, conflicts_with_all = ["target", "hdr"])]
    pub(crate) compare: Vec<PathBuf>,

    /// Connections to open.
    #[arg(long, short, value_name = "C", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: u32,

    /// Run for this long [default: 10].
    #[arg(long, short, value_name = "S", value_parser = parse_secs, conflicts_with = "messages")]
    pub(crate) duration: Option<Duration>,

    /// Stop after this many replies in total.
    #[arg(long, short, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) messages: Option<u64>,

    /// Payload size of each message in bytes.
    #[arg(long, short, value_name = "B", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub(crate) size: u32,

    /// Messages in flight on each connection.
    #[arg(long, short, value_name = "P", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) pipeline: u32,

    /// Framing; must match the server's.
    #[arg(long, value_enum, default_value_t = CodecKind::Lines)]
    pub(crate) codec: CodecKind,

    /// Print one JSON object instead of the report, and no progress.
    #[arg(long)]
    pub(crate) json: bool,

    /// Worker threads for the client sessions [default: one per core].
    #[arg(long, short, value_name = "N")]
    pub(crate) workers: Option<usize>,

    /// Local addresses to connect from, used in turn (repeat or comma-separate).
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub(crate) bind_ip: Vec<IpAddr>,

    /// Open at most this many connections per second [default: as fast as possible, 256
    /// connects in flight].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_rate: Option<u32>,

    /// Give up on a connection attempt after this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) timeout: Duration,
}

/// Seconds as a decimal number (`2`, `0.5`); `0` is allowed and means zero.
fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!(
            "`{text}` is not a number of seconds between 0 and 1e9"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse_with_fractions_and_refuse_junk() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("inf").is_err());
    }
}
