//! `--plot FILE.svg`: the latency distribution as a percentile plot, for people.
//!
//! The x axis is the percentile on the scale HdrHistogram's own plots use, where each
//! "nine" gets the same width (50%, 90%, 99%, 99.9%, ...): x = log10(1 / (1 - q)).
//! So the tail, where latency problems live, is not squashed against the right edge.
//! The y axis is latency in milliseconds, linear from zero. The SVG is written by
//! hand (no plotting library): a frame, grid lines with labels, one polyline.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const W: f64 = 800.0;
const H: f64 = 480.0;
/// Plot area inside the picture: left, top, right, bottom margins.
const ML: f64 = 70.0;
const MT: f64 = 50.0;
const MR: f64 = 20.0;
const MB: f64 = 50.0;

/// The nines shown on the x axis, as (label, quantile).
const NINES: [(&str, f64); 6] = [
    ("0%", 0.0),
    ("90%", 0.9),
    ("99%", 0.99),
    ("99.9%", 0.999),
    ("99.99%", 0.9999),
    ("99.999%", 0.99999),
];

fn x_of(q: f64) -> f64 {
    // Quantile 1 (the maximum) is put at the last nine shown.
    let q = q.min(0.99999);
    (1.0 / (1.0 - q)).log10()
}

/// A round step for about `n` grid lines up to `max`.
fn step_for(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot of `h` (microseconds) titled `title`; `None` when there is no sample.
pub fn svg(h: &Histogram<u64>, title: &str) -> Option<String> {
    if h.is_empty() {
        return None;
    }
    // (x, latency ms) for every recorded value, at the quantile it ends.
    let mut pts: Vec<(f64, f64)> = Vec::new();
    let mut below = 0u64;
    let total = h.len() as f64;
    for v in h.iter_recorded() {
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if pts.is_empty() {
            pts.push((0.0, ms));
        }
        below += v.count_at_value();
        pts.push((x_of(below as f64 / total), ms));
    }
    let x_max = x_of(NINES[NINES.len() - 1].1);
    let y_top = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let y_step = step_for(y_top, 5.0);
    let y_max = (y_top / y_step).ceil().max(1.0) * y_step;
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let px = |x: f64| ML + pw * x / x_max;
    let py = |y: f64| MT + ph * (1.0 - y / y_max);

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and labels.
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let _ = writeln!(
            o,
            r##"<line x1="{ML}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            W - MR,
            ML - 6.0,
            py(y) + 4.0,
            trim(y)
        );
        y += y_step;
    }
    for (label, q) in NINES {
        let x = px(x_of(q));
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{x:.1}" y="{1:.1}" text-anchor="middle">{label}</text>"##,
            H - MB,
            H - MB + 16.0
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        ML + pw / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        o,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">latency (ms)</text>"#,
        MT + ph / 2.0
    );
    let line: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x.min(x_max)), py(y)))
        .collect();
    let _ = writeln!(
        o,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        line.join(" ")
    );
    o.push_str("</svg>\n");
    Some(o)
}

/// `2`, `0.5`, `0.25`: a grid value without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    /// The polyline's points, parsed back.
    fn points(svg: &str) -> Vec<(f64, f64)> {
        let at = svg.find("<polyline").unwrap();
        let p = &svg[at..];
        let start = p.find("points=\"").unwrap() + 8;
        let end = start + p[start..].find('"').unwrap();
        p[start..end]
            .split(' ')
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_curve_rises_with_the_percentile_and_ends_at_the_maximum() {
        // 990 fast operations (0.1 ms), 9 slow (1 ms), one very slow (2 ms).
        let mut v = vec![100; 990];
        v.extend([1000; 9]);
        v.push(2000);
        let s = svg(&histogram(&v), "t <&> \"q\"").unwrap();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(
            s.contains("t &lt;&amp;&gt; &quot;q&quot;"),
            "the title is escaped"
        );
        let pts = points(&s);
        assert!(
            pts.windows(2).all(|w| w[1].0 >= w[0].0),
            "x never goes back"
        );
        // Larger latency is higher on the page: a smaller y.
        assert!(
            pts.windows(2).all(|w| w[1].1 <= w[0].1),
            "y never goes down"
        );
        // Three distinct values: a start point and one per value.
        assert_eq!(pts.len(), 4, "{pts:?}");
        // The 0.1 ms step ends at the 99% line, the 1 ms one at 99.9%.
        let x_at = |q| ML + (W - ML - MR) * x_of(q) / x_of(0.99999);
        assert!((pts[1].0 - x_at(0.99)).abs() < 0.2, "{pts:?}");
        assert!((pts[2].0 - x_at(0.999)).abs() < 0.2, "{pts:?}");
        // The maximum (2 ms) is on the top grid line, labelled, at the right edge.
        assert!((pts[3].1 - MT).abs() < 0.2, "{pts:?}");
        assert!((pts[3].0 - (W - MR)).abs() < 0.2, "{pts:?}");
        assert!(s.contains(">2<") && s.contains(">0.5<"), "y labels");
    }

    #[test]
    fn an_empty_run_has_no_plot() {
        assert!(svg(&histogram(&[]), "none").is_none());
    }

    #[test]
    fn grid_steps_are_round() {
        assert_eq!(step_for(40.0, 5.0), 10.0);
        assert_eq!(step_for(7.3, 5.0), 2.0);
        assert_eq!(step_for(0.9, 5.0), 0.2);
        assert_eq!(trim(0.2), "0.2");
        assert_eq!(trim(10.0), "10");
    }
}
