//! What a person sees on a terminal while depotai works: a bar for each transfer
//! (download, compression, upload) with its rate and time left, a stall shown as a
//! stall, and for `build --all` a line for the whole run. Nothing is drawn when stderr
//! is not a terminal or with `--quiet`; lines said meanwhile ([`Bars::say`]) are printed
//! above the bars, or plainly without them.
//!
//! Every line is cut to the terminal's width as it is drawn (a wrapped line would leave
//! its first half behind on every redraw). Rates are measured over the last
//! [`WINDOW`] from the bar's own bytes, not averaged since the start, so a slowing
//! transfer shows its current rate; a bar that got no byte for [`STALL`] says
//! `stalled` and for how long instead of a rate and a time left.

use depotai::job::Event;
use depotai::pipeline::LayerEvent;
use depotai::units::human_bytes;
use indicatif::style::ProgressTracker;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The span a rate is measured over.
pub const WINDOW: Duration = Duration::from_secs(5);
/// No byte for this long is a stall.
pub const STALL: Duration = Duration::from_secs(3);
/// Samples of a bar's bytes closer than this are one.
const SAMPLE: Duration = Duration::from_millis(50);
/// How often the bars are redrawn without new bytes (so a stall's clock runs).
const REDRAW: Duration = Duration::from_millis(250);

/// The bars of one command (a build, a push, a whole `build --all` run), or nothing.
pub struct Bars {
    multi: Option<MultiProgress>,
}

impl Bars {
    /// Bars on stderr when it is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Bars {
        let shown = !quiet && std::io::stderr().is_terminal();
        Bars {
            multi: shown.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// Prints `line` on stderr, above the bars while they are drawn.
    pub fn say(&self, line: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// A bar of `total` bytes labelled `label`.
    pub fn bytes(&self, label: &'static str, total: u64) -> Meter {
        Meter::new(self.multi.as_ref(), label, total)
    }

    /// A line of text (a title), cut to the terminal's width.
    pub fn text(&self, text: &str) -> Text {
        let line = TextLine(Arc::new(Mutex::new(text.to_string())));
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{text}")
                    .expect("valid template")
                    .with_key("text", line.clone()),
            );
            bar.enable_steady_tick(REDRAW);
            bar
        });
        Text { bar, line }
    }

    /// The bars for one job's events (see [`JobBars::event`]); `pushing`: it uploads
    /// to a registry.
    pub fn job(&self, title: &str, pushing: bool) -> JobBars<'_> {
        JobBars {
            bars: self,
            title: self.text(title),
            title_text: title.to_string(),
            pushing,
            state: Mutex::new(JobState::default()),
        }
    }
}

/// A line of text among the bars.
pub struct Text {
    bar: Option<ProgressBar>,
    line: TextLine,
}

impl Text {
    pub fn set(&self, text: &str) {
        *self.line.0.lock().unwrap_or_else(|p| p.into_inner()) = text.to_string();
        if let Some(b) = &self.bar {
            // Drawn from the line above; setting the message redraws it now (a tick
            // would wait for the steady one).
            b.set_message(text.to_string());
        }
    }
}

/// Draws a line of text cut to the terminal's width.
#[derive(Clone)]
struct TextLine(Arc<Mutex<String>>);

