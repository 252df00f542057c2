//! The demo's output while it runs: a live multi-line status redrawn in place on a terminal,
//! a plain progress line every few seconds otherwise (so logs and CI output are not flooded
//! with redraws), or nothing at all for embedding programs and tests.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::Progress;

/// How the demo shows its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ViewMode {
    /// A live view if stdout is a terminal, else plain lines.
    #[default]
    Auto,
    /// The live terminal view.
    Live,
    /// A plain progress line every few seconds.
    Plain,
    /// Nothing but the start-up lines.
    Quiet,
}

/// Interval between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// The running view.
#[derive(Debug)]
pub(crate) enum View {
    Live(ProgressBar),
    Plain { last: Option<Instant> },
    Quiet,
}

impl View {
    pub(crate) fn new(mode: ViewMode) -> View {
        let live = match mode {
            ViewMode::Auto => std::io::stdout().is_terminal(),
            ViewMode::Live => true,
            ViewMode::Plain => false,
            ViewMode::Quiet => return View::Quiet,
        };
        if !live {
            return View::Plain { last: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout_with_hz(8));
        let style = ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        View::Live(bar)
    }

    /// Prints a line above the live view (or plainly).
    pub(crate) fn println(&self, line: &str) {
        match self {
            View::Live(bar) => bar.println(line),
            View::Plain { .. } | View::Quiet => println!("{line}"),
        }
    }

    /// Shows `p` (plain mode prints only every few seconds, or when `force`).
    pub(crate) fn update(&mut self, p: &Progress, force: bool) {
        match self {
            View::Live(bar) => {
                bar.set_message(p.render_live());
                bar.tick();
            }
            View::Plain { last } => {
                if force || last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    *last = Some(Instant::now());
                    println!("{}", p.render_plain());
                }
            }
            View::Quiet => {}
        }
    }

    /// Leaves the last status on screen and stops redrawing.
    pub(crate) fn finish(&self) {
        if let View::Live(bar) = self {
            bar.finish();
        }
    }
}
