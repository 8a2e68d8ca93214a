//! SVG charts for the HTML report (plotters, SVG backend).

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::stats::Second;

/// Deliveries per latency bucket (log-spaced buckets), as an SVG bar chart.
pub fn latency_histogram(h: &Histogram<u64>) -> String {
    let buckets: Vec<(f64, u64)> = h.iter_log(100, 1.5).map(|v| (v.value_iterated_to() as f64 / 1000.0, v.count_since_last_iteration())).collect();
    let mut svg = String::new();
    if buckets.is_empty() {
        return svg;
    }
    let max_ms = buckets.last().map_or(1.0, |b| b.0).max(0.2);
    let max_count = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    {
        let root = SVGBackend::with_string(&mut svg, (900, 360)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0.1f64..max_ms * 1.1).log_scale(), 0u64..max_count + max_count / 10 + 1);
        if let Ok(mut chart) = chart {
            let _ = chart.configure_mesh().x_desc("latency (ms, log scale)").y_desc("deliveries").draw();
            let mut lower = 0.1f64;
            let bars = buckets.iter().map(|&(upper, count)| {
                let bar = Rectangle::new([(lower.max(0.1), 0), (upper.max(0.1), count)], BLUE.mix(0.6).filled());
                lower = upper;
                bar
            });
            let _ = chart.draw_series(bars);
        }
        let _ = root.present();
    }
    svg
}

/// p50/p95/p99 per second and deliveries per second over the measured window.
pub fn timeline(seconds: &[Second]) -> String {
    let mut svg = String::new();
    if seconds.is_empty() {
        return svg;
    }
    let end = seconds.last().map_or(1.0, |s| s.at).max(1.0);
    let max_ms = seconds.iter().map(|s| s.p99_ms).fold(0.1, f64::max);
    let max_rate = seconds.iter().map(|s| s.delivered).max().unwrap_or(1).max(1) as f64;
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let (top, bottom) = root.split_vertically(300);
        if let Ok(mut chart) = ChartBuilder::on(&top)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .caption("latency per second (ms)", ("sans-serif", 16))
            .build_cartesian_2d(0f64..end, 0f64..max_ms * 1.1)
        {
            let _ = chart.configure_mesh().draw();
            for (name, color, pick) in [("p50", GREEN, 0usize), ("p95", BLUE, 1), ("p99", RED, 2)] {
                let points = seconds.iter().map(|s| (s.at, [s.p50_ms, s.p95_ms, s.p99_ms][pick]));
                if let Ok(series) = chart.draw_series(LineSeries::new(points, color.stroke_width(2))) {
                    series.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                }
            }
            let _ = chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw();
        }
        if let Ok(mut chart) = ChartBuilder::on(&bottom)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .caption("deliveries per second", ("sans-serif", 16))
            .build_cartesian_2d(0f64..end, 0f64..max_rate * 1.1)
        {
            let _ = chart.configure_mesh().x_desc("seconds").draw();
            let _ = chart.draw_series(LineSeries::new(seconds.iter().map(|s| (s.at, s.delivered as f64)), BLACK.stroke_width(2)));
        }
        let _ = root.present();
    }
    svg
}
