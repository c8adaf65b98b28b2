//! Minimal SVG line plots for benchmark and training results: log or linear axes, one
//! polyline per series, a legend. Written by hand to keep the dependency tree small.

/// One line of a plot: a name and its (x, y) points (x and y > 0 on log axes).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Axis scale.
#[derive(Clone, Copy, PartialEq)]
pub enum Scale {
    /// Linear from zero (or below) to the data's maximum.
    Linear,
    /// Linear over the data's range only (losses, where zero would flatten the curves).
    Fit,
    Log,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 330.0; // room for the legend
const LEGEND_CHARS: usize = 44;
const TOP: f64 = 40.0;
const MARKED_POINTS: usize = 50;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// An SVG document plotting `series` with x on a log scale and y on `y_scale`.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_scale: Scale,
    series: &[Series],
) -> String {
    line_plot_xy(title, x_label, y_label, Scale::Log, y_scale, series)
}

/// An SVG document plotting `series` with x on `x_scale` and y on `y_scale`. A log x axis
/// has a tick at every measured x (sizes); a linear one five round steps (training steps).
pub fn line_plot_xy(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_scale: Scale,
    y_scale: Scale,
    series: &[Series],
) -> String {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let usable = |&(x, y): &(f64, f64)| {
        (x_scale != Scale::Log || x > 0.0) && (y_scale != Scale::Log || y > 0.0)
    };
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.filter(usable).unzip();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title)
    );
    if xs.is_empty() {
        svg.push_str("<text x=\"70\" y=\"80\">no data</text>\n</svg>\n");
        return svg;
    }
    let transform_x = |x: f64| if x_scale == Scale::Log { x.log2() } else { x };
    let transform_y = |y: f64| if y_scale == Scale::Log { y.log10() } else { y };
    let (x_min, x_max) = span(xs.iter().map(|&x| transform_x(x)));
    let (mut y_min, y_max) = span(ys.iter().map(|&y| transform_y(y)));
    if y_scale == Scale::Linear {
        y_min = y_min.min(0.0);
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (transform_x(x) - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| TOP + plot_h - (transform_y(y) - y_min) / (y_max - y_min) * plot_h;

    // Axes; x ticks at the measured x values (log) or five round steps (linear); y ticks at
    // decades (log) or five round steps (linear).
    svg.push_str(&format!(
        "<path d=\"M{LEFT} {TOP} V{} H{}\" stroke=\"black\" fill=\"none\"/>\n",
        TOP + plot_h,
        LEFT + plot_w
    ));
    let x_ticks: Vec<(f64, String)> = match x_scale {
        Scale::Log => {
            let mut ticks = xs.clone();
            ticks.sort_by(f64::total_cmp);
            ticks.dedup();
            ticks.into_iter().map(|x| (x, compact(x))).collect()
        }
        Scale::Linear | Scale::Fit => round_ticks(x_min, x_max)
            .into_iter()
            .map(|x| (x, decimal(x)))
            .collect(),
    };
    for (x, label) in x_ticks {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            px(x),
            TOP + plot_h + 18.0,
        ));
    }
    let y_ticks: Vec<f64> = match y_scale {
        // 1, 2, 5 in every decade.
        Scale::Log => (y_min.floor() as i32..=y_max.ceil() as i32)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .collect(),
        Scale::Linear | Scale::Fit => round_ticks(y_min, y_max),
    };
    for y in y_ticks
        .into_iter()
        .filter(|&y| (y_min..=y_max + 1e-9).contains(&transform_y(y)))
    {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <path d=\"M{LEFT} {:.1} H{}\" stroke=\"#ddd\"/>\n",
            LEFT - 6.0,
            py(y) + 4.0,
            decimal(y),
            py(y),
            LEFT + plot_w
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        escape(y_label)
    ));
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut points: Vec<(f64, f64)> = line.points.iter().copied().filter(usable).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let coordinates: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" stroke=\"{color}\" stroke-width=\"2\" fill=\"none\"/>\n",
            coordinates.join(" ")
        ));
        // Markers on sparse series only: on dense ones (training curves) they would hide it.
        for &(x, y) in points.iter().filter(|_| points.len() <= MARKED_POINTS) {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n",
                px(x),
                py(y)
            ));
        }
        let legend_y = TOP + 16.0 * index as f64;
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/>\n\
             <text x=\"{}\" y=\"{}\">{}</text>\n",
            WIDTH - RIGHT + 12.0,
            legend_y,
            WIDTH - RIGHT + 28.0,
            legend_y + 5.0,
            escape(&shortened(&line.name))
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Min and max of values, widened when they are equal.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if high > low {
        (low, high)
    } else {
        (low - 1.0, high + 1.0)
    }
}

/// A name cut to the legend's width.
fn shortened(name: &str) -> String {
    match name.char_indices().nth(LEGEND_CHARS) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_string(),
    }
}

/// Ticks at multiples of a round step, about five of them, within `[low, high]`.
fn round_ticks(low: f64, high: f64) -> Vec<f64> {
    let step = round_step((high - low) / 5.0);
    let first = (low / step - 1e-9).ceil() as i64;
    let last = (high / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// The 1, 2 or 5 times a power of ten nearest above `raw`.
fn round_step(raw: f64) -> f64 {
    let decade = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * decade)
}

/// A y label: 1000 -> "1000", 0.25 -> "0.25".
fn decimal(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An x label in powers of two: 1024 -> "1K", 0.5 -> "0.5", 2560 -> "2.5K".
fn compact(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1048576.0, "M")
    } else if value >= 1e3 {
        (value / 1024.0, "K")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    format!(
        "{}{suffix}",
        text.trim_end_matches('0').trim_end_matches('.')
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_one_polyline_per_series_and_escapes_names() {
        let series = [
            Series {
                name: "a <gpu>".into(),
                points: vec![(1024.0, 2.0), (2048.0, 8.0)],
            },
            Series {
                name: "b".into(),
                points: vec![(1024.0, 1.0), (4096.0, 0.0)],
            },
        ];
        let svg = line_plot("t", "S", "ms", Scale::Log, &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;gpu&gt;"));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "the zero point is left out on a log axis"
        );
        assert!(svg.contains(">1K<") && svg.contains(">2K<"));
        assert!(line_plot("t", "S", "x", Scale::Linear, &[]).contains("no data"));
    }

    #[test]
    fn linear_axes_tick_round_steps_and_fit_leaves_out_zero() {
        let series = [Series {
            name: "loss".into(),
            points: vec![(0.0, 2.5), (1000.0, 1.5), (2000.0, 1.25)],
        }];
        let svg = line_plot_xy("t", "step", "loss", Scale::Linear, Scale::Fit, &series);
        for tick in [">0<", ">500<", ">1000<", ">2000<", ">1.5<", ">2<", ">2.5<"] {
            assert!(svg.contains(tick), "{tick} missing");
        }
        assert!(!svg.contains(">1<"), "Fit starts at the data, not at zero");
        let from_zero = line_plot_xy("t", "step", "loss", Scale::Linear, Scale::Linear, &series);
        assert!(from_zero.contains(">0.5<"));
    }
}
