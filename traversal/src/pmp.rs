//! NAT-PMP port mapping (RFC 6886, through the `natpmp` crate).
//!
//! The `natpmp` crate encodes the requests and decodes the answers. It
//! talks through the [`natpmp::AsyncUdpSocket`] trait, which we implement
//! with [`PmpSocket`]: a tokio UDP socket that adds what the crate's async
//! client leaves out, namely the RFC's retransmission schedule (250 ms,
//! doubling), an overall deadline, dropping stale or unrelated answers, and
//! remembering *why* a request failed (result code, port unreachable,
//! timeout) so that the error we return is precise.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use natpmp::{new_natpmp_async_with, AsyncUdpSocket, NatpmpAsync, Response};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::net::local_ipv4_toward;
use crate::upnp::lease_secs;
use crate::{Error, Grant, Method, Options, PortMapping, Protocol};

/// The NAT-PMP server port (RFC 6886).
const NATPMP_PORT: u16 = natpmp::NATPMP_PORT;

/// The first retransmission interval of RFC 6886, section 3.1.
const FIRST_WAIT: Duration = Duration::from_millis(250);

/// A NAT-PMP gateway.
///
/// Use it directly if you want NAT-PMP only; [`PortMapping::new`] falls back
/// to it when UPnP IGD fails.
///
/// ```no_run
/// use std::time::Duration;
/// use traversal::{NatPmp, Protocol};
///
/// # async fn demo() -> Result<(), traversal::Error> {
/// let pmp = NatPmp::new()?; // the gateway of the IPv4 default route
/// println!("external address: {}", pmp.external_ip().await?);
/// let grant = pmp.add_mapping(Protocol::Udp, 4000, 4000, Duration::from_secs(600)).await?;
/// println!("mapped external port {} for {:?}", grant.external_port, grant.lease);
/// pmp.remove_mapping(Protocol::Udp, 4000).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct NatPmp {
    server: SocketAddrV4,
    local_ip: Ipv4Addr,
    timeout: Duration,
}

impl NatPmp {
    /// Uses the gateway of the IPv4 default route, on port 5351.
    pub fn new() -> Result<NatPmp, Error> {
        let gateway = natpmp::get_default_gateway().map_err(|e| Error::NoGateway {
            method: Method::NatPmp,
            reason: format!("no IPv4 default gateway ({e})"),
        })?;
        NatPmp::with_gateway(gateway)
    }

    /// Uses `gateway`, on port 5351.
    pub fn with_gateway(gateway: Ipv4Addr) -> Result<NatPmp, Error> {
        NatPmp::with_server(SocketAddrV4::new(gateway, NATPMP_PORT))
    }

    /// Uses a NAT-PMP server at a non-standard address (for tests and
    /// unusual setups).
    pub fn with_server(server: SocketAddrV4) -> Result<NatPmp, Error> {
        let local_ip = local_ipv4_toward(SocketAddr::V4(server)).map_err(|e| Error::NoGateway {
            method: Method::NatPmp,
            reason: format!("no route to the gateway {}: {e}", server.ip()),
        })?;
        debug!(%server, %local_ip, "NAT-PMP: using gateway");
        Ok(NatPmp {
            server,
            local_ip,
            timeout: Options::default().request_timeout,
        })
    }

