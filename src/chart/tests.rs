//! The chart against its promises: size, outcomes, empty periods, ticks,
//! colours apart for colour-blind readers, spikes that flatten nothing.

use super::*;
use chrono::TimeZone;

const OUTCOMES: [&str; 4] = ["ok", "4xx", "429", "5xx"];

fn series(start: DateTime<Utc>, step: i64, n: i64, f: impl Fn(i64) -> Vec<u64>) -> Vec<(DateTime<Utc>, Vec<u64>)> {
    (0..n).map(|i| (start + chrono::Duration::seconds(i * step), f(i))).collect()
}

fn render(title: &str, label: &str, buckets: &[(DateTime<Utc>, Vec<u64>)]) -> Vec<u8> {
    render_png(&UsageChart { title, bucket_label: label, outcomes: &OUTCOMES, buckets }).unwrap()
}

/// Width, height and RGB pixels of a PNG.
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

fn day() -> Vec<(DateTime<Utc>, Vec<u64>)> {
    let start = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
    series(start, HOUR, 24, |i| if i == 5 { vec![0; 4] } else { vec![100 + 10 * i as u64, 3, (i % 3) as u64, 1] })
}

fn has(pixels: &[u8], colour: RGBColor) -> bool {
    pixels.chunks(3).any(|p| p == [colour.0, colour.1, colour.2])
}

#[test]
fn a_png_of_the_fixed_size_with_bars_of_each_outcome() {
    let (w, h, pixels) = decode(&render("game · last 24 h", "per hour", &day()));
    assert_eq!((w, h), (WIDTH, HEIGHT));
    assert!(pixels.chunks(3).any(|p| p != &pixels[..3]), "one colour throughout");
    for position in 0..4 {
        assert!(has(&pixels, colour(position)), "no pixel of outcome {position}");
    }
}

#[test]
fn different_series_give_different_images() {
    let a = render("game", "per hour", &day());
    let mut other = day();
    other[3].1 = vec![900, 0, 0, 40];
    let b = render("game", "per hour", &other);
    assert_ne!(decode(&a).2, decode(&b).2);
}

#[test]
fn an_empty_period_says_so() {
    let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
    let zeros = series(start, HOUR, 24, |_| vec![0; 4]);
    // The message's dark grey text, centred where the bars would be: in
    // a band across the middle of the plot, on either kind of empty.
    let text_in_middle = |pixels: &[u8]| {
        (190..240usize).any(|y| {
            (250..550usize).any(|x| {
                let i = (y * WIDTH as usize + x) * 3;
                pixels[i..i + 3].iter().all(|c| *c < 150)
            })
        })
    };
    for buckets in [&zeros[..], &[]] {
        let (w, h, pixels) = decode(&render("idle key", "per hour", buckets));
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let below_header = &pixels[HEADER_HEIGHT as usize * WIDTH as usize * 3..];
        assert!(!has(below_header, colour(0)), "a bar in an empty period");
        assert!(text_in_middle(&pixels), "no message");
    }
    // A single request: a bar, no message.
    let mut one = zeros.clone();
    one[12].1[0] = 1;
    let (_, _, pixels) = decode(&render("idle key", "per hour", &one));
    assert!(!text_in_middle(&pixels), "the message with a request in the period");
}

#[test]
fn thirty_days_of_hours_and_more_outcomes_than_colours() {
    let start = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap();
    let month = series(start, HOUR, 720, |i| vec![(i % 97) as u64 * 1000, (i % 5) as u64, 0, (i % 50 == 0) as u64]);
    let (w, h, _) = decode(&render("game · last 30 d", "per hour", &month));
    assert_eq!((w, h), (WIDTH, HEIGHT));

    let outcomes: Vec<String> = (0..14).map(|i| format!("outcome {i}")).collect();
    let outcomes: Vec<&str> = outcomes.iter().map(String::as_str).collect();
    let buckets = series(start, DAY, 30, |i| (0..14).map(|o| (i + o) as u64).collect());
    let chart = UsageChart { title: "many", bucket_label: "per day", outcomes: &outcomes, buckets: &buckets };
    assert_eq!(decode(&render_png(&chart).unwrap()).0, WIDTH);
}

#[test]
fn a_bucket_with_the_wrong_number_of_counts_is_refused() {
    let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
    let buckets = vec![(start, vec![1, 2])];
    let chart = UsageChart { title: "t", bucket_label: "per hour", outcomes: &OUTCOMES, buckets: &buckets };
    let error = render_png(&chart).unwrap_err().to_string();
    assert!(error.contains("2 counts for 4 outcomes"), "{error}");
}

#[test]
fn ticks_fall_on_round_utc_times() {
    let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap().timestamp();
    // 24 hours from 14:00: every 3 hours, midnight labelled with the date.
    let axis = TimeAxis::new(at(2, 14)..at(3, 14));
    assert_eq!(axis.step, 3 * HOUR);
    assert_eq!(axis.ticks.first(), Some(&at(2, 15)));
    let labels: Vec<String> = axis.ticks.iter().map(|t| time_label(axis.step, *t)).collect();
    assert_eq!(labels, ["15:00", "18:00", "21:00", "Dec 3", "03:00", "06:00", "09:00", "12:00"]);
    // 7 days: daily, at midnight.
    let axis = TimeAxis::new(at(2, 14)..at(9, 14));
    assert_eq!(axis.step, DAY);
    assert_eq!(time_label(axis.step, axis.ticks[0]), "Thu 3");
    // 30 days: weekly, on Mondays.
    let axis = TimeAxis::new(at(1, 0)..at(31, 0));
    assert_eq!(axis.step, 7 * DAY);
    assert_eq!(time_label(axis.step, axis.ticks[0]), "Dec 7");
}

