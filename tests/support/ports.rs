//! Free UDP ports on loopback for tests that must name a port before
//! something binds it. Shared by the test files of every crate through
//! `#[path]`.
#![allow(dead_code)]

use std::net::UdpSocket;

/// Distinct free UDP ports on 127.0.0.1 (held together while picked).
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("probe address").port())
        .collect()
}
