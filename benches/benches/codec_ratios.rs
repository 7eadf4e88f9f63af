//! The codec's speed ratios against its peers, measured pair by pair, interleaved.
//!
//! ```text
//! cargo bench -p taskwire-benches --bench codec_ratios -- [--rounds N] [--round-ms MS] [--only GROUP] [--json]
//! ```
//!
//! For each comparison in `CODEC_COMPARISONS` and each size, taskwire and the peer run in
//! alternating rounds, in the order taskwire, peer, peer, taskwire, each for about
//! `--round-ms` of measured time (default 20). Each round gives one speed ratio (peer time
//! ÷ taskwire time per iteration; above 1 means taskwire is faster), and the table reports
//! the median over `--rounds` rounds (default 15) with the min–max. Drift on a shared
//! machine (frequency, neighbours) hits both sides of a round alike, which criterion's
//! benchmark-after-benchmark runs cannot promise.
//!
//! `-- --bench --run GROUP/ID/SIZE [--iters N]` runs one workload N times (default 1000)
//! and nothing else, for a profiler: under `valgrind --tool=callgrind
//! --toggle-collect='*codec::measured*'` its instruction counts, setup left out, repeat
//! exactly from run to run, where times on a shared machine do not.
//!
//! Run by `cargo test --benches` (without `--bench`), it instead runs every workload once,
//! which checks that each decodes its whole batch, and asserts no timing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use taskwire_benches::codec::{SIZES, Workload, workload, workloads};
use taskwire_benches::{CODEC_COMPARISONS, Comparison};

struct Options {
    rounds: usize,
    round: Duration,
    only: Option<String>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match value(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} takes a positive whole number, not {v:?}")),
            },
        }
    };
    Ok(Options {
        rounds: usize::try_from(number("--rounds", 15)?).unwrap_or(usize::MAX),
        round: Duration::from_millis(number("--round-ms", 20)?),
        only: value("--only").cloned(),
        json: args.iter().any(|a| a == "--json"),
    })
}

/// Iterations that take about `target` of measured time.
fn calibrate(workload: &mut Workload, target: Duration) -> u64 {
    let mut iters = 1u64;
    loop {
        let took = (workload.run)(iters);
        if took >= target / 4 || iters >= 1 << 30 {
            // Scale by whole nanoseconds: integer arithmetic, no lossy float cast.
            let per_iter_ns = (took.as_nanos() / u128::from(iters)).max(1);
            let wanted = target.as_nanos() / per_iter_ns;
            return u64::try_from(wanted).unwrap_or(u64::MAX).max(1);
        }
        iters *= 4;
    }
}

fn per_iter(took: Duration, iters: u64) -> f64 {
    took.as_secs_f64() / iters as f64
}

#[derive(serde::Serialize)]
struct Row {
    group: &'static str,
    size: &'static str,
    taskwire: &'static str,
    peer: &'static str,
    taskwire_ns: f64,
    peer_ns: f64,
    ratio: f64,
    ratio_min: f64,
    ratio_max: f64,
    goal: f64,
    met: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn measure(c: &Comparison, size: &'static str, options: &Options) -> Option<Row> {
    let mut ours = workload(c.group, c.ours, size)?;
    let mut peer = workload(c.group, c.peer, size)?;
    // Warm caches, allocator and branch predictors for both before anything counts.
    let warm = Instant::now();
    while warm.elapsed() < options.round * 5 {
        (ours.run)(1);
        (peer.run)(1);
    }
    let ours_iters = calibrate(&mut ours, options.round);
    let peer_iters = calibrate(&mut peer, options.round);
    let (mut ratios, mut ours_ns, mut peer_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let a1 = (ours.run)(ours_iters);
        let b1 = (peer.run)(peer_iters);
        let b2 = (peer.run)(peer_iters);
        let a2 = (ours.run)(ours_iters);
        let ours_time = per_iter(a1 + a2, ours_iters * 2);
        let peer_time = per_iter(b1 + b2, peer_iters * 2);
        ratios.push(peer_time / ours_time);
        ours_ns.push(ours_time * 1e9);
        peer_ns.push(peer_time * 1e9);
    }
    let ratio = median(&mut ratios);
    Some(Row {
        group: c.group,
        size,
        taskwire: c.ours,
        peer: c.peer,
        taskwire_ns: median(&mut ours_ns),
        peer_ns: median(&mut peer_ns),
        ratio,
        ratio_min: ratios[0],
        ratio_max: ratios[ratios.len() - 1],
        goal: c.goal,
        met: ratio >= c.goal,
    })
}

fn human(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn smoke() {
    for mut workload in workloads() {
        (workload.run)(1);
        println!(
            "smoke: {}/{}/{} ran",
            workload.group, workload.id, workload.size
        );
    }
}

fn run_one(name: &str, args: &[String]) -> ExitCode {
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(1000), |v| v.parse::<u64>());
    let (Some((group, rest)), Ok(iters)) = (name.split_once('/'), iters) else {
        eprintln!("error: --run takes GROUP/ID/SIZE, and --iters a whole number");
        return ExitCode::FAILURE;
    };
    let Some((id, size)) = rest.rsplit_once('/') else {
        eprintln!("error: --run takes GROUP/ID/SIZE, such as decode/framed-binary/128B");
        return ExitCode::FAILURE;
    };
    let Some(mut workload) = workload(group, id, size) else {
        eprintln!("error: no workload {name}");
        return ExitCode::FAILURE;
    };
    let took = (workload.run)(iters);
    eprintln!("{name}: {iters} iterations in {took:?}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(name) = args
        .iter()
        .position(|a| a == "--run")
        .and_then(|i| args.get(i + 1))
    {
        return run_one(name, &args);
    }
    let mut rows = Vec::new();
    for c in CODEC_COMPARISONS {
        if options.only.as_deref().is_some_and(|only| only != c.group) {
            continue;
        }
        for (size, _) in SIZES {
            eprintln!(
                "measuring {} {} against {} at {size}",
                c.group, c.ours, c.peer
            );
            rows.extend(measure(c, size, &options));
        }
    }
    if options.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "{} rounds of about {} ms a side, interleaved; medians\n",
        options.rounds,
        options.round.as_millis()
    );
    println!(
        "| group | size | taskwire | time | peer | time | speed ratio (min–max) | goal |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2}× ({:.2}–{:.2}) | ≥ {:.2}× {} |",
            r.group,
            r.size,
            r.taskwire,
            human(r.taskwire_ns),
            r.peer,
            human(r.peer_ns),
            r.ratio,
            r.ratio_min,
            r.ratio_max,
            r.goal,
            if r.met { "met" } else { "missed" }
        );
    }
    ExitCode::SUCCESS
}
