//! Usage charts: a key's requests over time as a PNG for a Discord reply
//! (`/apikey usage`).
//!
//! Pure: no I/O, no clock, no system fonts. [`render_png`] draws a stacked
//! bar chart, one bar per bucket stacked by outcome, on a white card (dark
//! text on white reads the same on Discord's dark and light themes), with a
//! title, a legend with each outcome's total, time ticks in UTC (hours for a
//! day, days for a week or a month) and the requests per bucket up the side.
//! A bucket with no requests is a gap; a period without any request says so.
//!
//! Drawn with plotters into an RGB buffer and encoded with `png`; text is
//! DejaVu Sans (`assets/fonts/`, Bitstream Vera licence beside it), embedded
//! and laid out and rasterised with ab_glyph by [`Canvas`], not by plotters'
//! own ab_glyph text (0.3.7 drops each glyph's left side bearing: "1" and
//! "ok" came out unevenly spaced). Glyphs DejaVu Sans lacks (CJK, emoji in a
//! key's name) come out as its empty-box glyph.

use std::ops::Range;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, ScaleFont};
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};

mod canvas;

use canvas::{font_data, Canvas};

/// The bitmap backend's error, which the canvas passes on.
type BitMapBackendError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

/// One chart: what `/apikey usage` has counted for a key over a period.
pub struct UsageChart<'a> {
    /// Top line, e.g. "game (gk_live_Ab12) · last 24 h".
    pub title: &'a str,
    /// What one bucket is, for the vertical axis: "per hour", "per day".
    pub bucket_label: &'a str,
    /// Legend names in stacking order (the first at the bottom), e.g.
    /// `["ok", "4xx", "429", "5xx"]`. Colours go by position: sky blue,
    /// orange, navy, dark red (apart for every kind of colour blindness,
    /// see [`OUTCOME_COLOURS`]), then a palette.
    pub outcomes: &'a [&'a str],
    /// Start of each bucket with one count per outcome, in time order, every
    /// bucket of the period including empty ones (the axis runs from the
    /// first start to the last bucket's end; the bucket length is the
    /// shortest step between starts).
    pub buckets: &'a [(DateTime<Utc>, Vec<u64>)],
}

/// Size of the PNG, in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 400;

/// Renders the chart as a PNG of [`WIDTH`] × [`HEIGHT`]. Fails only on a
/// bucket whose count of counts differs from `outcomes` (a caller's bug) or
/// if drawing itself fails.
pub fn render_png(chart: &UsageChart<'_>) -> anyhow::Result<Vec<u8>> {
    let font = font_data()?;
    let data = Prepared::new(chart)?;
    let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT));
        let root = Canvas { bitmap, font }.into_drawing_area();
        draw(&root, chart, &data).map_err(|e| anyhow!("drawing the usage chart: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing the usage chart: {e}"))?;
    }
    encode(&rgb)
}

const BACKGROUND: RGBColor = RGBColor(255, 255, 255);
const BORDER: RGBColor = RGBColor(209, 213, 219);
const TEXT: RGBColor = RGBColor(17, 24, 39);
const MUTED: RGBColor = RGBColor(75, 85, 99);
const AXIS: RGBColor = RGBColor(107, 114, 128);
const GRID: RGBColor = RGBColor(229, 231, 235);

/// ok, 4xx, 429, 5xx: sky blue and orange (Okabe and Ito's), navy, dark
/// red. Every pair stays at least 34 apart in CIEDE2000, for normal vision
/// and after Machado et al. (2009)'s protanopia, deuteranopia and
/// tritanopia at full severity (the test below checks at least 10); green,
/// amber, orange and red, the obvious choice, fall to 7.
pub const OUTCOME_COLOURS: [RGBColor; 4] =
    [RGBColor(86, 180, 233), RGBColor(230, 159, 0), RGBColor(30, 58, 138), RGBColor(153, 27, 30)];
/// Outcomes past the fourth, in turn.
const PALETTE: [RGBColor; 8] = [
    RGBColor(37, 99, 235),
    RGBColor(124, 58, 237),
    RGBColor(13, 148, 136),
    RGBColor(219, 39, 119),
    RGBColor(100, 116, 139),
    RGBColor(77, 124, 15),
    RGBColor(14, 116, 144),
    RGBColor(146, 64, 14),
];

fn colour(position: usize) -> RGBColor {
    match OUTCOME_COLOURS.get(position) {
        Some(c) => *c,
        None => PALETTE[(position - OUTCOME_COLOURS.len()) % PALETTE.len()],
    }
}

const MARGIN: i32 = 16;
const HEADER_HEIGHT: u32 = 70;
const MESSAGE: &str = "no requests in this period";

