//! Latency over a layer, compatible with Ouroboros' C `oping` (same
//! message format: type, id, tv_sec, tv_nsec in network order).
//!
//! `oping -l [-n NAME --layer L]` answers pings (C `oping` clients too);
//! `oping -n NAME [-c COUNT] [-i INTERVAL_MS] [-s SIZE] [-q QOS]` sends
//! `COUNT` pings one after the other (each waits for its reply) and prints
//! `rtt min/avg/max/mdev` like the C client. Run it with `--release` to
//! compare with the C tool.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cicada_ouroboros::{flow_accept, flow_alloc, Error, Flow, Name, QoSSpec};

const ECHO_REQUEST: u32 = 0;
const ECHO_REPLY: u32 = 1;
const HDR: usize = 24;

fn qos_by_name(s: &str) -> Option<QoSSpec> {
    Some(match s {
        "raw" => QoSSpec::raw(),
        "best" => QoSSpec::best_effort(),
        "video" => QoSSpec::video(),
        "voice" => QoSSpec::voice(),
        "data" => QoSSpec::data(),
        _ => return None,
    })
}

/// Answers the pings of one client until it leaves or the server stops,
/// then deallocates the flow (or leaves it to the library when the client
/// is gone with replies still queued: 0.23 would wait for them forever).
fn serve_flow(flow: Flow, stop: &std::sync::atomic::AtomicBool) {
    answer(&flow, stop);
    let _ = flow.dealloc_or_leave(Duration::from_secs(1));
}

fn answer(flow: &Flow, stop: &std::sync::atomic::AtomicBool) {
    if flow
        .set_rcv_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let mut msg = match flow.recv() {
            Ok(m) => m,
            Err(Error::Timeout { .. }) => continue,
            Err(_) => return,
        };
        if msg.len() < HDR || msg[..4] != ECHO_REQUEST.to_be_bytes() {
            continue;
        }
        msg[..4].copy_from_slice(&ECHO_REPLY.to_be_bytes());
        if flow.write(&msg).is_err() {
            return;
        }
    }
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
    println!("Ouroboros ping server started.");
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match flow_accept(Some(Duration::from_millis(200))) {
                Ok(f) => {
                    println!("New flow.");
                    let stop = &stop;
                    s.spawn(move || serve_flow(f, stop));
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

fn client(name: &str, count: u32, interval: Duration, size: usize, qos: QoSSpec) -> ExitCode {
    let stop = match cicada_ouroboros::termination_flag() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let flow = match flow_alloc(name, Some(qos), Some(Duration::from_secs(10))) {
        Ok(f) => f,
        Err(e) => {
            println!("Failed to allocate flow: {e}.");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = flow.set_rcv_timeout(Some(Duration::from_secs(2))) {
        println!("Failed to set timeout: {e}.");
        return ExitCode::FAILURE;
    }
    let size = size.max(HDR);
    println!("Pinging {name} with {size} bytes of data ({count} packets):\n");
    let mut buf = vec![0u8; size];
    let (mut sent, mut rcvd) = (0u32, 0u32);
    let (mut min, mut max, mut avg, mut m2) = (f64::MAX, 0f64, 0f64, 0f64);
    let t0 = Instant::now();
    for id in 0..count {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = t0.elapsed();
        buf[..4].copy_from_slice(&ECHO_REQUEST.to_be_bytes());
        buf[4..8].copy_from_slice(&id.to_be_bytes());
        buf[8..16].copy_from_slice(&now.as_secs().to_be_bytes());
        buf[16..24].copy_from_slice(&u64::from(now.subsec_nanos()).to_be_bytes());
        let tic = Instant::now();
        if let Err(e) = flow.write(&buf) {
            println!("Failed to send packet: {e}.");
            break;
        }
        sent += 1;
        loop {
            match flow.recv() {
                Ok(m) if m.len() >= HDR && m[4..8] == id.to_be_bytes() => {
                    let ms = tic.elapsed().as_secs_f64() * 1e3;
                    rcvd += 1;
                    min = min.min(ms);
                    max = max.max(ms);
                    let d = ms - avg;
                    avg += d / f64::from(rcvd);
                    m2 += d * (ms - avg);
                    if count <= 20 {
                        println!("{} bytes from {name}: seq={id} time={ms:.3} ms", m.len());
                    }
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    println!("Server timed out ({e}).");
                    break;
                }
            }
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    let total = t0.elapsed();
    println!("\n--- {name} ping statistics ---");
    println!(
        "{sent} packets transmitted, {rcvd} received, {:.0}% packet loss, time: {:.3} ms",
        if sent == 0 {
            0.0
        } else {
            100.0 * f64::from(sent - rcvd) / f64::from(sent)
        },
        total.as_secs_f64() * 1e3
    );
    if rcvd > 0 {
        let mdev = if rcvd > 1 {
            (m2 / f64::from(rcvd - 1)).sqrt()
        } else {
            0.0
        };
        println!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
    }
    // A server that is gone never reads what is still queued towards it.
    let _ = flow.dealloc_or_leave(Duration::from_secs(1));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let mut listen = false;
    let mut name = String::from("oping");
    let mut layers = Vec::new();
    let (mut count, mut interval, mut size) = (3u32, 1000u64, 64usize);
    let mut qos = QoSSpec::raw();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "-l" | "--listen" => listen = true,
            "-n" | "--server-name" => name = val(),
            "--layer" => layers.push(val()),
            "-c" | "--count" => count = val().parse().unwrap_or(count),
            "-i" | "--interval" => interval = val().parse().unwrap_or(interval),
            "-s" | "--size" => size = val().parse().unwrap_or(size),
            "-q" | "--qos" => match qos_by_name(&val()) {
                Some(q) => qos = q,
                None => {
                    eprintln!("QoS is one of raw, best, video, voice, data");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                println!(
                    "Usage: oping [-l [--layer L]] [-n NAME] [-c COUNT] [-i INTERVAL_MS] [-s SIZE] [-q QOS]"
                );
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
        client(&name, count, Duration::from_millis(interval), size, qos)
    }
}
