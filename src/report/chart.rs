//! Charts as SVG, drawn with the `plotters` crate: line charts (curves per
//! epoch, accuracy against pruning ratio) and horizontal grouped bars (per
//! layer, latency). The run report (`report.html`) and `prunex
//! sensitivity` share them. Input is plain data; output is one `<svg>`
//! element as text.

use plotters::prelude::*;

/// One line of a line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a planned or reference curve).
    pub dashed: bool,
}

impl Series {
    /// A solid line.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            dashed: false,
        }
    }

    /// A dashed line.
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            dashed: true,
            ..Series::new(name, points)
        }
    }
}

/// A line chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Vertical markers: at x, with a label (where pruning happened).
    pub marks: Vec<(f64, String)>,
    /// Fixed y range (else the data's, padded).
    pub y_range: Option<(f64, f64)>,
    /// x counts whole things (epochs): ticks only at whole numbers.
    pub x_whole: bool,
}

/// Horizontal grouped bars: one row per category, one bar per series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarChart {
    /// What the bars measure (the x axis' label).
    pub x_label: String,
    /// Row labels, top to bottom.
    pub categories: Vec<String>,
    /// Series: a name and one value per category.
    pub series: Vec<(String, Vec<f64>)>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("the chart could not be drawn: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError(format!("{e:?}"))
}

/// The chart width in pixels.
pub const WIDTH: u32 = 760;

/// The n-th color of the charts' palette (colour-blind safe, Okabe–Ito).
pub fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(120, 120, 120),
        RGBColor(240, 228, 66),
    ];
    let c = P[i % P.len()];
    if i < P.len() {
        c
    } else {
        // Past eight lines the palette repeats, darker each round.
        let k = 1.0 - 0.25 * ((i / P.len()) as f64).min(3.0);
        RGBColor(
            (c.0 as f64 * k) as u8,
            (c.1 as f64 * k) as u8,
            (c.2 as f64 * k) as u8,
        )
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

/// A range around `(lo, hi)` with some room (and some width when they meet).
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = if hi > lo { (hi - lo) * 0.06 } else { 0.5 };
    (lo - pad, hi + pad)
}

