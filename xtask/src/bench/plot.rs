//! The plots: one SVG per VM loop, overhead against table size for each
//! ward condition, with the empty-program floor, drawn with plotters' SVG
//! backend (text is written as SVG `<text>`, so no font files are needed).

use std::{fs, path::Path};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::results::{CONDITIONS, Overheads, SYSCALLS, syscall_rows};

/// The table sizes each ward condition runs at, left to right.
const SIZES: [u64; 3] = [0, 1_000, 100_000];

/// One colour per condition in [`CONDITIONS`] (ColorBrewer Dark2).
const COLOURS: [RGBColor; 3] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x75, 0x70, 0xb3),
];

/// Writes `overhead_{loop}.svg` for every loop with figures into `out`;
/// returns the markdown that shows them.
pub fn overhead_plots(out: &Path) -> Result<String> {
    let rows = syscall_rows(out)?;
    let mut md = String::from("\n");
    for (syscall, what) in SYSCALLS {
        let Some(o) = Overheads::of(&rows, syscall) else {
            continue;
        };
        let name = format!("overhead_{syscall}.svg");
        fs::write(out.join(&name), overhead_svg(&o, syscall, what)?)?;
        md.push_str(&format!("![{what}: overhead against table size]({name})\n"));
    }
    Ok(md)
}

/// One loop's plot: % over no ward by table size, a line per condition,
/// the floor dashed.
pub fn overhead_svg(o: &Overheads<'_>, syscall: &str, what: &str) -> Result<String> {
    let floor = o.percent(o.floor);
    let lines: Vec<Vec<(SegmentValue<usize>, f64)>> = CONDITIONS
        .iter()
        .map(|c| {
            SIZES
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    o.ns(c, Some(*s))
                        .map(|v| (SegmentValue::CenterOf(i), o.percent(v)))
                })
                .filter(|(_, p)| p.is_finite())
                .collect()
        })
        .collect();
    let ymax = lines
        .iter()
        .flatten()
        .map(|p| p.1)
        .chain([floor])
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max)
        // Room above the highest line for the legend.
        * 1.7;
    let ymin = lines
        .iter()
        .flatten()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::min);
    let mut svg = String::new();
    draw(&mut svg, syscall, what, floor, ymin, ymax, &lines)
        .map_err(|e| anyhow!("plotting {syscall}: {e}"))?;
    Ok(svg)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(
    svg: &mut String,
    syscall: &str,
    what: &str,
    floor: f64,
    ymin: f64,
    ymax: f64,
    lines: &[Vec<(SegmentValue<usize>, f64)>],
) -> DrawResult {
    let root = SVGBackend::with_string(svg, (640, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let grey = RGBColor(0x80, 0x80, 0x80);
    // A title and, under it, what the loop does (too long for one line).
    let (title, plot) = root.split_vertically(48);
    title.draw(&Text::new(
        format!("{syscall}: % over no ward by table size (6.12 VM, icount)"),
        (10, 8),
        ("sans-serif", 18),
    ))?;
    title.draw(&Text::new(
        what.to_owned(),
        (10, 30),
        ("sans-serif", 14).into_font().color(&grey),
    ))?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0..SIZES.len() - 1).into_segmented(), ymin..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 14))
        .x_desc("entries in the table")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                SIZES.get(*i).map_or(String::new(), |s| s.to_string())
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| format!("{v:.1}%"))
        .draw()?;
    if floor.is_finite() {
        chart
            .draw_series(DashedLineSeries::new(
                [(SegmentValue::Exact(0), floor), (SegmentValue::Last, floor)],
                4,
                4,
                grey.into(),
            ))?
            .label(format!("floor (empty LSM program) {floor:.1}%"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey));
    }
    for ((condition, colour), points) in CONDITIONS.iter().zip(COLOURS).zip(lines) {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().cloned(),
                colour.stroke_width(2),
            ))?
            .label(*condition)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new(p.clone(), 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(condition: &str, entries: Option<u64>, ns: f64) -> serde_json::Value {
        serde_json::json!({"syscall": "open_read", "condition": condition, "entries": entries, "ns": ns})
    }

    #[test]
    fn a_plot_has_a_line_per_condition_labels_and_the_floor() {
        let rows = vec![
            row("baseline", None, 1000.0),
            row("floor", None, 1033.0),
            row("unmanaged", Some(0), 1040.0),
            row("unmanaged", Some(1_000), 1041.0),
            row("unmanaged", Some(100_000), 1042.0),
            row("managed_granted", Some(0), 1200.0),
            row("managed_granted", Some(100_000), 1210.0),
        ];
        let o = Overheads::of(&rows, "open_read").unwrap();
        let svg = overhead_svg(&o, "open_read", "open+close (read)").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("open_read: % over no ward"), "{svg}");
        assert!(svg.contains("open+close (read)"), "{svg}");
        for text in [
            "100000",
            "unmanaged",
            "managed_granted",
            "floor (empty LSM program) 3.3%",
        ] {
            assert!(svg.contains(text), "{text} in {svg}");
        }
        // Two conditions with figures: two polylines, plus the legend's
        // and the floor's paths.
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
    }

    #[test]
    fn a_loop_with_only_its_reference_rows_still_plots() {
        let rows = vec![row("baseline", None, 1000.0), row("floor", None, 990.0)];
        let o = Overheads::of(&rows, "open_read").unwrap();
        let svg = overhead_svg(&o, "open_read", "open+close (read)").unwrap();
        assert!(svg.contains("floor (empty LSM program) -1.0%"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
