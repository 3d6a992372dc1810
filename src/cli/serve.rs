//! `depotai serve --root out/ [--addr 127.0.0.1:5000]`: a read-only registry over the
//! images `build` wrote under a directory. The work is done by `depotai::serve`.

use anyhow::Context;
use clap::Args;
use depotai::serve::{ServeOptions, Server};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory holding the images (`ROOT/<org>/<model>` or `ROOT/<model>`).
    #[arg(long, value_name = "DIR", default_value = "out")]
    root: PathBuf,
    /// Address to listen on; port 0 picks a free port (the address is printed on stdout).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5000")]
    addr: String,
    /// Threads serving requests (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Seconds open requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    shutdown_grace: u64,
    /// No access log (one line per request on stderr otherwise).
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name("depotai-serve");
    if let Some(n) = args.threads {
        rt.worker_threads(n.into());
    }
    let rt = rt.build().context("starting the async runtime")?;
    // The handlers are in place before the address is printed (`signals::install`).
    let stop = super::signals::stop();
    rt.block_on(async {
        let shutdown = stop.signalled();
        let opts = ServeOptions {
            quiet: args.quiet,
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
        };
        let server = Server::bind(&args.addr, &args.root, opts).await?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "depotai serve: serving {} on http://{}",
            server.root().display(),
            server.local_addr()
        )?;
        out.flush()?;
        drop(out);
        let addr = server.local_addr();
        server.run(shutdown).await?;
        match stop.interrupted() {
            // Stopped as asked: exit status 128 + the signal, as every command.
            Some(i) => Err(anyhow::Error::new(i).context(format!(
                "serving {} on http://{addr}: no new connections taken, the open ones given --shutdown-grace to finish",
                args.root.display()
            ))),
            None => Ok(()),
        }
    })
}
