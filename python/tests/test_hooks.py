"""Hooks fire as documented: `send` for every datagram, `recv` for every
application message, `new_peer` for each peer entering the routing state;
they run on a Python thread other than the caller's, with the GIL held; an
exception in a hook is reported to sys.unraisablehook and the peer lives on."""

import sys
import threading

import pytest

from cicada import swarmlib

from conftest import wait_until


def test_hooks_fire_as_documented():
    events = {"send": [], "recv": [], "new_peer": []}
    threads = set()

    def on_send(node, data):
        threads.add(threading.current_thread())
        events["send"].append((node, bytes(data)))

    def on_recv(node, data):
        threads.add(threading.current_thread())
        events["recv"].append((node, data))

    def on_new_peer(node):
        threads.add(threading.current_thread())
        events["new_peer"].append(node)

    hooks = {"send": on_send, "recv": on_recv, "new_peer": on_new_peer}
    with swarmlib.SwarmPeer(hooks=hooks) as a, swarmlib.SwarmPeer() as b:
        a.bind("127.0.0.1", 0)
        b.bind("127.0.0.1", 0)
        b.connect(*a.listener)
        wait_until(lambda: any(n.hash == b.hash for n in events["new_peer"]), 10, "new_peer(b) on a")

        b.send(a, b"marker-into-a")
        src, data, _ = a.recv(timeout=10)
        assert data == b"marker-into-a"
        wait_until(lambda: events["recv"], 10, "the recv hook")
        hsrc, hdata = events["recv"][0]
        assert (hsrc, hdata) == (src, data)
        assert isinstance(hdata, bytes)

        a.send(b, b"marker-out-of-a")
        b.recv(timeout=10)
        wait_until(
            lambda: any(n.hash == b.hash and b"marker-out-of-a" in d for n, d in events["send"]),
            10,
            "the send hook with a's message to b",
        )
        # Maintenance datagrams go through the send hook too.
        assert len(events["send"]) > 1
        assert all(isinstance(n, swarmlib.RemoteNode) for n, _ in events["send"])
        assert threading.main_thread() not in threads
        assert len(threads) >= 1


def test_hook_exception_is_reported_and_the_peer_lives_on(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u))
    calls = []

    def bad_recv(node, data):
        calls.append(data)
        raise ValueError("hook failure %d" % len(calls))

    with swarmlib.SwarmPeer(hooks={"recv": bad_recv}) as a, swarmlib.SwarmPeer() as b:
        a.bind("127.0.0.1", 0)
        b.bind("127.0.0.1", 0)
        b.connect(*a.listener)
        for i in range(3):
            b.send(a, b"m%d" % i)
            assert a.recv(timeout=10)[1] == b"m%d" % i
        wait_until(lambda: len(reported) == 3, 10, "three reported hook exceptions")
        assert all(u.exc_type is ValueError for u in reported)
        assert [str(u.exc_value) for u in reported] == ["hook failure 1", "hook failure 2", "hook failure 3"]
        assert reported[0].object is bad_recv
        # Still working both ways.
        a.send(b, b"still alive")
        assert b.recv(timeout=10)[1] == b"still alive"


def test_hook_may_call_back_into_its_peer():
    seen = []
    holder = {}

    def on_recv(node, data):
        # A blocking call on the same peer from inside its hook.
        seen.append(len(holder["a"].peers))

    with swarmlib.SwarmPeer(hooks={"recv": on_recv}) as a, swarmlib.SwarmPeer() as b:
        holder["a"] = a
        a.bind("127.0.0.1", 0)
        b.bind("127.0.0.1", 0)
        b.connect(*a.listener)
        b.send(a, b"x")
        a.recv(timeout=10)
        wait_until(lambda: seen, 10, "the hook's call into its peer")
        assert seen[0] >= 1


@pytest.mark.parametrize(
    "hooks, exc",
    [
        ({"sned": print}, ValueError),
        ({"send": 42}, TypeError),
        ({1: print}, TypeError),
        ([("send", print)], TypeError),
        ("send", TypeError),
    ],
)
def test_bad_hooks_are_refused(hooks, exc):
    with pytest.raises(exc):
        swarmlib.SwarmPeer(hooks=hooks)
