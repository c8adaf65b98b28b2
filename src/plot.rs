//! SVG line plots for benchmark and training results, drawn with `plotters`: log or linear
//! axes, one line per series, a legend beside the chart.

use plotters::coord::Shift;
use plotters::coord::combinators::{IntoLogRange, LogCoord};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

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
    /// Logarithmic: base 2 on x (sizes), base 10 on y.
    Log,
}

/// Why a plot could not be drawn.
pub type PlotError = Box<dyn std::error::Error + Send + Sync>;

const SIZE: (u32, u32) = (860, 440);
/// Pixels to the right of the chart, for the legend.
const LEGEND_WIDTH: u32 = 330;
const LEGEND_CHARS: usize = 44;
/// Series with more points than this get no markers (they would hide a training curve).
const MARKED_POINTS: usize = 50;
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// An SVG document plotting `series` with x on a log scale and y on `y_scale`.
pub fn line_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_scale: Scale,
    series: &[Series],
) -> Result<String, PlotError> {
    line_plot_xy(title, x_label, y_label, Scale::Log, y_scale, series)
}

/// An SVG document plotting `series` with x on `x_scale` and y on `y_scale`; points an axis
/// cannot show (not finite, or zero and below on a log axis) are left out.
pub fn line_plot_xy(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_scale: Scale,
    y_scale: Scale,
    series: &[Series],
) -> Result<String, PlotError> {
    // Finite points only (plotters cannot lay out an infinite range), positive on log axes.
    let usable = |&(x, y): &(f64, f64)| {
        x.is_finite()
            && y.is_finite()
            && (x_scale != Scale::Log || x > 0.0)
            && (y_scale != Scale::Log || y > 0.0)
    };
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = s.points.iter().copied().filter(usable).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s.name.as_str(), points)
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (chart, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let points = lines.iter().flat_map(|(_, points)| points.iter().copied());
        let (xs, ys): (Vec<f64>, Vec<f64>) = points.unzip();
        if xs.is_empty() {
            chart.titled(title, ("sans-serif", 15))?.draw(&Text::new(
                "no data",
                (70, 80),
                ("sans-serif", 12),
            ))?;
        } else {
            let labels = (title, x_label, y_label);
            let x = span(&xs, x_scale);
            let y = span(&ys, y_scale);
            // The axis types differ by scale, so each combination is its own call.
            // Sizes on a log axis read best in powers of two (1K, 32K).
            let x_format = if x_scale == Scale::Log {
                compact
            } else {
                decimal
            };
            match (x_scale == Scale::Log, y_scale == Scale::Log) {
                (true, true) => draw(&chart, labels, log(x, 2.0), log(y, 10.0), x_format, &lines)?,
                (true, false) => draw(&chart, labels, log(x, 2.0), y.0..y.1, x_format, &lines)?,
                (false, true) => draw(&chart, labels, x.0..x.1, log(y, 10.0), x_format, &lines)?,
                (false, false) => draw(&chart, labels, x.0..x.1, y.0..y.1, x_format, &lines)?,
            }
        }
        draw_legend(&legend, &lines)?;
        root.present()?;
    }
    Ok(svg)
}

/// A log axis over `(low, high)` with ticks at powers of `base`.
fn log((low, high): (f64, f64), base: f64) -> LogCoord<f64> {
    (low..high).log_scale().base(base).into()
}

/// The chart: axes with labels and a light grid, then every line (markers on sparse ones).
fn draw<X, Y>(
    area: &DrawingArea<SVGBackend, Shift>,
    (title, x_label, y_label): (&str, &str, &str),
    x: X,
    y: Y,
    x_format: fn(f64) -> String,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| x_format(*x))
        .y_label_formatter(&|y| decimal(*y))
        .label_style(("sans-serif", 12))
        .draw()?;
    for (index, (_, points)) in lines.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        if points.len() <= MARKED_POINTS {
            let markers = points.iter().map(|&p| Circle::new(p, 3, color.filled()));
            chart.draw_series(markers)?;
        }
    }
    Ok(())
}