impl ProgressTracker for TextLine {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, _: &ProgressState, _: Instant) {}

    fn reset(&mut self, _: &ProgressState, _: Instant) {}

    fn write(&self, _: &ProgressState, w: &mut dyn std::fmt::Write) {
        let text = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = w.write_str(&cut(text, width()));
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Bytes counted into a total, drawn as a bar when there are bars; removed when
/// dropped.
pub struct Meter {
    bar: Option<ProgressBar>,
    rate: Arc<Rate>,
}

impl Meter {
    fn new(multi: Option<&MultiProgress>, label: &'static str, total: u64) -> Meter {
        let rate = Arc::new(Rate::new(Instant::now()));
        let bar = multi.map(|m| {
            let bar = m.add(ProgressBar::new(total));
            let line = Line {
                label,
                rate: rate.clone(),
            };
            bar.set_style(
                ProgressStyle::with_template("{line}")
                    .expect("valid template")
                    .with_key("line", line),
            );
            bar.enable_steady_tick(REDRAW);
            bar
        });
        Meter { bar, rate }
    }

    pub fn advance(&self, n: u64) {
        self.rate.add(n, Instant::now());
        if let Some(b) = &self.bar {
            b.inc(n);
            // Bytes fetched again (a file that failed its check) are more than the
            // total said: the total grows rather than the bar running past its end.
            if b.length().is_some_and(|len| b.position() > len) {
                b.set_length(b.position());
            }
        }
    }

    /// `more` bytes on top of the total (a layer built again).
    pub fn add_to_total(&self, more: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(more);
        }
    }

    /// A new total (an estimate made better, as the upload's).
    pub fn set_total(&self, total: u64, estimated: bool) {
        self.rate.estimated.store(estimated, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    pub fn position(&self) -> u64 {
        self.rate.pos.load(Ordering::Relaxed)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The recent history of a bar's bytes.
struct Rate {
    created: Instant,
    pos: AtomicU64,
    /// The total is an estimate (drawn with `~`).
    estimated: AtomicBool,
    /// (when, bytes so far), the last [`WINDOW`] of them and one older.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// What a bar's rate field says.
#[derive(Debug, PartialEq)]
enum Pace {
    /// Too early to tell.
    Unknown,
    /// Bytes per second and the time left (None when the total is reached).
    Rate(f64, Option<Duration>),
    /// No byte for this long.
    Stalled(Duration),
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate {
            created: now,
            pos: AtomicU64::new(0),
            estimated: AtomicBool::new(false),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    fn add(&self, n: u64, now: Instant) {
        let pos = self.pos.fetch_add(n, Ordering::Relaxed) + n;
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        // At most one sample per 50 ms: a few hundred in the window, however many reads.
        match s.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < SAMPLE => last.1 = pos,
            _ => s.push_back((now, pos)),
        }
        // Keep one sample older than the window: the rate is measured from it.
        while s.len() > 2 && s.get(1).is_some_and(|&(t, _)| now - t > WINDOW) {
            s.pop_front();
        }
    }

    fn pace(&self, total: u64, now: Instant) -> Pace {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let pos = self.pos.load(Ordering::Relaxed);
        let last = s.back().map_or(self.created, |&(t, _)| t);
        if pos < total && now.saturating_duration_since(last) >= STALL {
            return Pace::Stalled(now.saturating_duration_since(last));
        }
        // From the oldest sample, or from the start when the window holds all of it.
        let (t0, p0) = match s.front() {
            Some(&(t, p)) if now - t > WINDOW || s.len() > 1 => (t, p),
            _ => (self.created, 0),
        };
        let span = now.saturating_duration_since(t0).as_secs_f64();
        if span < 1.0 || pos == p0 {
            return Pace::Unknown;
        }
        let rate = (pos - p0) as f64 / span;
        let left = (pos < total).then(|| Duration::from_secs_f64((total - pos) as f64 / rate));
        Pace::Rate(rate, left)
    }
}

/// Draws a byte bar's line: label, bar, bytes, rate and time left (or the stall),
/// within the terminal's width.
#[derive(Clone)]
struct Line {
    label: &'static str,
    rate: Arc<Rate>,
}

impl ProgressTracker for Line {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, _: &ProgressState, _: Instant) {}

    fn reset(&mut self, _: &ProgressState, _: Instant) {}

    fn write(&self, state: &ProgressState, w: &mut dyn std::fmt::Write) {
        let total = state.len().unwrap_or(0);
        let estimated = self.rate.estimated.load(Ordering::Relaxed);
        let pace = self.rate.pace(total, Instant::now());
        let _ = w.write_str(&line(
            self.label,
            state.pos(),
            total,
            estimated,
            &pace,
            width(),
        ));
    }
}

/// The columns a line may take: the terminal's width less one (a line that fills the
/// last column makes some terminals wrap the cursor, and the next redraw lands a line
/// low).
fn width() -> usize {
    usize::from(console::Term::stderr().size().1)
        .saturating_sub(1)
        .max(20)
}

/// `download [=====>    ] 12.3 MiB / 87.0 MiB  4.1 MiB/s  eta 18s`, at most `width`
/// columns: the bar shrinks first, then the line is cut.
fn line(label: &str, pos: u64, total: u64, estimated: bool, pace: &Pace, width: usize) -> String {
    let amounts = format!(
        "{} / {}{}",
        human_bytes(pos),
        if estimated { "~" } else { "" },
        human_bytes(total)
    );
    let pace = match pace {
        Pace::Unknown => String::new(),
        Pace::Rate(r, Some(left)) => {
            format!("{}/s  eta {}", human_bytes(*r as u64), duration(*left))
        }
        Pace::Rate(r, None) => format!("{}/s", human_bytes(*r as u64)),
        Pace::Stalled(d) => format!("stalled {}", duration(*d)),
    };
    let rest = format!(" {amounts}  {pace}");
    let fixed = label.len().max(8) + 3 + console::measure_text_width(&rest);
    let cells = width.saturating_sub(fixed).min(30);
    let mut out = format!("{label:<8} ");
    if cells >= 5 {
        let done = if total == 0 {
            cells
        } else {
            ((pos.min(total) as f64 / total as f64) * cells as f64) as usize
        };
        let _ = write!(
            out,
            "[{}{}{}]",
            "=".repeat(done.saturating_sub(1)),
            if done > 0 { ">" } else { "" },
            " ".repeat(cells - done)
        );
    }
    out.push_str(rest.trim_end());
    cut(out, width)
}

/// `s` cut to `width` columns (with `…`), if it is wider.
fn cut(s: String, width: usize) -> String {
    if console::measure_text_width(&s) <= width {
        return s;
    }
    console::truncate_str(&s, width, "…").into_owned()
}

/// `18s`, `3m05s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One job's bars, made from its events: a title, then the download (the bytes the
/// listing says are not in the cache), the compression (every content byte) and, for
/// a registry, the upload. Every total is known from the listing before the first
/// byte; the upload's is an estimate (the layers' compressed size) until the last layer
/// is made.
pub struct JobBars<'a> {
    bars: &'a Bars,
    title: Text,
    title_text: String,
    pushing: bool,
    state: Mutex<JobState>,
}

#[derive(Default)]
struct JobState {
    /// The title once the job is planned.
    title: String,
    /// Each layer's content bytes, as it started.
    layers: BTreeMap<usize, u64>,
    content: u64,
    read: u64,
    download: Option<Meter>,
    compress: Option<Meter>,
    upload: Option<Meter>,
}

impl JobBars<'_> {
    /// Renders one of the job's events; lines worth keeping (a resume) are said above
    /// the bars unless `quiet`.
    pub fn event(&self, e: &Event<'_>, quiet: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::TagChecked { published, .. } => self.title.set(&format!(
                "{}: the registry's tag is {published}",
                self.title_text
            )),
            Event::Planned {
                content_bytes,
                files,
                layers,
            } => {
                st.content = *content_bytes;
                st.title = format!(
                    "{}: {files} file{}, {}, {layers} layer{}",
                    self.title_text,
                    if *files == 1 { "" } else { "s" },
                    human_bytes(*content_bytes),
                    if *layers == 1 { "" } else { "s" }
                );
                self.title.set(&st.title);
            }
            Event::Fetching {
                download_bytes,
                cached_bytes,
                resumed_bytes,
            } => {
                // Top to bottom in the order the bytes flow.
                if *download_bytes > 0 {
                    st.download = Some(self.bars.bytes("download", *download_bytes));
                }
                st.compress = Some(self.bars.bytes("compress", st.content));
                if self.pushing {
                    let upload = self.bars.bytes("upload", st.content);
                    upload.set_total(st.content, true);
                    st.upload = Some(upload);
                }
                let had = cached_bytes + resumed_bytes;
                if had > 0 {
                    self.title.set(&format!(
                        "{}, {} of it in the Hub cache",
                        st.title,
                        human_bytes(had)
                    ));
                }
            }
            Event::Downloaded(n) => {
                if let Some(m) = &st.download {
                    m.advance(*n);
                }
            }
            Event::Read(n) => {
                st.read += n;
                if let Some(m) = &st.compress {
                    m.advance(*n);
                }
            }
            Event::Uploading(n) => {
                let (read, content) = (st.read, st.content);
                if let Some(m) = &st.upload {
                    m.advance(*n);
                    // The compressed size so far, scaled to all the content: exact once
                    // every byte is read.
                    if read >= content {
                        m.set_total(m.position(), false);
                    } else if read > 0 {
                        let est = m.position() as f64 * content as f64 / read as f64;
                        m.set_total(est as u64, true);
                    }
                }
            }
            Event::Layer(LayerEvent::Started {
                n, content_bytes, ..
            }) => {
                st.layers.insert(*n, *content_bytes);
            }
            // The layer's bytes are read (and compressed) once more.
            Event::Layer(LayerEvent::Retrying { n, .. }) => {
                let more = st.layers.get(n).copied().unwrap_or(0);
                if let Some(m) = &st.compress {
                    m.add_to_total(more);
                }
            }
            Event::Resuming { path, from, size } if !quiet => self.bars.say(&format!(
                "resuming {path} at {} of {}",
                human_bytes(*from),
                human_bytes(*size)
            )),
            _ => {}
        }
    }
}

