//! The `moba` command line: `info`, `demo` (the default), `attend`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    if let Err(error) = cli::run(args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
