//! The chaos soak: runs the chaos guest (see `ember_tests::chaos`) seed after seed for as
//! long as asked, and stops at the first VMM failure with the seed that caused it.
//!
//!     chaos [--accel interp|kvm] [--minutes N] [--first-seed S] [--run-seconds T]

use std::time::{Duration, Instant};

use ember_tests::chaos::{run_seed, Tally};

struct Args {
    accel: String,
    minutes: u64,
    first_seed: u64,
    run_seconds: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        accel: "interp".into(),
        minutes: 10,
        first_seed: 1000,
        run_seconds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--accel" => args.accel = value()?,
            "--minutes" => args.minutes = number(value()?)?,
            "--first-seed" => args.first_seed = number(value()?)?,
            "--run-seconds" => args.run_seconds = number(value()?)?,
            "-h" | "--help" => {
                return Err(
                    "usage: chaos [--accel interp|kvm] [--minutes N] [--first-seed S] \
                            [--run-seconds T]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let start = Instant::now();
    let budget = Duration::from_secs(args.minutes * 60);
    let mut tally = Tally::default();
    let mut seed = args.first_seed;
    while start.elapsed() < budget {
        match run_seed(seed, &args.accel, Duration::from_secs(args.run_seconds)) {
            Ok(run) => tally.add(&run),
            Err(failure) => {
                eprintln!("{failure}");
                eprintln!("after {:?}: {tally}", start.elapsed());
                std::process::exit(1);
            }
        }
        seed += 1;
    }
    println!(
        "chaos soak on {}: seeds {}..{} in {:?}: {tally}; no VMM failure",
        args.accel,
        args.first_seed,
        seed,
        start.elapsed()
    );
}
