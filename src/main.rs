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
        Err(e) => {
            eprintln!("depotai: error: {e:#}");
            if e.downcast_ref::<cli::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// glibc gives each thread that allocates its own arena, up to eight per core, and keeps
/// what is freed in them: the multi-megabyte chunk, window and upload buffers that the
/// compression, download and upload threads pass between them then pile up in a dozen
/// arenas. Two arenas held a streamed build's peak memory at about two thirds (and it ran
/// no slower), which is what keeps it under its 512 MiB bound.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
