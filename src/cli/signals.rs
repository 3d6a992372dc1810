//! SIGINT and SIGTERM for every command that builds from the Hub: the first signal sets
//! a flag the library polls (`HubConfig::cancel`: the stream, the cache reads and the
//! registry check stop, the layout's staging directory is removed, nothing is tagged)
//! and the command exits with 128 + the signal (130, 143); a second signal exits at
//! once with that status.

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A run stopped by a signal: exit status 128 + `signal`.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(1)
    }
}

/// The flag the signals set, and which signal came.
pub struct Stop {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// Installs the handlers (before any work starts, so no signal is missed).
    pub fn install() -> anyhow::Result<Stop> {
        let stop = Stop {
            flag: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            flag::register_conditional_shutdown(sig, 128 + sig, stop.flag.clone())
                .context("installing a signal handler")?;
            flag::register_usize(sig, stop.signal.clone(), sig as usize)
                .context("installing a signal handler")?;
            flag::register(sig, stop.flag.clone()).context("installing a signal handler")?;
        }
        Ok(stop)
    }

    /// For `HubConfig::cancel`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The signal that came, if one did.
    pub fn interrupted(&self) -> Option<Interrupted> {
        self.is_set().then(|| Interrupted {
            signal: match self.signal.load(Ordering::SeqCst) {
                0 => SIGINT,
                s => i32::try_from(s).unwrap_or(SIGINT),
            },
        })
    }
}