/// A progress bar over `total` bytes for one command (a local build, a push): shown only
/// when stderr is a terminal and not `quiet`.
pub struct Progress {
    bars: Bars,
    _title: Text,
    meter: Meter,
}

impl Progress {
    pub fn bytes(label: &'static str, total: u64, message: &str, quiet: bool) -> Progress {
        let bars = Bars::new(quiet);
        let title = bars.text(message);
        let meter = bars.bytes(label, total);
        Progress {
            bars,
            _title: title,
            meter,
        }
    }

    pub fn advance(&self, n: u64) {
        self.meter.advance(n);
    }

    /// Prints `line` on stderr, above the bar while it is drawn.
    pub fn say(&self, line: &str) {
        self.bars.say(line);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.meter.bar {
            b.finish_and_clear();
        }
        if let Some(b) = &self._title.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bars drawn nowhere, whose lengths and positions can be read.
    fn undrawn() -> Bars {
        Bars {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::hidden())),
        }
    }

    fn length(m: &Option<Meter>) -> Option<u64> {
        m.as_ref()?.bar.as_ref()?.length()
    }

    #[test]
    fn a_layer_built_again_and_a_file_fetched_again_grow_their_totals() {
        let bars = undrawn();
        let job = bars.job("acme/m", false);
        job.event(
            &Event::Planned {
                files: 2,
                content_bytes: 100,
                layers: 2,
            },
            true,
        );
        job.event(
            &Event::Fetching {
                download_bytes: 100,
                cached_bytes: 0,
                resumed_bytes: 0,
            },
            true,
        );
        let role = depotai::plan::LayerRole::All;
        job.event(
            &Event::Layer(LayerEvent::Started {
                n: 1,
                role: &role,
                content_bytes: 60,
            }),
            true,
        );
        job.event(&Event::Read(30), true);
        let error = depotai::pipeline::BuildError::Destination("x".into());
        job.event(
            &Event::Layer(LayerEvent::Retrying {
                n: 1,
                error: &error,
            }),
            true,
        );
        job.event(&Event::Downloaded(130), true);
        let st = job.state.lock().unwrap();
        // Layer 1's 60 bytes are read again; 30 bytes more were downloaded than listed.
        assert_eq!(length(&st.compress), Some(160));
        assert_eq!(length(&st.download), Some(130));
        assert!(st.upload.is_none());
    }

    #[test]
    fn the_upload_total_is_the_content_then_scaled_by_the_ratio_then_exact() {
        let bars = undrawn();
        let job = bars.job("acme/m", true);
        job.event(
            &Event::Planned {
                files: 1,
                content_bytes: 1000,
                layers: 1,
            },
            true,
        );
        job.event(
            &Event::Fetching {
                download_bytes: 0,
                cached_bytes: 1000,
                resumed_bytes: 0,
            },
            true,
        );
        let upload = |job: &JobBars<'_>| {
            let st = job.state.lock().unwrap();
            let m = st.upload.as_ref().unwrap();
            (length(&st.upload), m.rate.estimated.load(Ordering::Relaxed))
        };
        // Before the first byte: the content's size, marked as an estimate.
        assert_eq!(upload(&job), (Some(1000), true));
        job.event(&Event::Read(500), true);
        job.event(&Event::Uploading(400), true);
        assert_eq!(upload(&job), (Some(800), true));
        job.event(&Event::Read(500), true);
        job.event(&Event::Uploading(420), true);
        // Every byte read: the compressed size is known.
        assert_eq!(upload(&job), (Some(820), false));
        // All of it in the cache: no download bar.
        assert!(job.state.lock().unwrap().download.is_none());
    }

    #[test]
    fn a_line_never_exceeds_the_width() {
        let pace = Pace::Rate(4.0 * 1024.0 * 1024.0, Some(Duration::from_secs(75)));
        for width in [20, 40, 60, 80, 200] {
            let l = line("download", 5 << 20, 87 << 20, false, &pace, width);
            assert!(
                console::measure_text_width(&l) <= width,
                "{width}: {l:?} is wider"
            );
        }
        assert_eq!(
            line("download", 5 << 20, 10 << 20, false, &pace, 80),
            "download [=============>              ] 5.0 MiB / 10.0 MiB  4.0 MiB/s  eta 1m15s"
        );
        // Narrower: no bar, then the line is cut.
        assert_eq!(
            line("download", 5 << 20, 10 << 20, false, &pace, 45),
            "download  5.0 MiB / 10.0 MiB  4.0 MiB/s  eta…"
        );
    }

    #[test]
    fn no_byte_for_the_stall_time_is_a_stall_not_the_last_rate() {
        let t = Instant::now();
        let r = Rate::new(t);
        for i in 1..=20 {
            r.add(1 << 20, t + Duration::from_millis(100 * i));
        }
        assert!(matches!(
            r.pace(100 << 20, t + Duration::from_secs(2)),
            Pace::Rate(..)
        ));
        assert_eq!(
            r.pace(100 << 20, t + Duration::from_secs(7)),
            Pace::Stalled(Duration::from_secs(5))
        );
        // Done is not a stall.
        assert!(matches!(
            r.pace(20 << 20, t + Duration::from_secs(7)),
            Pace::Rate(_, None)
        ));
    }

    #[test]
    fn the_rate_is_the_recent_one_not_the_average_since_the_start() {
        let t = Instant::now();
        let r = Rate::new(t);
        // 10 MiB/s for 10 s, then 1 MiB/s for 10 s.
        for i in 1..=100u64 {
            r.add(1 << 20, t + Duration::from_millis(100 * i));
        }
        for i in 1..=100u64 {
            r.add(
                100 << 10,
                t + Duration::from_secs(10) + Duration::from_millis(100 * i),
            );
        }
        let Pace::Rate(rate, _) = r.pace(1 << 40, t + Duration::from_secs(20)) else {
            panic!("no rate")
        };
        let mib = rate / (1 << 20) as f64;
        assert!((0.9..1.2).contains(&mib), "{mib} MiB/s");
    }

    #[test]
    fn a_bar_keeps_a_bounded_history_however_many_reads() {
        let t = Instant::now();
        let r = Rate::new(t);
        // A read every 10 µs for 20 s.
        for i in 1..=2_000_000u64 {
            r.add(4096, t + Duration::from_micros(10 * i));
        }
        let kept = r.samples.lock().unwrap().len();
        // One sample per 50 ms over the 5 s window, and one older.
        assert!(kept <= 102, "{kept} samples");
        let Pace::Rate(rate, _) = r.pace(1 << 50, t + Duration::from_secs(20)) else {
            panic!("no rate")
        };
        let mib = rate / (1 << 20) as f64;
        assert!((380.0..400.0).contains(&mib), "{mib} MiB/s");
    }

    #[test]
    fn no_time_left_is_guessed_before_a_second_of_bytes() {
        let t = Instant::now();
        let r = Rate::new(t);
        r.add(1 << 20, t + Duration::from_millis(100));
        assert_eq!(
            r.pace(1 << 30, t + Duration::from_millis(300)),
            Pace::Unknown
        );
    }
}