/// One row per line: its colour and its name, cut to the legend's width.
fn draw_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    for (index, (name, _)) in lines.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let top = 40 + 16 * index as i32;
        area.draw(&Rectangle::new([(12, top), (24, top + 3)], color.filled()))?;
        area.draw(&Text::new(
            shortened(name),
            (30, top - 4),
            ("sans-serif", 12),
        ))?;
    }
    Ok(())
}

/// The axis range of `values` on `scale`, widened when it is a single value.
fn span(values: &[f64], scale: Scale) -> (f64, f64) {
    let (low, high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let low = if scale == Scale::Linear {
        low.min(0.0)
    } else {
        low
    };
    match (high > low, scale) {
        (true, Scale::Log) => (low / 1.1, high * 1.1),
        (true, _) => (low, high + (high - low) * 0.02),
        (false, Scale::Log) => (low / 2.0, high * 2.0),
        (false, _) => (low - 1.0, high + 1.0),
    }
}

/// A name cut to the legend's width.
fn shortened(name: &str) -> String {
    match name.char_indices().nth(LEGEND_CHARS) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of an SVG document, in order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|rest| {
                let body = &rest[rest.find('>').unwrap() + 1..rest.find("</text>").unwrap()];
                body.trim().to_string()
            })
            .collect()
    }

    /// The numbers among the texts.
    fn numbers(svg: &str) -> Vec<f64> {
        texts(svg).iter().filter_map(|t| t.parse().ok()).collect()
    }

    #[test]
    fn a_plot_has_one_line_per_series_and_escapes_names() {
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
        let svg = line_plot("t", "S", "ms", Scale::Log, &series).unwrap();
        for color in &COLORS[..2] {
            let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2);
            assert_eq!(svg.matches(&stroke).count(), 1, "one line in {stroke}");
        }
        let labels = texts(&svg);
        assert!(labels.contains(&"a &lt;gpu&gt;".to_string()), "{labels:?}");
        assert!(labels.contains(&"1K".to_string()) && labels.contains(&"2K".to_string()));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "the zero point is left out on a log axis"
        );
        let not_finite = [Series {
            name: "x".into(),
            points: vec![(1024.0, f64::INFINITY), (2048.0, f64::NAN), (4096.0, 3.0)],
        }];
        let svg = line_plot("t", "S", "ms", Scale::Linear, &not_finite).unwrap();
        assert_eq!(svg.matches("<circle").count(), 1, "only the finite point");
        let empty = line_plot("t", "S", "x", Scale::Linear, &[]).unwrap();
        assert!(texts(&empty).contains(&"no data".to_string()));
    }

    #[test]
    fn fit_leaves_out_zero_and_linear_starts_there() {
        let series = [Series {
            name: "loss".into(),
            points: vec![(0.0, 2.5), (1000.0, 1.5), (2000.0, 1.25)],
        }];
        // The y ticks are the numbers below 100 (the x ticks are 0 and steps of hundreds).
        let y_ticks = |svg: &str| -> Vec<f64> {
            numbers(svg)
                .into_iter()
                .filter(|&n| n > 0.0 && n < 100.0)
                .collect()
        };
        let fit = line_plot_xy("t", "step", "loss", Scale::Linear, Scale::Fit, &series).unwrap();
        assert!(
            y_ticks(&fit).iter().all(|&y| y >= 1.25),
            "{:?}",
            texts(&fit)
        );
        assert!(numbers(&fit).contains(&1000.0), "x ticks in plain decimals");
        let from_zero =
            line_plot_xy("t", "step", "loss", Scale::Linear, Scale::Linear, &series).unwrap();
        assert!(
            y_ticks(&from_zero).iter().any(|&y| y < 1.0),
            "{:?}",
            texts(&from_zero)
        );
    }
}
