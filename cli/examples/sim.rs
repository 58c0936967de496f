//! The Chord simulator: builds a ring of N nodes by real joins in virtual
//! time, measures lookups, kills a fraction of the nodes at once, measures
//! again. `--json` prints one JSON object on the last line. The same as
//! `cicada sim`, from the same source (`cli/src/sim.rs`, included here).
//!
//! ```sh
//! cargo run --release --example sim -- --nodes 10000 --lookups 10000 --fail 0.5 --json
//! ```

use clap::Parser;

#[path = "../src/procfs.rs"]
mod procfs;
#[path = "../src/sim.rs"]
mod sim;

/// Command-line arguments of the simulator.
#[derive(Parser, Debug)]
#[command(about = "Simulate a Cicada Chord ring of many nodes in virtual time")]
struct Args {
    #[command(flatten)]
    sim: sim::SimArgs,
}

fn main() {
    match sim::run_sim(&Args::parse().sim) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