/// The buckets sorted and checked, with what the drawing needs.
struct Prepared {
    /// (start in Unix seconds, counts), by start.
    buckets: Vec<(i64, Vec<u64>)>,
    /// Bucket length in seconds.
    width: i64,
    /// Sum per outcome.
    totals: Vec<u64>,
    max_bucket: u64,
    /// The largest bucket the count axis shows whole (see [`axis_top`]).
    axis_top: u64,
}

impl Prepared {
    fn new(chart: &UsageChart<'_>) -> anyhow::Result<Self> {
        let mut buckets = Vec::with_capacity(chart.buckets.len());
        let mut totals = vec![0u64; chart.outcomes.len()];
        let mut max_bucket = 0u64;
        for (start, counts) in chart.buckets {
            if counts.len() != chart.outcomes.len() {
                bail!(
                    "usage chart: the bucket at {start} has {} counts for {} outcomes",
                    counts.len(),
                    chart.outcomes.len()
                );
            }
            for (total, count) in totals.iter_mut().zip(counts) {
                *total = total.saturating_add(*count);
            }
            max_bucket = max_bucket.max(counts.iter().fold(0u64, |a, c| a.saturating_add(*c)));
            buckets.push((start.timestamp(), counts.clone()));
        }
        buckets.sort_by_key(|(start, _)| *start);
        let width = buckets
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|step| *step > 0)
            .min()
            .unwrap_or_else(|| width_from_label(chart.bucket_label));
        let axis_top = axis_top(buckets.iter().map(|(_, c)| c.iter().fold(0u64, |a, n| a.saturating_add(*n))));
        Ok(Self { buckets, width, totals, max_bucket, axis_top })
    }

    fn total(&self) -> u64 {
        self.totals.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }
}

/// A bucket more than this many times the median of the non-empty ones is
/// a spike: drawn broken, so that it does not flatten every other bar.
const SPIKE_RATIO: u64 = 10;
/// The least height of a bar with any request, in pixels.
const MIN_BAR_PX: i32 = 4;

/// The count axis's top: the largest bucket total that is not a spike (at
/// most [`SPIKE_RATIO`] times the median of the non-empty buckets). Bars
/// above it are drawn to the top of the plot, broken, with their count
/// written beside them.
fn axis_top(totals: impl Iterator<Item = u64>) -> u64 {
    let mut totals: Vec<u64> = totals.filter(|t| *t > 0).collect();
    totals.sort_unstable();
    let Some(median) = totals.get(totals.len().saturating_sub(1) / 2).copied() else { return 0 };
    let limit = median.saturating_mul(SPIKE_RATIO);
    totals.iter().rev().copied().find(|t| *t <= limit).unwrap_or(median)
}

/// A lone bucket's length, from its label.
fn width_from_label(label: &str) -> i64 {
    let label = label.to_ascii_lowercase();
    if label.contains("minute") {
        60
    } else if label.contains("week") {
        7 * DAY
    } else if label.contains("day") {
        DAY
    } else {
        HOUR
    }
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// 1970-01-05, the first Monday after the epoch: weekly ticks fall on Mondays.
const MONDAY: i64 = 4 * DAY;
/// Tick steps in seconds, finest first; the finest giving at most
/// `MAX_TICKS` ticks is used.
const STEPS: [i64; 16] = [
    60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    28 * DAY,
    91 * DAY,
];
const MAX_TICKS: i64 = 9;

/// The time axis in Unix seconds, with ticks on round UTC times.
struct TimeAxis {
    range: Range<i64>,
    step: i64,
    ticks: Vec<i64>,
}

impl TimeAxis {
    fn new(range: Range<i64>) -> Self {
        let span = (range.end - range.start).max(1);
        let step = STEPS.iter().copied().find(|s| span / s <= MAX_TICKS).unwrap_or(span);
        let offset = if step >= 7 * DAY { MONDAY } else { 0 };
        let first = (range.start - offset).div_euclid(step) * step + offset;
        let first = if first < range.start { first + step } else { first };
        let ticks = (0..).map(|i| first + i * step).take_while(|t| *t <= range.end).collect();
        Self { range, step, ticks }
    }
}

/// A tick's label: times of day (a date at midnight) for ticks under a day
/// apart, weekday and date for daily ticks, the date for wider ones.
fn time_label(step: i64, t: i64) -> String {
    let Some(time) = DateTime::from_timestamp(t, 0) else { return String::new() };
    let format = if step < DAY && t.rem_euclid(DAY) != 0 {
        "%H:%M"
    } else if step == DAY {
        "%a %-d"
    } else {
        "%b %-d"
    };
    time.format(format).to_string()
}

fn linear(frac: f64, (lo, hi): (i32, i32)) -> i32 {
    lo + (frac * f64::from(hi - lo)).round() as i32
}

impl Ranged for TimeAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = i64;

    fn map(&self, value: &i64, limit: (i32, i32)) -> i32 {
        let span = (self.range.end - self.range.start).max(1) as f64;
        linear((value - self.range.start) as f64 / span, limit)
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<i64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<i64> {
        self.range.clone()
    }
}

/// Requests per bucket, from 0 to a round maximum, ticks a round step apart.
struct CountAxis {
    max: u64,
    step: u64,
}

impl CountAxis {
    fn new(max_bucket: u64) -> Self {
        if max_bucket == 0 {
            return Self { max: 4, step: 1 };
        }
        // About four intervals, each 1, 2 or 5 × 10^k.
        let rough = max_bucket.div_ceil(4).max(1);
        let mut magnitude = 1u64;
        while magnitude.saturating_mul(10) <= rough {
            magnitude *= 10;
        }
        let step = [1, 2, 5, 10].iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(10 * magnitude);
        Self { max: max_bucket.div_ceil(step) * step, step }
    }
}

impl Ranged for CountAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = u64;

    fn map(&self, value: &u64, limit: (i32, i32)) -> i32 {
        linear(*value as f64 / self.max as f64, limit)
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<u64> {
        (0..=self.max / self.step).map(|i| i * self.step).collect()
    }

    fn range(&self) -> Range<u64> {
        0..self.max
    }
}

type Area<'b> = DrawingArea<Canvas<'b>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn font(size: f64, colour: RGBColor) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&colour)
}

