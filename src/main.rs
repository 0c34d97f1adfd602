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
    // candle asks for its thread count on every f32 matrix product, and unless RAYON_NUM_THREADS
    // is set that reads /proc/cpuinfo each time (5% of decoding, by `perf`): settle it once,
    // to the count candle would choose, before any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: no other thread exists yet to read the environment.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // Reuse freed buffers instead of page-faulting every op's output in again (17% of prefill
    // time in the kernel before); see ctxsteer::model::keep_freed_memory.
    ctxsteer::model::keep_freed_memory();
    // print! panics when stdout cannot be written (a full disk, a closed file); like other
    // command-line tools, say so in one line and exit non-zero instead of a panic's backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(why) = msg.strip_prefix("failed printing to stdout: ") {
            eprintln!("error: writing to standard output: {why}");
            std::process::exit(1);
        }
        default_hook(info);
    }));
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
