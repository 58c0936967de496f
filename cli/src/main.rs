//! API: the `cicada` command line: parses the arguments, runs one subcommand.
//!
//! `cicada`: the command-line face of the library (package `cicada-cli`).
//!
//! - `cicada node`: one scriptable peer (see `node.rs`).
//! - `cicada sim`: the Chord simulator (see `sim.rs`; `examples/sim.rs` too).
//! - `cicada map`: maps a port on the NAT gateway and holds it (see `map.rs`).
//! - `cicada bench`: Cicada beside raw UDP and the Ouroboros C tools, as ratios
//!   (see `bench/`).
//! - `cicada demo`: a swarm of `cicada node` processes, checked (see `demo.rs`).
//! - `cicada keygen`: a swarm key for `cicada node --swarm-key FILE` (see `keygen.rs`).

mod bench;
mod demo;
mod keygen;
mod map;
mod node;
mod output;
mod procfs;
mod sim;
mod svg;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cicada",
    version,
    about = "Cicada: a peer-to-peer overlay on a Chord ring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one peer that reads commands from a script or stdin.
    Node(node::NodeArgs),
    /// Simulate a Chord ring of many nodes in virtual time.
    Sim(sim::SimArgs),
    /// Map a port on the NAT gateway (UPnP IGD, then NAT-PMP) until interrupted.
    Map(map::MapArgs),
    /// Measure Cicada beside raw UDP on loopback, as ratios.
    Bench(bench::BenchArgs),
    /// Start a swarm of peer processes on loopback, check it, draw it.
    Demo(demo::DemoArgs),
    /// Make a swarm key for `cicada node --swarm-key FILE`.
    Keygen(keygen::KeygenArgs),
}

fn main() {
    let cli = Cli::parse();
    init_log();
    let code = match cli.command {
        Command::Node(args) => node::main(args),
        Command::Map(args) => map::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Demo(args) => demo::main(args),
        Command::Keygen(args) => keygen::main(args),
        Command::Sim(args) => match sim::run_sim(&args) {
            Ok(lines) => {
                lines.iter().for_each(|l| println!("{l}"));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
    };
    std::process::exit(code);
}

/// Diagnostics on stderr when `RUST_LOG` asks for them, in the usual
/// `target=level,...` form (e.g. `RUST_LOG=cicada_chord=debug`); nothing
/// otherwise, so that stdout's JSON and the tables stay clean. A value that
/// does not parse is reported and ignored.
fn init_log() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let Ok(spec) = std::env::var("RUST_LOG") else {
        return;
    };
    match spec.parse::<Targets>() {
        Ok(filter) => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .with(filter)
            .init(),
        Err(e) => eprintln!("warning: RUST_LOG={spec:?} ignored: {e}"),
    }
}
