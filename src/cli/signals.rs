//! SIGINT and SIGTERM, for every command, installed once before the command starts
//! ([`install`]). The first signal sets a flag ([`Stop`]) that the library polls: the
//! Hub stream, the cache reads and a layer's reads fail at their next read
//! (`HubConfig::cancel`, `layer::Stoppable`), and async work run through
//! [`Stop::block_on`] is dropped at once (its requests cancelled, nothing tagged, the
//! files its guards hold removed). Staging directories are removed as their writers
//! are dropped. The command then says what finished and what did not (the context of
//! its [`Interrupted`] error, printed by `main` on one line) and exits with 128 + the
//! signal (130, 143). A second signal exits at once with that status.

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A run stopped by a signal: exit status 128 + `signal`.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}", signal_name(*.signal))]
pub struct Interrupted {
    pub signal: i32,
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        _ => "SIGINT",
    }
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

static STOP: OnceLock<Stop> = OnceLock::new();

/// Installs the handlers, once, before any work starts (so no signal is missed).
pub fn install() -> anyhow::Result<&'static Stop> {
    if let Some(s) = STOP.get() {
        return Ok(s);
    }
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
    Ok(STOP.get_or_init(|| stop))
}

/// The handlers [`install`] put in place (installing them if it was not called).
pub fn stop() -> &'static Stop {
    install().expect("installing the signal handlers")
}

impl Stop {
    /// For `HubConfig::cancel`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// For `layer::Stoppable`.
    pub fn flag_ref(&self) -> &AtomicBool {
        &self.flag
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

    /// Resolves once a signal came.
    pub async fn signalled(&self) {
        depotai::cancel::wait(&self.flag).await
    }

    /// `work` on `rt` until it ends or a signal comes. A signal drops it where it
    /// waits (requests cancelled, guards run) and gives [`Interrupted`].
    pub fn block_on<T, E: Into<anyhow::Error>>(
        &self,
        rt: &tokio::runtime::Runtime,
        work: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        let r = rt.block_on(async {
            tokio::select! {
                r = work => r.map_err(Into::into),
                () = self.signalled() => Err(anyhow::Error::new(self.interrupted().unwrap_or(Interrupted { signal: SIGINT }))),
            }
        });
        self.check(r)
    }

    /// A result of work the flag stops: after a signal, its error (whatever the
    /// stopped work failed with) is the signal's.
    pub fn check<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        match (r, self.interrupted()) {
            (Err(e), Some(i)) if e.downcast_ref::<Interrupted>().is_none() => {
                Err(anyhow::Error::new(i))
            }
            (r, _) => r,
        }
    }
}

/// The line `main` prints for a run a signal ended: the signal, then what finished
/// and what did not (the contexts, outermost first).
pub fn stopped_line(e: &anyhow::Error, i: &Interrupted) -> String {
    let said: Vec<String> = e
        .chain()
        .filter(|c| c.downcast_ref::<Interrupted>().is_none())
        .map(ToString::to_string)
        .collect();
    match said.is_empty() {
        true => format!("{i}"),
        false => format!("{i}: {}", said.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_one_line_naming_the_signal_then_what_was_left_unfinished() {
        let i = Interrupted { signal: SIGTERM };
        let e = anyhow::Error::new(Interrupted { signal: SIGTERM })
            .context("no layout written")
            .context("building acme/m: 1.0 MiB of 4.0 MiB read");
        assert_eq!(
            stopped_line(&e, &i),
            "stopped by SIGTERM: building acme/m: 1.0 MiB of 4.0 MiB read; no layout written"
        );
        assert_eq!(i.exit_code(), 143);
        assert_eq!(Interrupted { signal: SIGINT }.exit_code(), 130);
    }
}
