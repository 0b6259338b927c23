//! A progress bar on a terminal for long commands (backup, restore, verify): bytes, rate and
//! time left, drawn from the library's shared counters. Nothing is drawn when stderr is not a
//! terminal (cron, Kubernetes jobs) or with --json.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use walarch_core::backup::Progress;

/// Draws `progress` until dropped.
#[derive(Debug)]
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    pub fn start(progress: Arc<Progress>, what: &'static str, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || !std::io::stderr().is_terminal() {
            return ProgressDisplay { stop, thread: None };
        }
        let bar = ProgressBar::new(0).with_message(what);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    bar.set_length(progress.total());
                    bar.set_position(progress.done());
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            }
        });
        ProgressDisplay {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
