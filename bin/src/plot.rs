//! Latency results people can look at: HdrHistogram interval logs (`load --hdr`), HDR
//! percentile plots in SVG (`load --plot`, drawn with plotters: latency against
//! 1/(1−percentile) on a log axis, as wrk2 and HdrHistogram's plotter show it), and the
//! comparison of two saved runs (`load --compare A.hdr B.hdr`).

use std::{path::Path, time::Duration};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use hdrhistogram::{
    serialization::{
        interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag},
        Deserializer, V2DeflateSerializer,
    },
    Histogram,
};
use plotters::prelude::*;

/// Percentiles printed by `--compare`.
const PERCENTILES: [f64; 7] = [50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0];

/// Writes `latency` (microseconds) as one interval of an HdrHistogram interval log. Values
/// are stored in microseconds, the log's max column in milliseconds.
pub(crate) fn write_hdr(
    path: &Path,
    latency: &Histogram<u64>,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut serializer = V2DeflateSerializer::new();
    let start = std::time::SystemTime::now() - elapsed;
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("switchboard load: round-trip latency in microseconds")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut serializer)
        .context("cannot write the interval log")?;
    log.write_histogram(latency, Duration::ZERO, elapsed, Tag::new("latency_us"))
        .map_err(|e| anyhow::anyhow!("cannot write the interval log: {e:?}"))?;
    Ok(())
}

/// Reads every interval of an interval log and adds them up.
pub(crate) fn read_hdr(path: &Path) -> anyhow::Result<Histogram<u64>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut total: Option<Histogram<u64>> = None;
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry =
            entry.map_err(|e| anyhow::anyhow!("{}: not an interval log: {e:?}", path.display()))?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .with_context(|| format!("{}: bad base64 in an interval", path.display()))?;
        let histogram: Histogram<u64> = deserializer
            .deserialize(&mut raw.as_slice())
            .map_err(|e| anyhow::anyhow!("{}: bad histogram: {e:?}", path.display()))?;
        match &mut total {
            Some(total) => total.add(&histogram).context("cannot add intervals")?,
            None => total = Some(histogram),
        }
    }
    match total {
        Some(total) => Ok(total),
        None => bail!("{}: no histogram in the log", path.display()),
    }
}

/// Draws an HDR percentile plot of each named histogram (microseconds) into an SVG file.
pub(crate) fn plot(path: &Path, runs: &[(String, &Histogram<u64>)]) -> anyhow::Result<()> {
    // x = 1/(1-p): 1 is the median's 2, 10 is p90, 1e6 is p99.9999.
    let steps = 240;
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, h)| {
            (0..=steps)
                .map(|k| {
                    let x = 10f64.powf(6.0 * f64::from(k) / f64::from(steps));
                    let p = 1.0 - 1.0 / x;
                    (x, h.value_at_quantile(p) as f64 / 1000.0)
                })
                .collect()
        })
        .collect();
    let top = series
        .iter()
        .flatten()
        .map(|(_, y)| *y)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..1e6f64).log_scale(), 0f64..top)
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            format!("{p:.4}%")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
                + ""
        })
        .draw()
        .map_err(|e| failed(&e))?;
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for (index, ((name, _), points)) in runs.iter().zip(&series).enumerate() {
        let colour = colours[index % colours.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| failed(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

/// `load --compare A B [--plot FILE]`: percentiles side by side.
pub(crate) fn compare(a: &Path, b: &Path, plot_to: Option<&Path>) -> anyhow::Result<()> {
    let (ha, hb) = (read_hdr(a)?, read_hdr(b)?);
    println!(
        "{:>10} {:>14} {:>14} {:>9}",
        "percentile", "A (us)", "B (us)", "B/A"
    );
    for p in PERCENTILES {
        let (va, vb) = (
            ha.value_at_quantile(p / 100.0),
            hb.value_at_quantile(p / 100.0),
        );
        let ratio = if va == 0 { 0.0 } else { vb as f64 / va as f64 };
        println!("{p:>10} {va:>14} {vb:>14} {ratio:>9.2}");
    }
    println!("{:>10} {:>14} {:>14}", "count", ha.len(), hb.len());
    if let Some(path) = plot_to {
        let name = |p: &Path| {
            p.file_name()
                .map_or("?".into(), |n| n.to_string_lossy().into_owned())
        };
        plot(
            path,
            &[
                (format!("A: {}", name(a)), &ha),
                (format!("B: {}", name(b)), &hb),
            ],
        )?;
    }
    Ok(())
}