/// sRGB (0–255) to CIE L*a*b* (D65), through linear RGB and XYZ.
fn lab(rgb: [f64; 3]) -> deltae::LabValue {
    let [r, g, b] = rgb.map(|c| linear(c / 255.0));
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f64| if t > 216.0 / 24389.0 { t.cbrt() } else { (24389.0 / 27.0 * t + 16.0) / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    deltae::LabValue::new((116.0 * fy - 16.0) as f32, (500.0 * (fx - fy)) as f32, (200.0 * (fy - fz)) as f32)
        .expect("a colour in range")
}

fn linear(c: f64) -> f64 {
    if c < 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn gamma(c: f64) -> f64 {
    let c = c.clamp(0.0, 1.0);
    if c < 0.0031308 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// Machado, Oliveira and Fernandes (2009), severity 1.0, on linear RGB
/// (the matrices DaltonLens simulates with).
const PROTANOPIA: [[f64; 3]; 3] =
    [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]];
const DEUTERANOPIA: [[f64; 3]; 3] =
    [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.01182, 0.04294, 0.968881]];
const TRITANOPIA: [[f64; 3]; 3] =
    [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.3039]];

fn simulate(c: RGBColor, m: &[[f64; 3]; 3]) -> [f64; 3] {
    let rgb = [c.0, c.1, c.2].map(|v| linear(f64::from(v) / 255.0));
    m.map(|row| 255.0 * gamma(row[0] * rgb[0] + row[1] * rgb[1] + row[2] * rgb[2]))
}

#[test]
fn outcome_colours_stay_apart_for_every_kind_of_colour_blindness() {
    let normal = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let visions =
        [("normal", normal), ("protanopia", PROTANOPIA), ("deuteranopia", DEUTERANOPIA), ("tritanopia", TRITANOPIA)];
    let mut least = f32::MAX;
    for (vision, m) in visions {
        for i in 0..OUTCOME_COLOURS.len() {
            for j in i + 1..OUTCOME_COLOURS.len() {
                let (a, b) = (lab(simulate(OUTCOME_COLOURS[i], &m)), lab(simulate(OUTCOME_COLOURS[j], &m)));
                let difference = *deltae::DeltaE::new(a, b, deltae::DEMethod::DE2000).value();
                assert!(
                    difference >= 10.0,
                    "{vision}: {} and {} differ by {difference:.1}",
                    OUTCOME_COLOURS_NAMES[i],
                    OUTCOME_COLOURS_NAMES[j]
                );
                least = least.min(difference);
            }
        }
    }
    assert!(least > 30.0, "the palette's least CIEDE2000 difference fell to {least:.1}");
}

const OUTCOME_COLOURS_NAMES: [&str; 4] = OUTCOMES;

/// The height in pixels of each bar below the header, left to right:
/// runs of columns holding an outcome colour.
fn bar_heights(pixels: &[u8]) -> Vec<usize> {
    let is_bar = |x: usize, y: usize| {
        let i = (y * WIDTH as usize + x) * 3;
        OUTCOME_COLOURS.iter().any(|c| pixels[i..i + 3] == [c.0, c.1, c.2])
    };
    let mut bars = Vec::new();
    let mut current: Option<usize> = None;
    for x in 0..WIDTH as usize {
        let height = (HEADER_HEIGHT as usize..HEIGHT as usize).filter(|y| is_bar(x, *y)).count();
        match (height, current) {
            (0, Some(h)) => {
                bars.push(h);
                current = None;
            }
            (0, None) => {}
            (h, c) => current = Some(c.unwrap_or(0).max(h)),
        }
    }
    bars.extend(current);
    bars
}

#[test]
fn one_spike_does_not_flatten_the_other_buckets() {
    let start = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
    // A median of about 100 requests an hour, a bucket of 2 and one of
    // 200 times the median.
    let buckets = series(start, HOUR, 24, |i| match i {
        9 => vec![19_000, 500, 400, 100],
        15 => vec![2, 0, 0, 0],
        _ => vec![90 + i as u64, 3, (i % 3) as u64, (i % 7 == 0) as u64],
    });
    let (_, _, pixels) = decode(&render("spike", "per hour", &buckets));
    let heights = bar_heights(&pixels);
    assert_eq!(heights.len(), 24, "one bar per non-empty bucket: {heights:?}");
    assert!(heights.iter().all(|h| *h >= 4), "a bar under 4 px: {heights:?}");
    let mut sorted = heights.clone();
    sorted.sort_unstable();
    assert!(sorted[12] >= 100, "the usual buckets are flattened: {heights:?}");
    assert_eq!(heights.iter().position(|h| *h == sorted[23]), Some(9), "the spike is the tallest: {heights:?}");
}

#[test]
fn round_count_axes_and_numbers() {
    let axis = CountAxis::new(1234);
    assert_eq!((axis.max, axis.step), (1500, 500));
    assert_eq!((CountAxis::new(3).max, CountAxis::new(3).step), (3, 1));
    assert_eq!(CountAxis::new(0).max, 4);
    assert_eq!(grouped(1_234_567), "1,234,567");
    assert_eq!(grouped(999), "999");
    assert_eq!([compact(950), compact(1500), compact(20_000), compact(2_500_000)], ["950", "1,500", "20k", "2.5M"]);
}
