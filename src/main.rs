//! The `ctxsteer` binary: parse arguments, run, print errors with their context.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // A closed pipe (`ctxsteer generate … | head -c 1`) ends the program quietly, as it does
    // for other command-line tools, instead of a panic in print!.
    #[cfg(unix)]
    // SAFETY: restoring the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
