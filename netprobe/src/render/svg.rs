//! Inline SVG charts for the HTML reports (`html`, `compare_html`,
//! `sweep_html`): grouped horizontal bars and line charts on linear,
//! logarithmic or categorical axes, written
//! as text with every label escaped. No script, no external resource: the
//! page is one file that renders offline.

use std::fmt::Write;

/// Colours of successive series (bars of a row, curves of a chart).
pub(crate) const PALETTE: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Text made safe for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An axis: its range, linear or log10, and its tick marks.
pub(crate) struct Axis {
    pub log: bool,
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A log10 axis over whole decades covering `lo..=hi` (values > 0),
    /// ticks at each decade labelled by `label`.
    pub(crate) fn decades(lo: f64, hi: f64, label: fn(u64) -> String) -> Axis {
        let lo = 10f64.powf(lo.max(1.0).log10().floor());
        let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut t = lo;
        while t <= hi * 1.0001 {
            ticks.push((t, label(t as u64)));
            t *= 10.0;
        }
        Axis { log: true, min: lo, max: hi, ticks }
    }

    /// A linear axis from 0 covering `hi`, five ticks labelled by `label`.
    pub(crate) fn linear(hi: f64, label: fn(u64) -> String) -> Axis {
        let hi = if hi > 0.0 { hi } else { 1.0 };
        let step = nice_step(hi / 5.0);
        let max = (hi / step).ceil() * step;
        let ticks =
            (0..=((max / step).round() as u64)).map(|i| (i as f64 * step, label((i as f64 * step) as u64))).collect();
        Axis { log: false, min: 0.0, max, ticks }
    }

    /// An axis over a sweep's label values (distinct, in order), and each
    /// value's position on it: numbers at their value (log10 where all are
    /// positive and they span a decade or more, as 1, 10, 50 connections
    /// do), words evenly spaced in order; a tick at every value.
    pub(crate) fn values(vals: &[String]) -> (Axis, Vec<f64>) {
        let nums: Option<Vec<f64>> = vals.iter().map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
        let ticks_at = |pos: &[f64]| pos.iter().zip(vals).map(|(p, v)| (*p, v.clone())).collect();
        match nums {
            Some(n) if !n.is_empty() => {
                let (lo, hi) = n.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                let axis = if lo > 0.0 && hi / lo >= 10.0 {
                    Axis { log: true, min: lo / 1.25, max: hi * 1.25, ticks: ticks_at(&n) }
                } else {
                    let pad = if hi > lo { (hi - lo) * 0.06 } else { lo.abs().max(1.0) * 0.5 };
                    Axis { log: false, min: lo - pad, max: hi + pad, ticks: ticks_at(&n) }
                };
                (axis, n)
            }
            _ => {
                let pos: Vec<f64> = (0..vals.len()).map(|i| i as f64).collect();
                (Axis { log: false, min: -0.5, max: vals.len() as f64 - 0.5, ticks: ticks_at(&pos) }, pos)
            }
        }
    }

    /// Position of `v` in `0.0..=1.0` along the axis (clamped).
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.min).log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// One row of a bar chart: a label and its values (one bar each, in the
/// series' order and colours).
pub(crate) struct BarRow {
    pub label: String,
    pub values: Vec<Option<u64>>,
}

