"""The original Cicada tutorial's examples, written afresh, as tests."""

import threading

from cicada import swarmlib
from cicada.chordlib import routing

from conftest import free_port, wait_until


def test_two_peers_echoing():
    # The first member of a new swarm, and a second one joining it.
    pa, pb = free_port(), free_port()
    a = swarmlib.SwarmPeer()
    a.bind("localhost", pa)
    b = swarmlib.SwarmPeer()
    b.bind("localhost", pb)
    b.connect("localhost", pa)

    b.send(("localhost", pa), b"hello")
    src, data, more = a.recv()
    assert data == b"hello"
    assert more is False
    assert src.chord_addr == ("127.0.0.1", pb)
    assert src.hash == b.hash

    a.send(src, data)  # echo it back to where it came from
    src2, echoed, _ = b.recv()
    assert echoed == b"hello"
    assert src2.hash == a.hash
    b.close()
    a.close()


def test_echo_server_thread_and_context_managers():
    # An echo server on its own thread, a client sending several messages.
    with swarmlib.SwarmPeer() as server, swarmlib.SwarmPeer() as client:
        server.bind("127.0.0.1", 0)
        client.bind("127.0.0.1", 0)
        client.connect(*server.listener)

        def serve():
            for _ in range(5):
                src, data, _ = server.recv()
                server.send(src, data.upper())

        t = threading.Thread(target=serve)
        t.start()
        for i in range(5):
            msg = ("message %d" % i).encode()
            client.send(server, msg)
            _, reply, _ = client.recv(timeout=10)
            assert reply == msg.upper()
        t.join(10)
        assert not t.is_alive()
    assert server.closed and client.closed


def test_send_to_a_key_reaches_its_owner():
    peers = []
    try:
        for i in range(4):
            p = swarmlib.SwarmPeer()
            p.bind("127.0.0.1", 0)
            if peers:
                p.connect(*peers[0].listener)
            peers.append(p)
        ids = sorted(int(p.hash) for p in peers)

        def owner(key):
            k = int(key)
            return next((i for i in ids if i >= k), ids[0])

        # Wait until the ring is right: every successor is the next id.
        def ring_ok():
            for p in peers:
                s = p.successor
                want = ids[(ids.index(int(p.hash)) + 1) % len(ids)]
                if s is None or int(s.hash) != want:
                    return False
            return True

        wait_until(ring_ok, 30, "a correct ring of 4")
        for word in ["alpha", "beta", "gamma", "delta", "epsilon"]:
            key = routing.Hash(value=word)
            got = peers[0].send(key, word.encode())
            assert int(got.hash) == owner(key)
            assert int(peers[1].get_route(key).hash) == owner(key)
            receiver = next(p for p in peers if int(p.hash) == owner(key))
            src, data, _ = receiver.recv(timeout=10)
            assert data == word.encode()
            assert src.hash == peers[0].hash
    finally:
        for p in peers:
            p.close()


def test_broadcast_reaches_every_other_peer_once():
    peers = []
    try:
        for _ in range(5):
            p = swarmlib.SwarmPeer()
            p.bind("127.0.0.1", 0)
            if peers:
                p.connect(*peers[-1].listener)
            peers.append(p)
        ids = sorted(int(p.hash) for p in peers)

        def ring_ok():
            return all(
                p.successor is not None
                and int(p.successor.hash) == ids[(ids.index(int(p.hash)) + 1) % len(ids)]
                for p in peers
            )

        wait_until(ring_ok, 30, "a correct ring of 5")
        peers[2].broadcast(b"hello, swarm")
        for i, p in enumerate(peers):
            if i == 2:
                continue
            src, data, _ = p.recv(timeout=10)
            assert (data, src.hash) == (b"hello, swarm", peers[2].hash)
        # Once each: nothing more arrives.
        for p in peers:
            try:
                extra = p.recv(timeout=0.5)
            except TimeoutError:
                continue
            raise AssertionError("a second copy arrived: %r" % (extra,))
    finally:
        for p in peers:
            p.close()


def test_bind_on_all_interfaces_learns_its_address():
    # "" binds every interface; the peer learns its address from its bootstrap.
    with swarmlib.SwarmPeer() as a, swarmlib.SwarmPeer() as b:
        a.bind("127.0.0.1", 0)
        b.bind("", 0)
        b.connect(*a.listener)
        host, port = b.listener
        assert host == "127.0.0.1"
        a.send(("127.0.0.1", port), b"found you")
        src, data, _ = b.recv(timeout=10)
        assert data == b"found you"
        assert src.hash == a.hash
