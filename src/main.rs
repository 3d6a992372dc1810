//! The `depotai` command. Parses arguments, runs one command, and turns errors into a
//! single line and an exit code; the work is done by the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    few_malloc_arenas();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::Interrupted>() {
            // Not an error: what the signal stopped, and what had finished.
            Some(i) => {
                eprintln!("depotai: {}", cli::stopped_line(&e, i));
                ExitCode::from(i.exit_code())
            }
            None => {
                eprintln!("depotai: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// glibc gives each thread that allocates an arena of its own, up to eight per core,
/// and keeps what is freed in them: the multi-megabyte chunk, window and upload buffers
/// that the compression, download and upload threads pass between them then pile up in a
/// dozen arenas. One arena per core (at least two) held a streamed build's peak memory at
/// about two thirds on two cores (and it ran no slower): no more threads run at once than
/// there are cores, so they seldom wait for an arena.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called before any thread
        // starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