fn draw(root: &Area<'_>, chart: &UsageChart<'_>, data: &Prepared) -> DrawResult {
    root.fill(&BACKGROUND)?;
    root.draw(&Rectangle::new([(0, 0), (WIDTH as i32 - 1, HEIGHT as i32 - 1)], BORDER))?;
    draw_header(root, chart, data)?;

    let body = root.clone().shrink((0, HEADER_HEIGHT), (WIDTH, HEIGHT - HEADER_HEIGHT));
    let (Some(first), Some(last)) = (data.buckets.first(), data.buckets.last()) else {
        // No buckets at all: no period to draw an axis for.
        let (w, h) = body.dim_in_pixel();
        let style = font(16.0, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
        body.draw(&Text::new(MESSAGE, (w as i32 / 2, h as i32 / 2 - MARGIN), style))?;
        return Ok(());
    };
    let x = TimeAxis::new(first.0..last.0 + data.width);
    let step = x.step;
    let y = CountAxis::new(data.axis_top);
    let y_desc = format!("requests {}", chart.bucket_label.trim());
    let mut plot = ChartBuilder::on(&body)
        .margin_left(MARGIN as u32 - 4)
        .margin_right(MARGIN as u32 + 8)
        .margin_bottom(10)
        .margin_top(6)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    let x_labels = move |t: &i64| time_label(step, *t);
    // With nothing counted the scale means nothing: only its zero is labelled.
    let empty = data.total() == 0;
    let y_labels = move |n: &u64| if empty && *n > 0 { String::new() } else { compact(*n) };
    plot.configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .set_all_tick_mark_size(4)
        .label_style(font(13.0, TEXT))
        .axis_desc_style(font(13.0, MUTED))
        .x_desc("UTC")
        .y_desc(y_desc)
        .x_label_formatter(&x_labels)
        .y_label_formatter(&y_labels)
        .draw()?;

    if empty {
        let area = plot.plotting_area();
        let (xr, yr) = (area.get_x_range(), area.get_y_range());
        let centre = (area.map_coordinate(&(xr.start, 0)).0 + area.map_coordinate(&(xr.end, 0)).0) / 2;
        let middle = (area.map_coordinate(&(xr.start, yr.start)).1 + area.map_coordinate(&(xr.start, yr.end)).1) / 2;
        let style = font(16.0, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(MESSAGE, (centre, middle), style))?;
        return Ok(());
    }

    // Bars in pixels, so that every non-empty bucket is at least
    // MIN_BAR_PX tall, every non-zero count at least one pixel, and the
    // stacks are contiguous.
    let area = plot.plotting_area();
    let x_px = |t: i64| area.map_coordinate(&(t, 0)).0;
    let y_px = |n: u64| area.map_coordinate(&(first.0, n)).1;
    let top = y_px(area.get_y_range().end);
    let zero = y_px(0);
    let base = zero + 1; // the row under a bar (zero is the grid line on the axis)
    let bucket_px = f64::from(x_px(first.0 + data.width) - x_px(first.0));
    // A gap between bars when they are wide enough to show one.
    let inset = if bucket_px >= 6.0 { (data.width as f64 * 0.12) as i64 } else { 0 };
    let count_style = font(11.0, MUTED);
    for (start, counts) in &data.buckets {
        let total = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        if total == 0 {
            continue;
        }
        let left = x_px(start + inset);
        // plotters fills a rectangle up to, not including, its second corner.
        let right = x_px(start + data.width - inset).max(left + 1);
        let broken = total > data.axis_top;
        let height = if broken { base - top } else { (base - y_px(total)).clamp(MIN_BAR_PX, base - top) };
        let mut below = base;
        let mut sum = 0u64;
        for (position, count) in counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            sum = sum.saturating_add(*count);
            let rise = (f64::from(height) * sum as f64 / total as f64).round() as i32;
            let row = (base - rise).min(below - 1).max(top);
            if row >= below {
                break;
            }
            root.draw(&Rectangle::new([(left, row), (right, below)], colour(position).filled()))?;
            below = row;
        }
        if broken {
            // The break: a gap across the bar near its top, and its count.
            root.draw(&Rectangle::new([(left, top + 8), (right, top + 12)], BACKGROUND.filled()))?;
            let label = compact(total);
            let label_width = text_width(root, &label, &count_style)?;
            let x = if right + 3 + label_width < WIDTH as i32 - MARGIN { right + 3 } else { left - 3 - label_width };
            root.draw(&Text::new(label, (x, top + 2), count_style.clone()))?;
        }
    }
    Ok(())
}

