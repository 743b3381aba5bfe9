//! The latency-percentile chart (SVG), one line per server per scenario.
//!
//! The x axis has one slot per percentile (p50, p75, p90, p99, p99.9), evenly
//! spaced, so the tail gets as much room as the median: on a linear
//! percentile axis p99 and p99.9 would share a pixel. The y axis is
//! logarithmic: pipelined latencies (one sample per batch of 16) are an order
//! of magnitude above keep-alive ones and would otherwise flatten them.

use plotters::prelude::*;

use crate::wrk::PERCENTILE_LEVELS;

/// One line on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text, e.g. `keepalive-c64 — peregrine`.
    pub label: String,
    /// Server name: picks the colour, so each server keeps one colour.
    pub server: String,
    /// Scenario position: picks the marker, so each scenario keeps one shape.
    pub scenario_index: usize,
    /// (percentile level, latency in microseconds), levels from
    /// [`PERCENTILE_LEVELS`]; missing levels are simply left out.
    pub points: Vec<(f64, f64)>,
}

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 560);

/// The x slot of a percentile level; `None` for a level not on the axis.
fn slot(level: f64) -> Option<i32> {
    PERCENTILE_LEVELS.iter().position(|&l| l == level).and_then(|i| i32::try_from(i).ok())
}

/// `p50`, `p99.9`, … for the slot of a level; empty for the axis ends.
fn level_label(x: &SegmentValue<i32>) -> String {
    let (SegmentValue::CenterOf(i) | SegmentValue::Exact(i)) = *x else { return String::new() };
    usize::try_from(i)
        .ok()
        .and_then(|i| PERCENTILE_LEVELS.get(i))
        .map_or_else(String::new, |level| format!("p{level}"))
}

