//! Sets `cfg(macula_interop)` when `MACULA_REQUIRE_INTEROP=1`: the interop and browser tests
//! (which need js-libp2p, py-libp2p and Chromium, installed by `scripts/test.sh`) run only
//! then; otherwise they are compiled as ignored, so a plain `cargo test` reports them as
//! skipped rather than passed.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(macula_interop)");
    println!("cargo::rerun-if-env-changed=MACULA_REQUIRE_INTEROP");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("MACULA_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=macula_interop");
    }
}
