//! `tvk-datamover`: the entry point of the data Jobs (see the library docs).
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