/// A horizontal bar chart, one group of bars per row, `series` naming the
/// bars of each group; values labelled by `label`.
pub(crate) fn hbars(class: &str, series: &[&str], rows: &[BarRow], axis: &Axis, label: fn(u64) -> String) -> String {
    const LEFT: f64 = 300.0;
    const WIDTH: f64 = 960.0;
    const PLOT: f64 = WIDTH - LEFT - 90.0;
    let bar_h = if series.len() > 1 { 9.0 } else { 14.0 };
    let row_h = bar_h * series.len() as f64 + 8.0;
    let top = 34.0;
    let height = top + row_h * rows.len() as f64 + 10.0;
    let mut s = String::new();
    open(&mut s, class, WIDTH, height);
    legend(&mut s, series, LEFT, 12.0);
    for (v, t) in &axis.ticks {
        let x = LEFT + axis.frac(*v) * PLOT;
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            top - 4.0,
            height - 6.0,
            top - 8.0,
            esc(t)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h + 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + row_h / 2.0,
            esc(&row.label)
        );
        for (j, v) in row.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let w = (axis.frac(*v as f64) * PLOT).max(1.0);
            let by = y + j as f64 * bar_h;
            let _ = write!(
                s,
                r#"<rect class="bar" x="{LEFT}" y="{by:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
                bar_h - 1.0,
                PALETTE[j % PALETTE.len()],
                esc(&format!("{} {}", row.label, series.get(j).copied().unwrap_or(""))),
                esc(&label(*v)),
                LEFT + w + 4.0,
                by + bar_h - 2.0,
                esc(&label(*v))
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// One row of a stacked bar: a label and its segments (series index into
/// the legend, value, tooltip).
pub(crate) struct StackRow {
    pub label: String,
    pub segments: Vec<(usize, f64, String)>,
}

/// Horizontal bars of equal length, each split into its segments in
/// proportion: where each row's total went.
pub(crate) fn stacked(class: &str, series: &[String], rows: &[StackRow]) -> String {
    const LEFT: f64 = 300.0;
    const WIDTH: f64 = 960.0;
    const PLOT: f64 = WIDTH - LEFT - 20.0;
    const ROW_H: f64 = 18.0;
    let legend_rows = series.len().div_ceil(2);
    let top = 16.0 * legend_rows as f64 + 8.0;
    let height = top + ROW_H * rows.len() as f64 + 6.0;
    let mut s = String::new();
    open(&mut s, class, WIDTH, height);
    for (i, name) in series.iter().enumerate() {
        let (x, y) = (20.0 + (i % 2) as f64 * (WIDTH / 2.0), 12.0 + (i / 2) as f64 * 16.0);
        swatch(&mut s, x, y, PALETTE[i % PALETTE.len()], name);
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * ROW_H;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + ROW_H - 6.0,
            esc(&row.label)
        );
        let total: f64 = row.segments.iter().map(|seg| seg.1).sum::<f64>().max(f64::MIN_POSITIVE);
        let mut x = LEFT;
        for (series, v, title) in &row.segments {
            let w = v / total * PLOT;
            let _ = write!(
                s,
                r#"<rect class="segment" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                ROW_H - 3.0,
                PALETTE[series % PALETTE.len()],
                esc(title)
            );
            x += w;
        }
    }
    s.push_str("</svg>");
    s
}

/// Opens a chart's `<svg>` element.
fn open(s: &mut String, class: &str, width: f64, height: f64) {
    let _ = write!(
        s,
        r#"<svg class="chart {class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">"#
    );
}

/// A legend entry: a colour square and its name, text baseline at `y`.
fn swatch(s: &mut String, x: f64, y: f64, colour: &str, name: &str) {
    let _ = write!(
        s,
        r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{y:.1}" class="legend">{}</text>"#,
        y - 9.0,
        x + 14.0,
        esc(name)
    );
}

fn legend(s: &mut String, series: &[&str], x0: f64, y: f64) {
    let mut x = x0;
    for (i, name) in series.iter().enumerate() {
        swatch(s, x, y, PALETTE[i % PALETTE.len()], name);
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

/// Grid lines and tick labels of both axes, for a plot area at (left,
/// top) of width by height.
fn grid(s: &mut String, x: &Axis, y: &Axis, (left, top, w, h): (f64, f64, f64, f64)) {
    for (v, t) in &y.ticks {
        let yy = top + (1.0 - y.frac(*v)) * h;
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            left + w,
            left - 6.0,
            yy + 4.0,
            esc(t)
        );
    }
    for (v, t) in &x.ticks {
        let xx = left + x.frac(*v) * w;
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            top + h,
            top + h + 16.0,
            esc(t)
        );
    }
}

/// A line chart of several named series of (x, y) points.
pub(crate) fn lines(class: &str, series: &[(String, Vec<(f64, f64)>)], x: &Axis, y: &Axis, x_title: &str) -> String {
    const LEFT: f64 = 70.0;
    const WIDTH: f64 = 960.0;
    const TOP: f64 = 12.0;
    const PLOT_W: f64 = 620.0;
    const PLOT_H: f64 = 300.0;
    let legend_h = 16.0 * series.len() as f64 + TOP;
    let height = (TOP + PLOT_H + 40.0).max(legend_h);
    let mut s = String::new();
    open(&mut s, class, WIDTH, height);
    let px = |v: f64| LEFT + x.frac(v) * PLOT_W;
    let py = |v: f64| TOP + (1.0 - y.frac(v)) * PLOT_H;
    grid(&mut s, x, y, (LEFT, TOP, PLOT_W, PLOT_H));
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 34.0,
        esc(x_title)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = pts.iter().map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b))).collect();
        let _ = write!(
            s,
            r#"<polyline class="curve" fill="none" stroke="{colour}" stroke-width="1.8" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name)
        );
        let ly = TOP + 16.0 * i as f64 + 8.0;
        let lx = LEFT + PLOT_W + 16.0;
        swatch(&mut s, lx, ly, colour, name);
    }
    s.push_str("</svg>");
    s
}

