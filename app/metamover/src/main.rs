//! `tvk-metamover`: the metadata Jobs of a backup (see the library docs).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tvk_metamover::cli::main()
}
