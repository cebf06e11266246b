//! `switchboard top` run for real in an 80×24 tmux pane against a server's admin socket: it
//! draws, pauses accepting on `p`, and exits 0 on `q`, leaving the alternate screen.

#[path = "cli_support.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::{run, switchboard_bin, Server, STEP};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
    /// Polls the pane (a screen has no event to wait on) until `check` holds, for [`STEP`].
    fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_draws_in_80_by_24_pauses_and_quits_cleanly() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is not installed: apt-get install -y tmux (.ci/run does this)"
    );
    let server = Server::start(&["--mode", "echo", "--admin", "tcp:127.0.0.1:0"]);
    let admin = server.proc.stdout_line();
    let admin = admin.strip_prefix("admin on ").unwrap().to_string();
    let mut client = support::LineClient::connect(server.addr);
    client.send("hello");
    assert_eq!(client.read_line(), "hello");

    let tmux = Tmux {
        socket: format!("switchboard-top-{}", std::process::id()),
    };
    // The exit status comes from a shell around `top`, written once `top` has returned:
    // tmux's own `pane_dead_status` can lag behind the pane's death by more than a STEP.
    let status_dir = support::TempDir::new("top");
    let status_file = status_dir.path().join("status");
    let quoted = |path: &std::path::Path| format!("\"{}\"", path.display());
    let (bin, status) = (quoted(switchboard_bin()), quoted(&status_file));
    let command = format!(
        "sh -c '{bin} top {admin} --interval 0.2; echo $? > {status}.tmp; mv {status}.tmp {status}'"
    );
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let _ = tmux.cmd(&["set-option", "-t", "top", "remain-on-exit", "on"]);
    let screen = tmux.until("session table", |s| {
        s.contains("switchboard top") && s.contains("connected")
    });
    println!("--- top in 80x24 ---\n{screen}");
    assert!(screen.contains("worker 0:"), "{screen}");

    tmux.cmd(&["send-keys", "-t", "top", "p"]);
    tmux.until("PAUSED", |s| s.contains("PAUSED"));
    let info = run(&["ctl", &admin, "info", "--json"], STEP);
    let info: serde_json::Value = serde_json::from_str(&info.stdout[0]).unwrap();
    assert_eq!(info["listeners"][0]["accepting"], false);

    tmux.cmd(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + STEP;
    let status = loop {
        // Written whole by `mv`: present means complete.
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            break status.trim().to_string();
        }
        assert!(Instant::now() < deadline, "top did not exit after q");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, "0", "top's exit status");
    // tmux reads the pane's last output (leaving the alternate screen) on its own schedule.
    let deadline = Instant::now() + STEP;
    loop {
        let alternate = tmux.cmd(&["display-message", "-p", "-t", "top", "#{alternate_on}"]);
        if String::from_utf8_lossy(&alternate.stdout).trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "top did not leave the alternate screen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    server.terminate();
}