    /// Sets how long one request may take, retransmissions included
    /// (default 3 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> NatPmp {
        self.timeout = timeout;
        self
    }

    /// The gateway's address.
    pub fn gateway(&self) -> Ipv4Addr {
        *self.server.ip()
    }

    /// This host's address on the interface that routes to the gateway (the
    /// gateway maps ports to the address its requests come from).
    pub fn local_ip(&self) -> Ipv4Addr {
        self.local_ip
    }

    /// Asks the gateway for its external IPv4 address.
    pub async fn external_ip(&self) -> Result<Ipv4Addr, Error> {
        const ACTION: &str = "public address request";
        let (mut client, state) = self.client().await?;
        client
            .send_public_address_request()
            .await
            .map_err(|e| self.failure(ACTION, e, &state))?;
        match client.read_response_or_retry().await {
            Ok(Response::Gateway(g)) => Ok(*g.public_address()),
            Ok(other) => Err(unexpected(ACTION, &other)),
            Err(e) => Err(self.failure(ACTION, e, &state)),
        }
    }

    /// Maps `internal_port` of this host for `lease` (rounded to whole
    /// seconds), suggesting `external_port`. The gateway may give another
    /// external port or a shorter lease: the [`Grant`] tells what it gave.
    /// Asking again for the same internal port renews the mapping.
    pub async fn add_mapping(
        &self,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lease: Duration,
    ) -> Result<Grant, Error> {
        if internal_port == 0 {
            return Err(Error::InvalidArgument("port 0 cannot be mapped"));
        }
        let grant = self
            .mapping_request(protocol, internal_port, external_port, lease_secs(lease))
            .await?;
        if grant.lease.is_zero() {
            return Err(Error::Request {
                method: Method::NatPmp,
                action: "mapping request",
                reason: "the gateway granted a zero lifetime".into(),
            });
        }
        Ok(grant)
    }

    /// Removes the mapping of `internal_port` (a request with lifetime 0).
    pub async fn remove_mapping(
        &self,
        protocol: Protocol,
        internal_port: u16,
    ) -> Result<(), Error> {
        if internal_port == 0 {
            // Port 0 would remove *all* of this host's mappings.
            return Err(Error::InvalidArgument("port 0 cannot be unmapped"));
        }
        self.mapping_request(protocol, internal_port, 0, 0)
            .await
            .map(|_| ())
    }

    /// Maps `port` through this gateway only, with lease renewal and removal
    /// on drop: the same as [`PortMapping::with_natpmp`].
    pub async fn map(
        &self,
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        PortMapping::with_natpmp(self, port, protocol, options).await
    }

    async fn mapping_request(
        &self,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    ) -> Result<Grant, Error> {
        const ACTION: &str = "mapping request";
        debug!(%protocol, internal_port, external_port, lifetime, "NAT-PMP: mapping request");
        let (client, state) = self.client().await?;
        let wire = match protocol {
            Protocol::Udp => natpmp::Protocol::UDP,
            Protocol::Tcp => natpmp::Protocol::TCP,
        };
        client
            .send_port_mapping_request(wire, internal_port, external_port, lifetime)
            .await
            .map_err(|e| self.failure(ACTION, e, &state))?;
        let answer = client
            .read_response_or_retry()
            .await
            .map_err(|e| self.failure(ACTION, e, &state))?;
        match (protocol, answer) {
            (Protocol::Udp, Response::UDP(m)) | (Protocol::Tcp, Response::TCP(m)) => {
                if m.private_port() != internal_port {
                    return Err(Error::Request {
                        method: Method::NatPmp,
                        action: ACTION,
                        reason: format!(
                            "the gateway answered for internal port {} instead of {internal_port}",
                            m.private_port()
                        ),
                    });
                }
                Ok(Grant {
                    external_port: m.public_port(),
                    lease: *m.lifetime(),
                })
            }
            (_, other) => Err(unexpected(ACTION, &other)),
        }
    }

    async fn client(&self) -> Result<(NatpmpAsync<PmpSocket>, Arc<Mutex<State>>), Error> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        sock.connect(self.server).await?;
        let state = Arc::new(Mutex::new(State::new()));
        let socket = PmpSocket {
            sock,
            state: state.clone(),
            timeout: self.timeout,
        };
        Ok((new_natpmp_async_with(socket, *self.server.ip()), state))
    }

    fn failure(&self, action: &'static str, e: natpmp::Error, state: &Mutex<State>) -> Error {
        let st = lock(state);
        if let Some(code) = st.result_code {
            info!(code, "NAT-PMP: the gateway refused the {action}");
            return Error::refused_natpmp(action, code);
        }
        match st.failure {
            Some(io::ErrorKind::ConnectionRefused) => Error::Unsupported {
                method: Method::NatPmp,
                reason: format!(
                    "nothing listens for NAT-PMP at {} (port unreachable)",
                    self.server
                ),
            },
            Some(io::ErrorKind::TimedOut) => Error::Timeout {
                method: Method::NatPmp,
                action,
                after: self.timeout,
            },
            Some(kind @ (io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable)) => {
                Error::NoGateway {
                    method: Method::NatPmp,
                    reason: format!("gateway {} unreachable: {kind}", self.server.ip()),
                }
            }
            Some(kind) => Error::Request {
                method: Method::NatPmp,
                action,
                reason: format!("socket error: {kind}"),
            },
            None => match e {
                natpmp::Error::NATPMP_ERR_UNSUPPORTEDVERSION => Error::Unsupported {
                    method: Method::NatPmp,
                    reason: "the gateway answered with another protocol version".into(),
                },
                other => Error::Request {
                    method: Method::NatPmp,
                    action,
                    reason: other.to_string(),
                },
            },
        }
    }
}

