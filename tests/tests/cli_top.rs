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
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed: skipped");
        return;
    }
    let server = Server::start(&["--mode", "echo", "--admin", "tcp:127.0.0.1:0"]);
    let admin = server.proc.stdout_line();
    let admin = admin.strip_prefix("admin on ").unwrap().to_string();
    let mut client = support::LineClient::connect(server.addr);
    client.send("hello");
    assert_eq!(client.read_line(), "hello");

    let tmux = Tmux {
        socket: format!("switchboard-top-{}", std::process::id()),
    };
    let command = format!("{} top {admin} --interval 0.2", switchboard_bin().display());
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
    loop {
        let out = tmux.cmd(&[
            "display-message",
            "-p",
            "-t",
            "top",
            "#{pane_dead} #{pane_dead_status} #{alternate_on}",
        ]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // tmux marks the pane dead a moment before it records the exit status ("1  0"):
        // judge once both are known.
        let fields: Vec<&str> = state.split(' ').collect();
        if fields.len() == 3 && fields[0] == "1" && !fields[1].is_empty() {
            assert_eq!(state, "1 0 0", "dead, exit status 0, alternate screen left");
            break;
        }
        assert!(Instant::now() < deadline, "top did not exit: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    server.terminate();
}
