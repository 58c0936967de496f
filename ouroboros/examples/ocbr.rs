//! Throughput over a layer, like Ouroboros' C `ocbr`.
//!
//! `ocbr -l [-n NAME --layer L]` counts what arrives on each flow (C `ocbr`
//! clients too) and prints it when the flow goes quiet for a second;
//! `ocbr -n NAME [-d SECONDS] [-s SIZE]` floods the server with packets of
//! `SIZE` bytes for `SECONDS` and prints what it sent, like the C client's
//! `--flood`. Run it with `--release` to compare with the C tool.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cicada_ouroboros::{flow_accept, flow_alloc, Error, Flow, Name};

fn count_flow(flow: Flow, stop: &AtomicBool) {
    if flow.set_rcv_timeout(Some(Duration::from_secs(1))).is_err() {
        return;
    }
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut first = None;
    let mut last = Instant::now();
    let mut buf = vec![0u8; cicada_ouroboros::MAX_PACKET_SIZE];
    while !stop.load(Ordering::Relaxed) {
        match flow.read_into(&mut buf) {
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                packets += 1;
                bytes += n as u64;
            }
            Err(_) => break,
        }
    }
    let us = first
        .map_or(0, |f| last.duration_since(f).as_micros())
        .max(1) as f64;
    println!(
        "Flow: {packets:9} packets ({bytes:12} bytes) in {:9} ms => {:9.4} pps, {:9.4} Mbps",
        (us / 1000.0) as u64,
        packets as f64 / us * 1e6,
        8.0 * bytes as f64 / us
    );
    let _ = flow.dealloc_or_leave(Duration::from_secs(1));
}

fn server(name: &str, layers: &[String]) -> ExitCode {
    let stop = match cicada_ouroboros::termination_flag() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    let _name = if layers.is_empty() {
        None
    } else {
        match Name::bind(name, &layers) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("bind {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    println!("Server started.");
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match flow_accept(Some(Duration::from_millis(200))) {
                Ok(f) => {
                    println!("New flow.");
                    let stop = &stop;
                    s.spawn(move || count_flow(f, stop));
                }
                Err(Error::Timeout { .. }) => {}
                Err(e) => {
                    eprintln!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    ExitCode::SUCCESS
}

fn client(name: &str, duration: Duration, size: usize) -> ExitCode {
    let stop = match cicada_ouroboros::termination_flag() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Client started, duration {}, flood, size {size} B.",
        duration.as_secs()
    );
    let flow = match flow_alloc(name, None, Some(Duration::from_secs(10))) {
        Ok(f) => f,
        Err(e) => {
            println!("Failed to allocate flow: {e}.");
            return ExitCode::FAILURE;
        }
    };
    // Never block forever on a full queue.
    if let Err(e) = flow.set_snd_timeout(Some(Duration::from_secs(2))) {
        println!("Failed to set a send timeout: {e}.");
        return ExitCode::FAILURE;
    }
    let buf = vec![0u8; size];
    let mut seq = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        if let Err(e) = flow.write(&buf) {
            println!("write: {e}");
            break;
        }
        seq += 1;
    }
    let ms = start.elapsed().as_millis().max(1) as u64;
    println!(
        "sent statistics: {seq:9} packets, {:12} bytes in {ms:9} ms, {:4.4} Mb/s",
        seq * size as u64,
        (seq as f64 / (ms as f64 * 1000.0)) * size as f64 * 8.0
    );
    // A server that ended under the flood never reads what is queued:
    // 0.23's flow_dealloc would wait for it forever.
    if !flow.dealloc_or_leave(Duration::from_secs(1)) {
        println!("The server did not read the rest: flow left to the library.");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let mut listen = false;
    let mut name = String::from("ocbr");
    let mut layers = Vec::new();
    let (mut duration, mut size) = (10u64, 1000usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "-l" | "--listen" => listen = true,
            "-n" | "--server_apn" => name = val(),
            "--layer" => layers.push(val()),
            "-d" | "--duration" => duration = val().parse().unwrap_or(duration),
            "-s" | "--size" => size = val().parse().unwrap_or(size),
            "-f" | "--flood" => {}
            _ => {
                println!("Usage: ocbr [-l [--layer L]] [-n NAME] [-d SECONDS] [-s SIZE]");
                return ExitCode::SUCCESS;
            }
        }
    }
    if let Err(e) = cicada_ouroboros::check() {
        println!("Ouroboros is not usable: {e}");
        return ExitCode::FAILURE;
    }
    if listen {
        server(&name, &layers)
    } else {
        client(&name, Duration::from_secs(duration), size)
    }
}
