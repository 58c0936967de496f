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
