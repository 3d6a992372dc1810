//! The stop flag: set from outside (the command line's signal handler), polled by the
//! work under way, which then ends with its own `Interrupted` error and removes what it
//! half wrote. Blocking readers check it at each read ([`crate::layer::Stoppable`]);
//! async work is raced against [`wait`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often [`wait`] looks at the flag: bounds how late a stop is seen, at a cost of
/// twenty wake-ups a second.
pub const POLL: Duration = Duration::from_millis(50);

/// Resolves once `flag` is set.
pub async fn wait(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(POLL).await;
    }
}
