//! The `macula-relay` binary: see [`macula_relay::cli`].

fn main() -> std::process::ExitCode {
    macula_relay::cli::main()
}
