//! The latency plot of `logbus bench pingpong --plot FILE.svg`: each transport's round-trip
//! time against the percentile, both on log scales, the way HdrHistogram's percentile
//! distributions are drawn. The x axis is 1/(1 − q) for quantile q, so that 90%, 99%,
//! 99.9%, 99.99% are evenly spaced and the tail gets as much room as the body.
//!
//! Drawn with `plotters`' SVG backend only (no fonts are loaded: the SVG names a font
//! family and the viewer draws the text).

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// Line colours, one per series, in order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// The points of one histogram's percentile curve: (1/(1 − q), nanoseconds), from the
/// smallest value to the largest, the largest placed at 1/(1 − q) = the count.
pub fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let count = histogram.len().max(1) as f64;
    let mut points = Vec::new();
    for step in histogram.iter_quantiles(5) {
        let q = step.quantile_iterated_to();
        let x = if q >= 1.0 {
            count
        } else {
            (1.0 / (1.0 - q)).min(count)
        };
        points.push((x.max(1.0), step.value_iterated_to().max(1) as f64));
    }
    if !histogram.is_empty() {
        points.push((count.max(1.0), histogram.max().max(1) as f64));
    }
    points
}

/// `90%`, `99.9%` for a point 1/(1 − q) on the x axis.
fn percentile_label(x: f64) -> String {
    let percent = 100.0 - 100.0 / x;
    let mut text = format!("{percent:.4}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}%")
}

/// `500 ns`, `2 µs`, `1 ms` for a point on the y axis.
fn nanos_label(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{} µs", trim(ns / 1e3))
    } else if ns < 1e9 {
        format!("{} ms", trim(ns / 1e6))
    } else {
        format!("{} s", trim(ns / 1e9))
    }
}

fn trim(x: f64) -> String {
    let text = format!("{x:.1}");
    text.strip_suffix(".0").unwrap_or(&text).to_string()
}

/// Draws the percentile curves of `series` (name, histogram) into the SVG file `path`.
pub fn percentiles(path: &Path, title: &str, series: &[(String, Histogram<u64>)]) -> Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| (name.as_str(), curve(h)))
        .collect();
    let points = curves.iter().flat_map(|(_, c)| c.iter());
    let x_max = points.clone().map(|p| p.0).fold(10.0, f64::max);
    let y_min = points.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max);
    let (y_min, y_max) = if y_max > 0.0 {
        (y_min * 0.8, y_max * 1.25)
    } else {
        (1.0, 10.0)
    };
    // Whole decades on the x axis: 0%, 90%, 99%, ...
    let x_max = 10f64.powf(x_max.log10().ceil());
    let decades = x_max.log10().round() as usize;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_labels(decades + 1)
        .y_labels(8)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| nanos_label(*y))
        .x_desc("percentile")
        .y_desc("round-trip time")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
        assert_eq!(nanos_label(500.0), "500 ns");
        assert_eq!(nanos_label(2000.0), "2 µs");
        assert_eq!(nanos_label(1_500_000.0), "1.5 ms");
    }

    #[test]
    fn a_curve_rises_and_ends_at_the_maximum() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 100).unwrap();
        }
        let points = curve(&h);
        assert!(points
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[0].0 <= w[1].0));
        let last = points.last().unwrap();
        assert_eq!(last.0, 1000.0);
        assert!((last.1 - 100_000.0).abs() / 100_000.0 < 0.01);
    }

    #[test]
    fn an_svg_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        let mut a = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..=1000u64 {
            a.record(300 + v).unwrap();
            b.record(4000 + 10 * v).unwrap();
        }
        percentiles(
            &path,
            "test",
            &[("logbus".into(), a), ("unix-socket".into(), b)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("logbus") && svg.contains("unix-socket"));
        assert!(svg.contains("99.9%"));
    }
}
