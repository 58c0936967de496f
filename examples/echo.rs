//! Two peers in one process; one echoes back whatever the other sends (the
//! original Cicada tutorial's first sample, in Rust).
//!
//! ```sh
//! cargo run --example echo
//! ```

use std::time::Duration;

use cicada::{Hooks, Received, SwarmPeer};

#[tokio::main]
async fn main() -> Result<(), cicada::Error> {
    let local = "127.0.0.1:0".parse().expect("a valid address");

    // The first peer starts the swarm and echoes every message to its sender.
    let mut echo = SwarmPeer::new(Hooks::new());
    echo.bind(local).await?;
    println!("echo peer {} on {}", echo.hash()?.short(), echo.listener()?);

    // The second joins through the first.
    let mut client = SwarmPeer::new(Hooks::new());
    client.bind(local).await?;
    client
        .connect(echo.listener()?, Duration::from_secs(5))
        .await?;
    println!(
        "client peer {} on {}",
        client.hash()?.short(),
        client.listener()?
    );

    let echo = std::sync::Arc::new(echo);
    let server = echo.clone();
    let echoing = tokio::spawn(async move {
        while let Ok(Received { from, data, .. }) = server.recv().await {
            if let Err(e) = server.send(&from, data).await {
                eprintln!("echo to {} failed: {e}", from.addr);
            }
        }
    });

    for text in ["hello", "is anybody out there?", "bye"] {
        let delivery = client.send(echo.listener()?, text).await?;
        println!(
            "sent {text:?} to {} in {} hop(s)",
            delivery.to.addr, delivery.hops
        );
        match client.recv_timeout(Duration::from_secs(5)).await? {
            Some(Received { from, data, .. }) => println!(
                "echo from {}: {:?}",
                from.addr,
                String::from_utf8_lossy(&data)
            ),
            None => println!("no echo within 5 s"),
        }
    }

    client.close().await;
    echo.close().await;
    echoing.abort();
    Ok(())
}