/// One line of an x/y chart: its legend name, CSS class, colour (index
/// into the palette), dashed or solid, and its points.
pub(crate) struct Series {
    pub name: String,
    pub class: &'static str,
    pub colour: usize,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// A chart of lines with a marker at every point (its value in the
/// marker's tooltip, labelled by `label`), axes titled.
pub(crate) fn xy(
    class: &str,
    series: &[Series],
    x: &Axis,
    y: &Axis,
    titles: (&str, &str),
    label: fn(u64) -> String,
) -> String {
    const LEFT: f64 = 70.0;
    const WIDTH: f64 = 960.0;
    const TOP: f64 = 12.0;
    const PLOT_W: f64 = 620.0;
    const PLOT_H: f64 = 220.0;
    let height = (TOP + PLOT_H + 40.0).max(16.0 * series.len() as f64 + TOP);
    let mut s = String::new();
    open(&mut s, class, WIDTH, height);
    let px = |v: f64| LEFT + x.frac(v) * PLOT_W;
    let py = |v: f64| TOP + (1.0 - y.frac(v)) * PLOT_H;
    grid(&mut s, x, y, (LEFT, TOP, PLOT_W, PLOT_H));
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="12" y="{:.1}" class="tick" text-anchor="middle" transform="rotate(-90 12 {:.1})">{}</text>"#,
        LEFT + PLOT_W / 2.0,
        TOP + PLOT_H + 34.0,
        esc(titles.0),
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0,
        esc(titles.1)
    );
    for (i, ser) in series.iter().enumerate() {
        let colour = PALETTE[ser.colour % PALETTE.len()];
        let dash = if ser.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let points: Vec<String> = ser.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b))).collect();
        let _ = write!(
            s,
            r#"<polyline class="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            ser.class,
            points.join(" "),
            esc(&ser.name)
        );
        for &(a, b) in &ser.points {
            let _ = write!(
                s,
                r#"<circle class="marker" cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {}</title></circle>"#,
                px(a),
                py(b),
                esc(&ser.name),
                esc(&label(b.round() as u64))
            );
        }
        // The legend draws the line itself: solid p50, dashed p99.
        let (lx, ly) = (LEFT + PLOT_W + 16.0, TOP + 16.0 * i as f64 + 8.0);
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"#,
            ly - 4.0,
            lx + 22.0,
            ly - 4.0,
            lx + 28.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page's shared style: system fonts, readable tables, chart text.
pub(crate) const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1000px;color:#222;background:#fff}\
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}h3{font-size:1.05em}\
.meta{color:#555;font-size:.9em}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}\
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}.card b{display:block;font-size:1.3em}\
table{border-collapse:collapse;font-size:.85em;margin:8px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}\
th:first-child,td:first-child{text-align:left}td.text,th.text{text-align:left}tr.missing td{color:#999}\
.ok{color:#2a7d2a}.no{color:#b33}svg.chart{display:block;margin:8px 0}svg text{font-size:11px;fill:#333}svg text.tick{fill:#777;font-size:10px}\
.note{color:#666;font-size:.85em}";

/// The start of an HTML page with `title` (escaped here).
pub(crate) fn page_start(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
}

pub(crate) fn page_end(out: &mut String) {
    out.push_str("</body></html>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn log_axis_covers_whole_decades() {
        let a = Axis::decades(350.0, 42_000.0, |v| v.to_string());
        assert_eq!((a.min, a.max), (100.0, 100_000.0));
        assert_eq!(a.ticks.len(), 4);
        assert!((a.frac(1000.0) - 1.0 / 3.0).abs() < 1e-9);
        let l = Axis::linear(73.0, |v| v.to_string());
        assert_eq!(l.max, 80.0);
        assert_eq!(l.ticks.last().unwrap().1, "80");
    }

    #[test]
    fn sweep_axes_place_numbers_by_value_and_words_in_order() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let (a, pos) = Axis::values(&v(&["1", "10", "50"]));
        assert!(a.log, "1..50 spans more than a decade");
        assert_eq!(pos, [1.0, 10.0, 50.0]);
        assert!(a.frac(1.0) > 0.0 && a.frac(50.0) < 1.0 && (a.frac(10.0) - 0.5).abs() < 0.1);
        assert_eq!(a.ticks.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["1", "10", "50"]);
        let (l, _) = Axis::values(&v(&["2", "4"]));
        assert!(!l.log && l.min < 2.0 && l.max > 4.0);
        let (c, pos) = Axis::values(&v(&["macvtap", "bridge"]));
        assert_eq!((pos, c.min, c.max), (vec![0.0, 1.0], -0.5, 1.5));
    }
}
