"""Python peers and `cicada node` processes (the Rust CLI) in one ring:
sends both ways and broadcasts both ways."""

from cicada import swarmlib

from conftest import wait_until


def addr_text(t):
    return "%s:%d" % t


def test_mixed_ring_sends_and_broadcasts(nodes):
    n0 = nodes()
    py = []
    try:
        n1 = nodes(join=n0.addr)
        for _ in range(3):
            p = swarmlib.SwarmPeer()
            p.bind("127.0.0.1", 0)
            host, port = n0.addr.rsplit(":", 1)
            p.connect(host, int(port))
            py.append(p)
        n2 = nodes(join=addr_text(py[1].listener))
        ns = [n0, n1, n2]

        members = {int(n.id, 16): n.addr for n in ns}
        members.update({int(p.hash): addr_text(p.listener) for p in py})
        assert len(members) == 6
        ring = sorted(members)

        def want_succ(i):
            return members[ring[(ring.index(i) + 1) % len(ring)]]

        def ring_ok():
            for p in py:
                s = p.successor
                if s is None or addr_text(s.chord_addr) != want_succ(int(p.hash)):
                    return False
            for n in ns:
                n.cmd("peers")
                e = n.wait(lambda e: e["event"] == "peers", 5)
                if e["successor"] != want_succ(int(n.id, 16)):
                    return False
            return True

        wait_until(ring_ok, 60, "a correct ring of 3 Python peers and 3 nodes")

        # Python -> node: confirmed, and the node's application has it.
        for i, (p, n) in enumerate(zip(py, ns)):
            host, port = n.addr.rsplit(":", 1)
            to = p.send((host, int(port)), b"py-to-node-%d" % i)
            assert addr_text(to.chord_addr) == n.addr
            e = n.wait(lambda e: e["event"] == "recv" and e["data"] == "py-to-node-%d" % i, 10)
            assert e["from"] == addr_text(p.listener)

        # Node -> Python.
        for i, (n, p) in enumerate(zip(ns, py)):
            n.cmd("send %s node-to-py-%d" % (addr_text(p.listener), i))
            e = n.wait(lambda e: e["event"] == "sent" and e["data"] == "node-to-py-%d" % i, 15)
            assert e["ok"] is True, e
            src, data, _ = p.recv(timeout=10)
            assert data == b"node-to-py-%d" % i
            assert addr_text(src.chord_addr) == n.addr

        # A broadcast from Python reaches every node and every other Python peer once.
        py[0].broadcast(b"from-python")
        for n in ns:
            e = n.wait(lambda e: e["event"] == "recv" and e["data"] == "from-python", 10)
            assert e["from"] == addr_text(py[0].listener)
        for p in py[1:]:
            src, data, _ = p.recv(timeout=10)
            assert (data, src.hash) == (b"from-python", py[0].hash)

        # A broadcast from a node reaches every Python peer once.
        n1.cmd("broadcast from-node")
        for p in py:
            src, data, _ = p.recv(timeout=10)
            assert data == b"from-node"
            assert addr_text(src.chord_addr) == n1.addr
        for p in py:
            try:
                extra = p.recv(timeout=0.5)
            except TimeoutError:
                continue
            raise AssertionError("a second copy arrived: %r" % (extra,))
    finally:
        for p in py:
            p.close()
