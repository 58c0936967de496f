"""Bad arguments and failing calls raise clear Python exceptions, never a
panic (PyO3's PanicException is a BaseException, not an Exception)."""

import errno
import socket
import time

import pytest

import cicada
from cicada import swarmlib, traversal
from cicada.chordlib import routing

from conftest import free_port


@pytest.fixture
def pair():
    a, b = swarmlib.SwarmPeer(), swarmlib.SwarmPeer()
    a.bind("127.0.0.1", 0)
    b.bind("127.0.0.1", 0)
    b.connect(*a.listener)
    yield a, b
    a.close()
    b.close()


def test_calls_before_bind_say_so():
    p = swarmlib.SwarmPeer()
    for call in (
        lambda: p.send(("127.0.0.1", 5000), b"x"),
        lambda: p.recv(timeout=1),
        lambda: p.broadcast(b"x"),
        lambda: p.connect("127.0.0.1", 5000),
        lambda: p.hash,
        lambda: p.listener,
        lambda: p.peers,
    ):
        with pytest.raises(cicada.CicadaError, match="not bound"):
            call()


def test_bind_arguments():
    p = swarmlib.SwarmPeer()
    with pytest.raises(ValueError):
        p.bind("127.0.0.1", 65536)
    with pytest.raises(ValueError):
        p.bind("127.0.0.1", -1)
    with pytest.raises(TypeError):
        p.bind("127.0.0.1", "5000")
    with pytest.raises(TypeError):
        p.bind(127, 5000)
    with pytest.raises(ValueError, match="together"):
        p.bind("127.0.0.1", 0, "198.51.100.1")
    with pytest.raises(cicada.CicadaConnectionError):
        p.bind("no-such-host.invalid", 0)
    # The failures above left the peer usable.
    p.bind("127.0.0.1", 0)
    with pytest.raises(cicada.CicadaError, match="already bound"):
        p.bind("127.0.0.1", 0)
    p.close()


def test_bind_to_a_port_in_use_is_an_oserror():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        p = swarmlib.SwarmPeer()
        with pytest.raises(OSError) as e:
            p.bind("127.0.0.1", port)
        assert isinstance(e.value, cicada.CicadaError)
        assert e.value.errno == errno.EADDRINUSE
        p.close()


def test_connect_to_nobody_fails_in_time():
    with swarmlib.SwarmPeer() as p:
        p.bind("127.0.0.1", 0)
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, ConnectionError)) as e:
            p.connect("127.0.0.1", free_port(), timeout=1)
        assert isinstance(e.value, cicada.CicadaError)
        assert time.monotonic() - t0 < 5
        with pytest.raises(ValueError):
            p.connect("127.0.0.1", 5000, timeout=-1)
        with pytest.raises(TypeError):
            p.connect("127.0.0.1", 5000, timeout="10")
        with pytest.raises(TypeError):
            p.connect(("127.0.0.1", 5000))
        with pytest.raises(ValueError):
            p.connect("", 5000)


def test_send_arguments(pair):
    a, b = pair
    with pytest.raises(TypeError, match="not str"):
        b.send(a, "text")
    with pytest.raises(TypeError):
        b.send(a, 42)
    with pytest.raises(ValueError):
        b.send(("127.0.0.1", 1, 2), b"x")
    with pytest.raises(ValueError):
        b.send(("127.0.0.1", 70000), b"x")
    with pytest.raises(TypeError):
        b.send(12345, b"x")
    with pytest.raises(TypeError):
        b.send("127.0.0.1:5000", b"x")
    with pytest.raises(ValueError):
        b.send(a, b"x", duplicates=-1)
    with pytest.raises(TypeError):
        b.send(a, b"x", duplicates=1.5)
    with pytest.raises(ValueError):
        b.send(a, b"x" * (16 * 1024 * 1024))
    # bytearray and memoryview are data too.
    b.send(a, bytearray(b"ba"))
    b.send(a, memoryview(b"mv"))
    assert [a.recv(timeout=10)[1] for _ in range(2)] == [b"ba", b"mv"]


def test_send_to_a_missing_peer_is_a_connection_error(pair):
    a, b = pair
    with pytest.raises(ConnectionError) as e:
        b.send(("127.0.0.1", free_port()), b"x")
    assert isinstance(e.value, cicada.CicadaError)
    with pytest.raises(cicada.CicadaError, match="not bound"):
        b.send(swarmlib.SwarmPeer(), b"x")


def test_recv_timeout_and_other_calls(pair):
    a, b = pair
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        a.recv(timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    with pytest.raises(ValueError):
        a.recv(timeout=0)
    with pytest.raises(TypeError):
        a.get_route("key")
    with pytest.raises(NotImplementedError):
        a.broadcast(b"x", visited=[b.hash])
    a.broadcast(b"x", visited=[])
    assert b.recv(timeout=10)[1] == b"x"


def test_calls_after_close_say_so(pair):
    a, b = pair
    b.close()
    b.close()  # idempotent
    for call in (lambda: b.send(a, b"x"), lambda: b.recv(timeout=1), lambda: b.hash):
        with pytest.raises(cicada.CicadaError, match="closed"):
            call()
    with pytest.raises(cicada.CicadaError, match="closed"):
        b.bind("127.0.0.1", 0)


def test_hash_arguments():
    with pytest.raises(TypeError):
        routing.Hash()
    with pytest.raises(TypeError):
        routing.Hash(value="a", hashed="b")
    with pytest.raises(TypeError):
        routing.Hash(value=1)
    with pytest.raises(ValueError):
        routing.Hash(hashed="zz")
    with pytest.raises(ValueError):
        routing.Hash(hashed=b"short")
    with pytest.raises(ValueError):
        routing.Hash(hashed=2**256)
    with pytest.raises(ValueError):
        routing.Hash(hashed=-1)
    with pytest.raises(TypeError):
        routing.Hash(hashed=1.0)


def test_port_mapping_arguments():
    with pytest.raises(ValueError):
        traversal.PortMapping(70000)
    with pytest.raises(ValueError):
        traversal.PortMapping(5000, protocol="sctp")
    with pytest.raises(TypeError):
        traversal.PortMapping("5000")
    pm = traversal.PortMapping(5000)
    assert (pm.port, pm.protocol) == (5000, "udp")
    with pytest.raises(cicada.CicadaError, match="not mapped"):
        pm.eport


def test_exception_hierarchy():
    assert issubclass(cicada.CicadaTimeoutError, TimeoutError)
    assert issubclass(cicada.CicadaConnectionError, ConnectionError)
    assert issubclass(cicada.PortMappingError, ConnectionError)
    assert issubclass(cicada.CicadaOSError, OSError)
    for cls in (
        cicada.CicadaTimeoutError,
        cicada.CicadaConnectionError,
        cicada.CicadaValueError,
        cicada.CicadaOSError,
        cicada.PortMappingError,
    ):
        assert issubclass(cls, cicada.CicadaError)