/// Draws a line chart; the legend sits under the plot, one row per few
/// lines, so that many lines (one per layer) stay readable.
pub fn line_svg(c: &LineChart) -> Result<String, ChartError> {
    let points = || c.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = padded(
        bounds(points().map(|p| p.0).chain(c.marks.iter().map(|m| m.0))).unwrap_or((0.0, 1.0)),
    );
    let (y0, y1) = c
        .y_range
        .unwrap_or_else(|| padded(bounds(points().map(|p| p.1)).unwrap_or((0.0, 1.0))));
    let per_row = 3usize;
    let legend_rows = c.series.len().div_ceil(per_row) as u32;
    let plot_h = 300u32;
    let height = plot_h + 24 + legend_rows * 20;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, legend) = root.split_vertically(plot_h);
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        let plain = |x: &f64| format!("{}", (x * 1000.0).round() / 1000.0);
        let x_fmt: &dyn Fn(&f64) -> String = if c.x_whole { &whole } else { &plain };
        // Whole-number ticks: at most one per unit of the axis.
        let x_ticks = if c.x_whole {
            ((x1 - x0).floor() as usize + 1).clamp(2, 12)
        } else {
            10
        };
        chart
            .configure_mesh()
            .x_desc(c.x_label.as_str())
            .y_desc(c.y_label.as_str())
            .x_labels(x_ticks)
            .x_label_formatter(x_fmt)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for (x, label) in &c.marks {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(*x, y0), (*x, y1)],
                    4,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*x, y1),
                    ("sans-serif", 13).into_font().color(&grey),
                )))
                .map_err(err)?;
        }
        for (i, s) in c.series.iter().enumerate() {
            let style = color(i).stroke_width(2);
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(err)?;
            }
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color(i).filled())))
                .map_err(err)?;
        }
        // The legend: colored dash and name, `per_row` per row.
        let col_w = (WIDTH as i32 - 80) / per_row as i32;
        for (i, s) in c.series.iter().enumerate() {
            let (row, col) = ((i / per_row) as i32, (i % per_row) as i32);
            let (x, y) = (70 + col * col_w, 14 + row * 20);
            let style = color(i).stroke_width(3);
            legend
                .draw(&PathElement::new(vec![(x, y), (x + 22, y)], style))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    s.name.clone(),
                    (x + 28, y - 7),
                    ("sans-serif", 13).into_font(),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Draws horizontal grouped bars, one row per category (its height grows
/// with the number of rows), with a legend above.
pub fn bars_svg(c: &BarChart) -> Result<String, ChartError> {
    let n = c.categories.len().max(1);
    let k = c.series.len().max(1);
    let row_h = (10 * k as u32 + 8).max(18);
    let label_w = c
        .categories
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 40) as u32
        * 7
        + 16;
    let height = (60 + 24 + n as u32 * row_h).max(200);
    let hi = bounds(c.series.iter().flat_map(|(_, v)| v.iter().copied())).map_or(1.0, |(_, hi)| {
        if hi > 0.0 {
            hi * 1.08
        } else {
            1.0
        }
    });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (legend, plot) = root.split_vertically(24);
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(label_w)
            // Rows as segments (their labels), bars in a secondary
            // coordinate system over the same area, a row per unit.
            .build_cartesian_2d(0.0..hi, (0..n as i32 - 1).into_segmented())
            .map_err(err)?
            .set_secondary_coord(0.0..hi, 0.0..n as f64);
        let names = &c.categories;
        // Rows top to bottom: category i sits in row n − 1 − i.
        let label = |y: &SegmentValue<i32>| -> String {
            match y {
                SegmentValue::CenterOf(r) | SegmentValue::Exact(r) => names
                    .get((n as i32 - 1 - r).max(0) as usize)
                    .cloned()
                    .unwrap_or_default(),
                SegmentValue::Last => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .x_desc(c.x_label.as_str())
            .y_label_formatter(&label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        let band = 0.8 / k as f64;
        for (j, (_, values)) in c.series.iter().enumerate() {
            chart
                .draw_secondary_series(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, &v)| {
                            let row = (n - 1 - i) as f64;
                            let top = row + 0.9 - j as f64 * band;
                            Rectangle::new(
                                [(0.0, top - band), (v.max(0.0), top)],
                                color(j).filled(),
                            )
                        }),
                )
                .map_err(err)?;
        }
        for (j, (name, _)) in c.series.iter().enumerate() {
            let x = label_w as i32 + 10 + j as i32 * 160;
            legend
                .draw(&Rectangle::new([(x, 8), (x + 14, 20)], color(j).filled()))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    name.clone(),
                    (x + 20, 7),
                    ("sans-serif", 13).into_font(),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The structure of an SVG document as an indented list of element names
/// with their counts, without coordinates or text: what a snapshot of a
/// chart should hold still when its data moves.
pub fn structure(svg: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut last: Option<(usize, String, usize)> = None;
    let flush = |out: &mut String, last: &mut Option<(usize, String, usize)>| {
        if let Some((d, name, n)) = last.take() {
            let times = if n > 1 {
                format!(" ×{n}")
            } else {
                String::new()
            };
            out.push_str(&format!("{}{name}{times}\n", "  ".repeat(d)));
        }
    };
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        rest = &rest[end.min(rest.len())..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(_closing) = tag.strip_prefix('/') {
            depth = depth.saturating_sub(1);
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        match &mut last {
            Some((d, n, count)) if *d == depth && *n == name => *count += 1,
            _ => {
                flush(&mut out, &mut last);
                last = Some((depth, name, 1));
            }
        }
        if !tag.ends_with('/') {
            depth += 1;
        }
    }
    flush(&mut out, &mut last);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text content of every `<text>` element, trimmed (plotters writes
    /// it on its own line).
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim())
            })
            .collect()
    }

    #[test]
    fn structure_counts_siblings_and_nests() {
        let s = structure("<svg a='1'><g><line/><line/><text>x</text></g><rect/></svg>");
        assert_eq!(s, "svg\n  g\n    line ×2\n    text\n  rect\n");
    }

    #[test]
    fn a_line_chart_holds_every_series_and_its_legend() {
        let c = LineChart {
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series::new("a", vec![(1.0, 2.0), (2.0, 1.0)]),
                Series::dashed("b", vec![(1.0, 1.5), (2.0, f64::NAN)]),
            ],
            marks: vec![(1.5, "pruned".into())],
            y_range: None,
            x_whole: true,
        };
        let svg = line_svg(&c).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts = texts(&svg);
        for label in ["a", "b", "pruned", "epoch", "loss"] {
            assert!(texts.contains(&label), "{label} not in {texts:?}");
        }
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn bars_have_a_rectangle_per_finite_value_and_every_label() {
        let c = BarChart {
            x_label: "channels".into(),
            categories: vec!["conv1".into(), "layer1.0.conv1".into()],
            series: vec![
                ("before".into(), vec![64.0, 64.0]),
                ("after".into(), vec![32.0, f64::NAN]),
            ],
        };
        let svg = bars_svg(&c).unwrap();
        let texts = texts(&svg);
        for label in ["conv1", "layer1.0.conv1", "before", "after", "channels"] {
            assert!(texts.contains(&label), "{label} not in {texts:?}");
        }
        // Three bars and two legend swatches, beside the white background.
        let fills = svg.matches("<rect").count();
        assert!(fills >= 5, "{fills} rects in {svg}");
    }
}
