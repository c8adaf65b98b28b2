//! The `moba` command line: `info`, `demo` (the default), `attend`, `bench`, and the
//! language model's `train`, `eval`, `generate`, `compare`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    if let Err(error) = cli::run(args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