/// Milliseconds without trailing noise: `0.5`, `2`, `12.5`.
fn ms_label(ms: f64) -> String {
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn server_colour(server: &str, fallback_index: usize) -> RGBColor {
    match server {
        crate::report::PEREGRINE => RGBColor(31, 119, 180),
        crate::report::NGINX => RGBColor(214, 39, 40),
        _ => {
            let (r, g, b) = Palette99::pick(fallback_index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// Renders `series` as an SVG document. Errors when there is nothing to draw.
pub fn latency_svg(series: &[Series], title: &str) -> Result<String, String> {
    let all: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|&(_, us)| us)).collect();
    let (Some(min_us), Some(max_us)) =
        (all.iter().copied().reduce(f64::min), all.iter().copied().reduce(f64::max))
    else {
        return Err("no latency percentiles to plot".into());
    };
    // Milliseconds, padded so no point sits on the frame.
    let (y_lo, y_hi) = (min_us / 1e3 / 1.5, max_us / 1e3 * 1.5);
    let last_slot = slot(PERCENTILE_LEVELS[PERCENTILE_LEVELS.len() - 1]).unwrap_or(0);

    let mut svg = String::new();
    let err = |e: &dyn std::fmt::Display| format!("plotting: {e}");
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((0..last_slot).into_segmented(), (y_lo..y_hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms, log scale)")
            .x_labels(PERCENTILE_LEVELS.len())
            // Enough ticks that a log axis spanning one decade still has labels.
            .y_labels(12)
            // One light line between labels: a log axis with the default
            // count turns into a grey band.
            .y_max_light_lines(1)
            .x_label_formatter(&level_label)
            .y_label_formatter(&|y| ms_label(*y))
            .draw()
            .map_err(|e| err(&e))?;

        for (i, s) in series.iter().enumerate() {
            if s.points.is_empty() {
                continue;
            }
            let colour = server_colour(&s.server, i);
            let line = colour.stroke_width(2);
            let points: Vec<(SegmentValue<i32>, f64)> = s
                .points
                .iter()
                .filter_map(|&(level, us)| Some((SegmentValue::CenterOf(slot(level)?), us / 1e3)))
                .collect();
            let drawn = chart
                .draw_series(LineSeries::new(points.iter().cloned(), line))
                .map_err(|e| err(&e))?;
            // Marker shape per scenario, in the plot and in the legend.
            match s.scenario_index % 3 {
                0 => {
                    drawn.label(&s.label).legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(-10, 0), (10, 0)], line)
                            + Circle::new((0, 0), 4, colour.filled())
                    });
                    chart
                        .draw_series(
                            points.iter().map(|p| Circle::new(p.clone(), 4, colour.filled())),
                        )
                        .map_err(|e| err(&e))?;
                }
                1 => {
                    drawn.label(&s.label).legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(-10, 0), (10, 0)], line)
                            + TriangleMarker::new((0, 0), 6, colour.filled())
                    });
                    chart
                        .draw_series(
                            points
                                .iter()
                                .map(|p| TriangleMarker::new(p.clone(), 6, colour.filled())),
                        )
                        .map_err(|e| err(&e))?;
                }
                _ => {
                    drawn.label(&s.label).legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(-10, 0), (10, 0)], line)
                            + Cross::new((0, 0), 5, colour.stroke_width(2))
                    });
                    chart
                        .draw_series(
                            points.iter().map(|p| Cross::new(p.clone(), 5, colour.stroke_width(2))),
                        )
                        .map_err(|e| err(&e))?;
                }
            }
        }
        chart
            .configure_series_labels()
            // Latencies rise to the right, so the lower right is the emptiest corner.
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, server: &str, index: usize, scale: f64) -> Series {
        Series {
            label: label.into(),
            server: server.into(),
            scenario_index: index,
            points: PERCENTILE_LEVELS.iter().map(|&l| (l, scale * (1.0 + l / 10.0))).collect(),
        }
    }

    #[test]
    fn percentile_axis() {
        assert_eq!(slot(50.0), Some(0));
        assert_eq!(slot(99.9), Some(4));
        assert_eq!(slot(99.99), None);
        assert_eq!(level_label(&SegmentValue::CenterOf(4)), "p99.9");
        assert_eq!(level_label(&SegmentValue::Exact(0)), "p50");
        assert_eq!(level_label(&SegmentValue::CenterOf(5)), "");
        assert_eq!(level_label(&SegmentValue::Last), "");
        assert_eq!(ms_label(0.5), "0.5");
        assert_eq!(ms_label(20.0), "20");
    }

    #[test]
    fn renders_every_series_with_a_legend() {
        let all = [
            series("keepalive-c64 — peregrine", "peregrine", 0, 600.0),
            series("keepalive-c64 — nginx", "nginx", 0, 650.0),
            series("pipeline16-c64 — peregrine", "peregrine", 2, 9000.0),
            Series { points: vec![(50.0, 700.0)], ..series("x — nginx", "nginx", 1, 1.0) },
        ];
        let svg = latency_svg(&all, "Latency percentiles").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for label in ["keepalive-c64 — peregrine", "pipeline16-c64 — peregrine", "p99.9", "p50"]
        {
            assert!(svg.contains(label), "SVG lacks {label:?}");
        }
        assert!(svg.contains("Latency percentiles"));
    }

    #[test]
    fn refuses_an_empty_chart() {
        assert!(latency_svg(&[], "t").is_err());
        let empty = Series { points: vec![], ..series("a", "nginx", 0, 1.0) };
        assert!(latency_svg(&[empty], "t").is_err());
    }
}

/// One panel of [`time_series_svg`]: a quantity sampled over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The y axis' description, e.g. `RSS (MiB)`.
    pub y_desc: String,
    /// (seconds since the start, value).
    pub points: Vec<(f64, f64)>,
}

/// Panels stacked in one SVG, sharing the time axis (the soak's RSS and request rate).
pub fn time_series_svg(title: &str, panels: &[Panel]) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting: {e}");
    let t_max = panels.iter().flat_map(|p| p.points.iter().map(|&(t, _)| t)).fold(1.0f64, f64::max);
    let mut svg = String::new();
    {
        let height = 280 * panels.len().max(1) as u32 + 40;
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| err(&e))?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let y_max = panel.points.iter().map(|&(_, v)| v).fold(0.0f64, f64::max) * 1.1 + 1e-9;
            let mut chart = ChartBuilder::on(area)
                .margin(16)
                .x_label_area_size(40)
                .y_label_area_size(72)
                .build_cartesian_2d(0.0..t_max, 0.0..y_max)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc(panel.y_desc.as_str())
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(LineSeries::new(panel.points.iter().copied(), BLUE.stroke_width(2)))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
