//! A chat room over broadcast: every line typed is broadcast to every peer in
//! the swarm, and every message received is printed.
//!
//! ```sh
//! cargo run --example chat -- --bind 127.0.0.1:5000 --name alice
//! cargo run --example chat -- --bind 127.0.0.1:5001 --join 127.0.0.1:5000 --name bob
//! ```

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Arguments of the chat example.
#[derive(Parser, Debug)]
#[command(about = "Chat with everyone in a Cicada swarm")]
struct Args {
    /// Local address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// A member of the swarm to join; without it this peer starts the room.
    #[arg(long)]
    join: Option<SocketAddr>,
    /// The name shown with your messages.
    #[arg(long, default_value = "anonymous")]
    name: String,
}

fn main() -> Result<(), cicada::Error> {
    let args = Args::parse();
    let hooks = cicada::Hooks::new().on_new_peer(|p| println!("* {} is in the room", p.addr));
    // The blocking facade: no async needed for a line-by-line program.
    let mut peer = cicada::blocking::SwarmPeer::new(hooks)?;
    peer.bind(args.bind)?;
    if let Some(j) = args.join {
        peer.connect(j, Duration::from_secs(10))?;
    }
    println!(
        "* {} joined as {} on {}",
        args.name,
        peer.hash()?.short(),
        peer.listener()?
    );

    let peer = std::sync::Arc::new(peer);
    let listener = peer.clone();
    std::thread::spawn(move || {
        while let Ok(cicada::Received { from, data, .. }) = listener.recv() {
            println!("[{}] {}", from.addr, String::from_utf8_lossy(&data));
        }
    });

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "/quit" {
            break;
        }
        if let Err(e) = peer.broadcast(format!("{}: {line}", args.name)) {
            eprintln!("* broadcast failed: {e}");
        }
    }
    peer.disconnect()?;
    peer.close(); // the listener's `recv` returns `Err(Closed)`
    Ok(())
}