/// Title and totals on the first line, the legend on the second.
fn draw_header(root: &Area<'_>, chart: &UsageChart<'_>, data: &Prepared) -> DrawResult {
    let right_edge = WIDTH as i32 - MARGIN;
    let summary = if data.buckets.is_empty() || data.total() == 0 {
        String::new()
    } else {
        format!("{} requests, peak {} {}", grouped(data.total()), grouped(data.max_bucket), chart.bucket_label.trim())
    };
    let summary_style = font(13.0, MUTED).pos(Pos::new(HPos::Right, VPos::Top));
    let summary_width = if summary.is_empty() { 0 } else { text_width(root, &summary, &summary_style)? + 16 };
    let title_style = font(20.0, TEXT);
    let title = fit(root, chart.title, &title_style, right_edge - MARGIN - summary_width)?;
    root.draw(&Text::new(title, (MARGIN, 12), title_style))?;
    if !summary.is_empty() {
        root.draw(&Text::new(summary, (right_edge, 17), summary_style))?;
    }

    let centre = Pos::new(HPos::Left, VPos::Center);
    let name_style = font(13.0, TEXT).pos(centre);
    let count_style = font(13.0, MUTED).pos(centre);
    let y = 48;
    let mut x = MARGIN;
    for (position, name) in chart.outcomes.iter().enumerate() {
        let count = grouped(data.totals[position]);
        let name_width = text_width(root, name, &name_style)?;
        let item_width = 12 + 6 + name_width + 5 + text_width(root, &count, &count_style)?;
        if x + item_width > right_edge {
            root.draw(&Text::new("…", (x, y), name_style.clone()))?;
            break;
        }
        root.draw(&Rectangle::new([(x, y - 6), (x + 11, y + 5)], colour(position).filled()))?;
        root.draw(&Text::new(*name, (x + 18, y), name_style.clone()))?;
        root.draw(&Text::new(count, (x + 18 + name_width + 5, y), count_style.clone()))?;
        x += item_width + 20;
    }
    Ok(())
}

fn text_width(root: &Area<'_>, text: &str, style: &TextStyle<'_>) -> Result<i32, Box<dyn std::error::Error>> {
    Ok(root.estimate_text_size(text, style)?.0 as i32)
}

/// `text`, cut short with "…" to fit `width` pixels.
fn fit(root: &Area<'_>, text: &str, style: &TextStyle<'_>, width: i32) -> Result<String, Box<dyn std::error::Error>> {
    if text_width(root, text, style)? <= width {
        return Ok(text.to_owned());
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().collect::<String>().trim_end().to_owned() + "…";
        if text_width(root, &cut, style)? <= width {
            return Ok(cut);
        }
    }
    Ok(String::new())
}

/// 12345 → "12,345".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Axis numbers: "950", "1,500", "20k", "2.5M".
fn compact(n: u64) -> String {
    fn short(value: f64, unit: &str) -> String {
        let text = format!("{value:.1}");
        format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
    }
    match n {
        0..10_000 => grouped(n),
        10_000..1_000_000 => short(n as f64 / 1e3, "k"),
        1_000_000..1_000_000_000 => short(n as f64 / 1e6, "M"),
        _ => short(n as f64 / 1e9, "G"),
    }
}

fn encode(rgb: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding the usage chart")?;
    writer.write_image_data(rgb).context("encoding the usage chart")?;
    writer.finish().context("encoding the usage chart")?;
    Ok(out)
}

#[cfg(test)]
mod tests;
