//! The deterministic simulation (in the spirit of FoundationDB's simulator
//! and TigerBeetle's VOPR): the real use cases, as several replicas on one
//! store that fails, stalls and loses answers, against simulated partners
//! with and without idempotency keys whose answers are lost, slow, refused,
//! declined, pending or not visible yet, with clocks that jump and replicas
//! that crash mid-call. After every schedule the books are checked: each
//! partner's ledger equals ours per leg, no partner without idempotency keys
//! got two sends for one (operation, leg), every operation is final or holds
//! its reservation (and is under review), amounts obey their rules, one key
//! is one operation, and no instrument backs two payers.
//!
//! `SIMULATION_SEEDS=n` runs n schedules (200 by default), from
//! `SIMULATION_FIRST_SEED` (1); `SIMULATION_SEED=s` replays one. The seeds
//! in `simulation/regressions.txt` always run first. A failing seed is
//! printed with the line that replays it.

mod partner;
mod world;

use std::time::Instant;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seeds that once found a violation, with why.
fn regressions() -> Vec<u64> {
    include_str!("simulation/regressions.txt")
        .lines()
        .filter_map(|line| line.split('#').next())
        .filter_map(|seed| seed.trim().parse().ok())
        .collect()
}

#[test]
fn simulation_schedules_keep_every_invariant() {
    let seeds: Vec<u64> = match env_number("SIMULATION_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env_number("SIMULATION_SEEDS").unwrap_or(200);
            let first = env_number("SIMULATION_FIRST_SEED").unwrap_or(1);
            regressions()
                .into_iter()
                .chain(first..first + count)
                .collect()
        }
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let outcome = world::run(seed);
        if std::env::var_os("SIMULATION_TRACE").is_some() {
            for line in &outcome.trace {
                eprintln!("{line}");
            }
        }
        if !outcome.violations.is_empty() {
            eprintln!(
                "seed {seed}: {} violations; replay: SIMULATION_SEED={seed} SIMULATION_TRACE=1 \
                 cargo test --release --test api simulation -- --nocapture",
                outcome.violations.len()
            );
            for violation in outcome.violations.iter().take(10) {
                eprintln!("  {violation}");
            }
            failed.push((seed, outcome.violations.len()));
        }
    }
    let violations: usize = failed.iter().map(|(_, n)| n).sum();
    eprintln!(
        "simulation: {} schedules, {violations} violations ({:.1} s)",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn simulation_replays_a_seed_exactly() {
    let seed = env_number("SIMULATION_SEED").unwrap_or(7);
    let first = world::run(seed);
    let second = world::run(seed);
    assert!(first.trace.len() > 50, "a schedule does things");
    assert_eq!(first.trace, second.trace, "one seed, one trace");
    let other = world::run(seed + 1);
    assert_ne!(first.trace, other.trace, "another seed, another schedule");
}
