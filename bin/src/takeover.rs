//! `serve --takeover ADMIN_PATH`: receive a running server's sockets, check them against this
//! server's options, and, once this server accepts on them, tell the old one to drain.
//!
//! The old server keeps accepting until the commit, so whatever fails here (no server, a
//! refusal, options that differ) leaves it serving and this process exits 1 before binding.

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use switchboard::{
    handover::{HandedSocket, SocketDescription, SocketRole, Takeover},
    IntoTarget as _, StdListener, Target, UnixTarget,
};

use crate::cli::ServeArgs;

/// How long each step of the exchange with the old server may take.
const STEP: Duration = Duration::from_secs(10);

/// A hand-over received and checked, not yet committed.
pub(crate) struct Received {
    takeover: Takeover,
    path: PathBuf,
    /// Sockets clients connect to.
    pub(crate) listen: Vec<StdListener>,
    /// The old server's admin socket, when this server takes it over.
    pub(crate) admin: Option<(String, StdListener)>,
}

/// Connects to the old server's admin socket and takes its sockets, checked against `args`.
/// Runs before any thread starts, like socket activation.
pub(crate) fn receive(path: &Path, args: &ServeArgs) -> anyhow::Result<Received> {
    let mut takeover = Takeover::connect(path, STEP)?;
    let sockets = takeover.take_sockets();
    let (listen, admin): (Vec<HandedSocket>, Vec<HandedSocket>) = sockets
        .into_iter()
        .partition(|s| s.description.role == SocketRole::Listen);
    let described: Vec<&SocketDescription> = listen.iter().map(|s| &s.description).collect();
    check_listen(&described, args)?;
    check_handshakes(&described, args)?;
    // The admin socket comes along unless this server is told to open another.
    let takes_admin = match args.admin.as_deref() {
        None => true,
        Some(admin) => Path::new(admin) == path,
    };
    let admin = admin
        .into_iter()
        .find(|s| takes_admin && s.description.address.starts_with("unix:"))
        .map(|s| (path.display().to_string(), s.socket));
    tracing::info!(
        from = %path.display(),
        pid = takeover.old_pid(),
        sockets = listen.len(),
        admin = admin.is_some(),
        "taking over"
    );
    Ok(Received {
        takeover,
        path: path.to_path_buf(),
        listen: listen.into_iter().map(|s| s.socket).collect(),
        admin,
    })
}

impl Received {
    /// Tells the old server to stop accepting and drain (this server accepts already); returns
    /// the line to print. Blocking: run it off the runtime's thread.
    pub(crate) fn commit(self) -> anyhow::Result<String> {
        let pid = self
            .takeover
            .old_pid()
            .map_or("?".to_string(), |p| p.to_string());
        let path = self.path.display().to_string();
        let answer = self.takeover.commit()?;
        Ok(format!("took over from {path} (pid {pid}): {answer}"))
    }
}

/// One listen option as the hand-over describes addresses, or an IP address whose port 0
/// matches any port.
enum Wanted {
    Ip(SocketAddr),
    Exact(String),
}

impl Wanted {
    fn matches(&self, address: &str) -> bool {
        match self {
            Wanted::Exact(wanted) => wanted == address,
            Wanted::Ip(wanted) => address.parse::<SocketAddr>().is_ok_and(|have| {
                have.ip() == wanted.ip() && (wanted.port() == 0 || wanted.port() == have.port())
            }),
        }
    }
}

fn wanted(option: &str) -> anyhow::Result<Wanted> {
    let target = option
        .into_target()
        .map_err(|reason| anyhow::anyhow!("--listen {option}: {reason}"))?;
    Ok(match target {
        Target::Addr(addr) => Wanted::Ip(addr),
        Target::Host { host, port } => {
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve --listen {option}"))?
                .next()
                .with_context(|| format!("--listen {option} resolved to no address"))?;
            Wanted::Ip(addr)
        }
        Target::Unix(UnixTarget::Path(path)) => Wanted::Exact(format!("unix:{}", path.display())),
        Target::Unix(UnixTarget::Abstract(name)) => {
            Wanted::Exact(format!("unix:@{}", String::from_utf8_lossy(&name)))
        }
    })
}

/// Every listen option names one address the old server listens on, and every address it
/// listens on is named (its `--reuseport` sockets share one).
fn check_listen(described: &[&SocketDescription], args: &ServeArgs) -> anyhow::Result<()> {
    let mut theirs: Vec<&str> = Vec::new();
    for socket in described {
        if !theirs.contains(&socket.address.as_str()) {
            theirs.push(&socket.address);
        }
    }
    let options: Vec<String> = if args.listen.is_empty() {
        vec![SocketAddr::new(args.bind, args.port).to_string()]
    } else {
        args.listen.clone()
    };
    let mut unmatched = theirs.clone();
    let mut missing = Vec::new();
    for option in &options {
        let wanted = wanted(option)?;
        match unmatched.iter().position(|have| wanted.matches(have)) {
            Some(index) => {
                unmatched.remove(index);
            }
            None => missing.push(option.as_str()),
        }
    }
    if !missing.is_empty() || !unmatched.is_empty() {
        bail!(
            "cannot take over: the running server listens on {}, this one is asked to listen on {}; \
             give the same --listen options (or --bind/--port) as the running server (it keeps serving)",
            theirs.join(", "),
            options.join(", ")
        );
    }
    Ok(())
}

/// TLS and the PROXY protocol are the old server's: a client mid-way through a reconnect must
/// meet the same handshake.
fn check_handshakes(described: &[&SocketDescription], args: &ServeArgs) -> anyhow::Result<()> {
    let tls = args.tls_cert.is_some();
    for socket in described {
        let theirs_tls = socket.scheme.starts_with("tls");
        if theirs_tls != tls {
            bail!(
                "cannot take over: the running server serves {socket}, but this one would {} TLS there \
                 (it keeps serving)",
                if tls { "add" } else { "drop" }
            );
        }
        if socket.proxy_protocol != args.proxy_protocol {
            bail!(
                "cannot take over: the running server {} a PROXY header on {}, this one would {} (it keeps serving)",
                if socket.proxy_protocol { "expects" } else { "expects no" },
                socket.address,
                if args.proxy_protocol { "expect one" } else { "not" }
            );
        }
    }
    Ok(())
}