fn unexpected(action: &'static str, answer: &Response) -> Error {
    Error::Request {
        method: Method::NatPmp,
        action,
        reason: format!("unexpected answer {answer:?}"),
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one request has seen so far.
#[derive(Debug)]
struct State {
    /// The request, for retransmission; its opcode selects the answer.
    last_sent: Vec<u8>,
    deadline: Instant,
    wait: Duration,
    /// A socket error or timeout that ended the request.
    failure: Option<io::ErrorKind>,
    /// A non-zero result code in the gateway's answer.
    result_code: Option<u16>,
}

impl State {
    fn new() -> State {
        State {
            last_sent: Vec::new(),
            deadline: Instant::now(),
            wait: FIRST_WAIT,
            failure: None,
            result_code: None,
        }
    }
}

/// A connected tokio UDP socket with RFC 6886 retransmission; see the module
/// documentation.
struct PmpSocket {
    sock: UdpSocket,
    state: Arc<Mutex<State>>,
    timeout: Duration,
}

impl PmpSocket {
    fn fail(&self, kind: io::ErrorKind) -> io::Error {
        lock(&self.state).failure = Some(kind);
        io::Error::from(kind)
    }
}

#[async_trait]
impl AsyncUdpSocket for PmpSocket {
    async fn connect(&self, addr: &str) -> io::Result<()> {
        self.sock.connect(addr).await
    }

    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        {
            let mut st = lock(&self.state);
            st.last_sent = buf.to_vec();
            st.deadline = Instant::now() + self.timeout;
            st.wait = FIRST_WAIT;
            st.failure = None;
            st.result_code = None;
        }
        self.sock.send(buf).await
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (wait, expected_op) = {
                let st = lock(&self.state);
                if let Some(kind) = st.failure {
                    // The crate retries a failed receive a few times: keep
                    // failing at once rather than waiting again.
                    return Err(io::Error::from(kind));
                }
                let now = Instant::now();
                if now >= st.deadline {
                    drop(st);
                    return Err(self.fail(io::ErrorKind::TimedOut));
                }
                let op = st.last_sent.get(1).copied().unwrap_or(0);
                (st.wait.min(st.deadline - now), op | 0x80)
            };
            let mut packet = [0u8; 16];
            match tokio::time::timeout(wait, self.sock.recv(&mut packet)).await {
                Err(_) => {
                    let request = {
                        let mut st = lock(&self.state);
                        st.wait *= 2;
                        st.last_sent.clone()
                    };
                    debug!(?wait, "NAT-PMP: no answer yet, retransmitting");
                    if let Err(e) = self.sock.send(&request).await {
                        return Err(self.fail(e.kind()));
                    }
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "NAT-PMP: receive failed");
                    return Err(self.fail(e.kind()));
                }
                Ok(Ok(n)) => {
                    if n < 4 || packet[1] != expected_op {
                        debug!(
                            n,
                            op = packet.get(1),
                            "NAT-PMP: ignoring an unrelated packet"
                        );
                        continue;
                    }
                    let code = u16::from_be_bytes([packet[2], packet[3]]);
                    let full = if expected_op == 0x80 { 12 } else { 16 };
                    if code == 0 && n < full {
                        debug!(n, "NAT-PMP: ignoring a truncated answer");
                        continue;
                    }
                    if code != 0 {
                        lock(&self.state).result_code = Some(code);
                    }
                    let len = buf.len().min(packet.len());
                    buf[..len].copy_from_slice(&packet[..len]);
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdpSocket;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake NAT-PMP server on loopback: `answer` gets each request and
    /// returns the datagrams to send back.
    fn fake_server(
        answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddrV4, Arc<AtomicUsize>) {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match socket.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                counter.fetch_add(1, Ordering::SeqCst);
                for packet in answer(&buf[..n]) {
                    let _ = socket.send_to(&packet, from);
                }
            }
        });
        (addr, seen)
    }

    fn mapping_answer(request: &[u8], result: u16, public_port: u16, lifetime: u32) -> Vec<u8> {
        let mut p = vec![0, request[1] | 0x80];
        p.extend_from_slice(&result.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes()); // epoch
        p.extend_from_slice(&request[4..6]); // internal port
        p.extend_from_slice(&public_port.to_be_bytes());
        p.extend_from_slice(&lifetime.to_be_bytes());
        p
    }

    fn client(server: SocketAddrV4) -> NatPmp {
        NatPmp::with_server(server)
            .unwrap()
            .with_request_timeout(Duration::from_millis(900))
    }

    #[tokio::test]
    async fn maps_and_reads_the_external_address() {
        let (server, _) = fake_server(|req| match req[1] {
            0 => vec![vec![0, 128, 0, 0, 0, 0, 0, 7, 198, 18, 0, 2]],
            _ => {
                let lifetime = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                // Grants a different port and at most 60 s, like a real gateway may.
                vec![mapping_answer(req, 0, 50_000, lifetime.min(60))]
            }
        });
        let pmp = client(server);
        assert_eq!(pmp.local_ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(
            pmp.external_ip().await.unwrap(),
            Ipv4Addr::new(198, 18, 0, 2)
        );
        let grant = pmp
            .add_mapping(Protocol::Tcp, 4000, 4000, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            grant,
            Grant {
                external_port: 50_000,
                lease: Duration::from_secs(60)
            }
        );
        pmp.remove_mapping(Protocol::Tcp, 4000).await.unwrap();
    }

    #[tokio::test]
    async fn result_codes_become_refusals() {
        let (server, _) = fake_server(|req| vec![mapping_answer(req, 3, 0, 0)]);
        let e = client(server)
            .add_mapping(Protocol::Udp, 4000, 4000, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(3), "{e}");
        assert!(e.to_string().contains("Network Failure"), "{e}");
    }

    #[tokio::test]
    async fn unrelated_answers_are_ignored() {
        let (server, _) = fake_server(|req| {
            let mut wrong = mapping_answer(req, 0, 1, 1);
            wrong[1] = 0x80; // an address answer to a mapping request
            vec![vec![1, 2], wrong, mapping_answer(req, 0, 4001, 30)]
        });
        let grant = client(server)
            .add_mapping(Protocol::Udp, 4000, 4000, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(grant.external_port, 4001);
    }

    #[tokio::test]
    async fn a_silent_gateway_times_out_after_retransmissions() {
        let (server, seen) = fake_server(|_| Vec::new());
        let started = std::time::Instant::now();
        let e = client(server).external_ip().await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    method: Method::NatPmp,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(850) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // 250 ms, then 500 ms: the request went out three times.
        assert!(
            seen.load(Ordering::SeqCst) >= 3,
            "{}",
            seen.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn no_server_means_unsupported() {
        // A port nobody listens on: the kernel answers "port unreachable",
        // and the client says NAT-PMP is unsupported at once. That ICMP
        // answer is not guaranteed (the kernel rate-limits ICMP machine-wide)
        // and once, in a CI run, it did not come; then the only honest
        // outcome is a timeout. So: up to three fresh ports, each a timeout
        // or Unsupported, and Unsupported at least once.
        for attempt in 1..=3 {
            let free = StdUdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = match free.local_addr().unwrap() {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!(),
            };
            drop(free);
            match client(addr).external_ip().await.unwrap_err() {
                Error::Unsupported {
                    method: Method::NatPmp,
                    ..
                } => return,
                Error::Timeout {
                    method: Method::NatPmp,
                    ..
                } => eprintln!("attempt {attempt}: no ICMP answer from port {addr}, a timeout"),
                e => panic!("{e}"),
            }
        }
        panic!("three closed ports, and never 'unsupported'");
    }

    #[tokio::test]
    async fn port_zero_is_refused_locally() {
        let pmp = client(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
        assert!(matches!(
            pmp.remove_mapping(Protocol::Udp, 0).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn port_mapping_renews_and_removes_on_close_and_drop() {
        let log: Arc<Mutex<Vec<(u16, u32)>>> = Arc::default();
        let record = log.clone();
        let (server, _) = fake_server(move |req| match req[1] {
            0 => vec![vec![0, 128, 0, 0, 0, 0, 0, 7, 198, 18, 0, 2]],
            _ => {
                let internal = u16::from_be_bytes([req[4], req[5]]);
                let lifetime = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                lock_log(&record).push((internal, lifetime));
                let public = if lifetime == 0 { 0 } else { internal + 1 };
                vec![mapping_answer(req, 0, public, lifetime.min(1))]
            }
        });
        let pmp = client(server);
        let options = Options::default().with_lease(Duration::from_secs(30));
        let mapping = pmp.map(5000, Protocol::Udp, &options).await.unwrap();
        assert_eq!(mapping.method(), Method::NatPmp);
        assert_eq!(mapping.external_addr(), "198.18.0.2:5001".parse().unwrap());
        assert_eq!(mapping.local_addr(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(mapping.lease(), Duration::from_secs(1));
        // Granted 1 s: renewed every 500 ms.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let renewals = lock_log(&log)
            .iter()
            .filter(|r| r.0 == 5000 && r.1 == 30)
            .count();
        assert!(renewals >= 3, "{:?}", lock_log(&log));
        mapping.close().await.unwrap();
        assert_eq!(lock_log(&log).last(), Some(&(5000, 0)));

        let dropped = pmp.map(6000, Protocol::Udp, &options).await.unwrap();
        drop(dropped);
        assert_eq!(lock_log(&log).last(), Some(&(6000, 0)));
    }

    fn lock_log(log: &Mutex<Vec<(u16, u32)>>) -> MutexGuard<'_, Vec<(u16, u32)>> {
        log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
