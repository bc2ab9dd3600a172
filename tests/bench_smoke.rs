//! The relay benchmark (`benches/relay_bench.rs`) still works: run it in its smoke mode (tiny
//! transfers, a handful of circuits, reservations and sessions; seconds) against a direct
//! connection, the stock rust relay and ours, unthrottled and throttled. Its numbers are not
//! checked here (debug build, shared machine): performance is measured by the benchmark itself.
#![cfg(feature = "node")]

#[path = "../benches/relay_bench.rs"]
#[allow(dead_code)]
mod relay_bench;

use relay_bench::Column;

#[test]
fn benchmark_runs_in_smoke_mode() {
    let options = relay_bench::parse_args(
        ["--smoke", "--only", "direct,stock,ours,throttled"].map(String::from),
    )
    .unwrap();
    let report = relay_bench::run(&options).expect("benchmark runs");
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    let every = [
        Column::Direct,
        Column::Stock,
        Column::Ours,
        Column::Throttled,
    ];
    let relays = [Column::Stock, Column::Ours, Column::Throttled];
    let expect = |metric: &str, columns: &[Column]| {
        for &c in columns {
            let values = report.values(metric, c);
            assert!(
                !values.is_empty() && values.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{metric} [{}]: {values:?}",
                c.key()
            );
        }
    };
    expect("single_mbps", &every);
    expect("aggregate_mbps", &every);
    expect("setup_p50", &every);
    expect("setup_p99", &every);
    expect("setup_rate", &every);
    expect("single_cpu", &relays);
    expect("aggregate_cpu", &relays);
    expect("paced_cpu", &relays);
    expect("reservations_held", &relays);
    expect("rss_idle", &relays);
    expect("rss_reservations", &relays);
    expect("rss_sessions", &relays);
    expect("single_throttle_mbps", &[Column::Throttled]);
    // QUIC: everyone over QUIC (direct too), and mixed (target over QUIC, source over TCP).
    expect(
        "single_quic_mbps",
        &[Column::Direct, Column::Stock, Column::Ours],
    );
    expect("aggregate_quic_mbps", &[Column::Stock, Column::Ours]);
    expect("single_mixed_mbps", &[Column::Stock, Column::Ours]);
    expect("rss_slow", &relays);
    // The memory deltas may be 0 (or below, if the allocator returned pages) for so few peers.
    for c in relays {
        assert!(report.median("per_reservation", c).is_some());
        assert!(report.median("per_session", c).is_some());
        assert!(report.median("slow_per_session", c).is_some());
    }
    // The table names every column it ran.
    let table = relay_bench::render(&report, &options.plan, &options.columns);
    assert!(table.contains("stock rust relay") && table.contains("ours (throttled)"));
    assert!(table.contains("### Targets") && table.contains("crypto floor"));
    // --write-benchmarks replaces only the text between the markers.
    let document = format!(
        "intro\n{}\nold\n{}\nhand-written\n",
        relay_bench::BEGIN_MARKER,
        relay_bench::END_MARKER
    );
    let updated = relay_bench::replace_generated(&document, "new").unwrap();
    assert_eq!(
        updated,
        format!(
            "intro\n{}\nnew\n{}\nhand-written\n",
            relay_bench::BEGIN_MARKER,
            relay_bench::END_MARKER
        )
    );
}
