//! `cargo uk`: see `cargo uk help`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(uk_cli::cli::main(&args));
}
