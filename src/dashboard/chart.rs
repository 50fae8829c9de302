//! The overview's chart: blocks per category per day as a stacked-bar inline SVG.
//!
//! Drawn on the server, so the page needs no JavaScript; colours come from SVG
//! attributes (not `style`), which the dashboard's Content-Security-Policy allows. The
//! same numbers are also given as a table beside it, for screen readers.

use std::collections::BTreeMap;

use maud::{html, Markup};

/// A palette with enough contrast on white, one colour per category in turn.
const PALETTE: [&str; 12] = [
    "#1f5fa8", "#b3261e", "#2e7d32", "#8a4b00", "#6a1b9a", "#00695c", "#ad1457", "#37474f",
    "#5d4037", "#283593", "#827717", "#c62828",
];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;

/// Counts by day (`YYYY-MM-DD`, in order, every day shown even with no blocks) and
/// category.
pub struct Series {
    pub days: Vec<String>,
    pub counts: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Series {
    /// `days` in order; `rows` are (day, category, count).
    pub fn new(days: Vec<String>, rows: &[(String, String, i64)]) -> Series {
        let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (day, category, n) in rows {
            *counts
                .entry(category.clone())
                .or_default()
                .entry(day.clone())
                .or_default() += n;
        }
        Series { days, counts }
    }

    fn day_total(&self, day: &str) -> i64 {
        self.counts
            .values()
            .filter_map(|by_day| by_day.get(day))
            .sum()
    }

    fn colour(&self, category: &str) -> &'static str {
        let i = self.counts.keys().position(|c| c == category).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    }
}

/// The chart, its legend and the same data as a table.
pub fn render(series: &Series, title: &str) -> Markup {
    let max = series
        .days
        .iter()
        .map(|d| series.day_total(d))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / series.days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = |n: i64| n as f64 / max as f64 * plot_h;
    html! {
        figure.chart {
            svg.plot viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby="chart-title" {
                title id="chart-title" { (title) }
                // Axis: zero and the maximum.
                line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) stroke="#555" {}
                text x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" font-size="11" fill="#222" { "0" }
                text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" font-size="11" fill="#222" { (max) }
                @for (i, day) in series.days.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
                    @let mut y = HEIGHT - BOTTOM;
                    @for (category, by_day) in &series.counts {
                        @if let Some(&n) = by_day.get(day) {
                            @let h = scale(n);
                            @let top = { y -= h; y };
                            rect x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{bar:.1}"))
                                height=(format!("{h:.1}")) fill=(series.colour(category)) {
                                title { (day) ": " (n) " " (category) }
                            }
                        }
                    }
                    // A date label every 7 days keeps the axis readable on a phone.
                    @if i % 7 == 0 {
                        text x=(format!("{:.1}", x + bar / 2.0)) y=(HEIGHT - 8.0) text-anchor="middle"
                            font-size="10" fill="#222" { (&day[5..]) }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for category in series.counts.keys() {
                        li {
                            svg width="12" height="12" aria-hidden="true" {
                                rect width="12" height="12" fill=(series.colour(category)) {}
                            }
                            " " (category)
                        }
                    }
                }
            }
        }
        details {
            summary { "The chart's numbers as a table" }
            table {
                thead { tr { th scope="col" { "Day" } @for c in series.counts.keys() { th scope="col" { (c) } } } }
                tbody {
                    @for day in &series.days {
                        @if series.day_total(day) > 0 {
                            tr {
                                th scope="row" { (day) }
                                @for by_day in series.counts.values() {
                                    td { (by_day.get(day).copied().unwrap_or(0)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_per_day_and_every_category_is_in_the_legend() {
        let days = vec!["2026-11-01".to_string(), "2026-11-02".to_string()];
        let rows = vec![
            ("2026-11-01".to_string(), "adult".to_string(), 3),
            ("2026-11-01".to_string(), "gambling".to_string(), 1),
            ("2026-11-02".to_string(), "adult".to_string(), 4),
        ];
        let series = Series::new(days, &rows);
        assert_eq!(series.day_total("2026-11-01"), 4);
        let svg = render(&series, "Blocks").into_string();
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
        assert!(svg.contains("2026-11-01: 3 adult"));
        assert!(svg.contains("gambling"));
        // The tallest day reaches the top of the plot.
        assert!(svg.contains(">4</text>"));
        assert!(!svg.contains("style="), "CSP forbids inline styles");
    }
}
