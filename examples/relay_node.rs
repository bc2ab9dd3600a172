//! The macula relay node, as the README's one-command start: the `macula-relay` binary's code
//! ([`macula_relay::cli`]), with the same flags and `ctl`.
//!
//! ```text
//! cargo run --release --example relay_node
//! cargo run --release --example relay_node -- --help
//! cargo run --release --example relay_node -- ctl stats
//! ```
//!
//! Installed, the same program is `macula-relay` (`cargo install --path .`).

fn main() -> std::process::ExitCode {
    macula_relay::cli::main()
}
