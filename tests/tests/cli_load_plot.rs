//! `load --hdr` writes an HdrHistogram interval log, `--plot` an SVG percentile plot, and
//! `--compare` reads two logs back and prints their percentiles side by side.

#[path = "cli_support.rs"]
mod support;

use support::{run, Server, TempDir, STEP};

#[test]
fn load_writes_hdr_logs_and_plots_and_compares_two_runs() {
    let server = Server::start(&["--mode", "echo"]);
    let dir = TempDir::new("load-plot");
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (name, pipeline) in [("a", "1"), ("b", "4")] {
        let hdr = file(&format!("{name}.hdr"));
        let svg = file(&format!("{name}.svg"));
        let done = run(
            &[
                "load",
                &server.target(),
                "-c",
                "2",
                "-p",
                pipeline,
                "-m",
                "2000",
                "--hdr",
                &hdr,
                "--plot",
                &svg,
            ],
            STEP,
        );
        assert!(done.status.success(), "{done:?}");
        let log = std::fs::read_to_string(&hdr).unwrap();
        assert!(log.contains("#[StartTime: "), "{log}");
        assert!(
            log.lines().any(|l| l.starts_with("Tag=latency_us,0.000,")),
            "{log}"
        );
        let plot = std::fs::read_to_string(&svg).unwrap();
        assert!(plot.starts_with("<svg") && plot.contains("Latency by percentile"));
    }
    let cmp = file("cmp.svg");
    let compared = run(
        &[
            "load",
            "--compare",
            &file("a.hdr"),
            &file("b.hdr"),
            "--plot",
            &cmp,
        ],
        STEP,
    );
    assert!(compared.status.success(), "{compared:?}");
    assert!(compared.stdout[0].contains("percentile"));
    let count = compared
        .stdout
        .iter()
        .find(|l| l.trim_start().starts_with("count"))
        .unwrap();
    let counts: Vec<&str> = count.split_whitespace().collect();
    assert!(counts[1].parse::<u64>().unwrap() >= 2000, "{count}");
    let plot = std::fs::read_to_string(&cmp).unwrap();
    assert!(plot.contains("A: a.hdr") && plot.contains("B: b.hdr"));
    server.terminate();
}
