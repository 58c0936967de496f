"""cicada.aio: the same calls as coroutines, completed from the core's runtime."""

import asyncio
import socket
import threading

import pytest

import cicada
from cicada import aio
from cicada.chordlib import routing


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_echo_and_broadcast():
    async def main():
        async with aio.SwarmPeer() as a, aio.SwarmPeer() as b, aio.SwarmPeer() as c:
            await a.bind("127.0.0.1", 0)
            await b.bind("127.0.0.1", 0)
            await c.bind("", 0)
            joined = await b.connect(*a.listener)
            assert joined.hash == a.hash
            await c.connect(*a.listener, timeout=5)

            to = await b.send(a, b"hello")
            assert to.hash == a.hash
            src, data, more = await a.recv()
            assert (src.hash, data, more) == (b.hash, b"hello", False)
            await a.send(src, data.upper())
            assert (await b.recv())[1] == b"HELLO"

            key = routing.Hash(value="some key")
            owner = await a.get_route(key)
            assert owner.hash in {a.hash, b.hash, c.hash}

            async def ring_ok():
                ids = sorted(int(p.hash) for p in (a, b, c))
                for p in (a, b, c):
                    s = p._peer.successor
                    if s is None or int(s.hash) != ids[(ids.index(int(p.hash)) + 1) % 3]:
                        return False
                return True

            for _ in range(300):
                if await ring_ok():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("no correct ring of 3")
            await c.broadcast(b"to all")
            got = await asyncio.gather(a.recv(), b.recv())
            assert [(s.hash, d) for s, d, _ in got] == [(c.hash, b"to all")] * 2
            assert len(await a.get_peers()) >= 1
        assert a.closed and b.closed and c.closed

    run(main())


def test_many_sends_in_flight():
    async def main():
        async with aio.SwarmPeer() as a, aio.SwarmPeer() as b:
            await a.bind("127.0.0.1", 0)
            await b.bind("127.0.0.1", 0)
            await b.connect(*a.listener)
            n = 100
            await asyncio.gather(*(b.send(a, b"m%d" % i) for i in range(n)))
            got = set()
            for _ in range(n):
                got.add((await a.recv())[1])
            assert got == {b"m%d" % i for i in range(n)}

    run(main())


def test_cancelled_recv_loses_nothing():
    async def main():
        async with aio.SwarmPeer() as a, aio.SwarmPeer() as b:
            await a.bind("127.0.0.1", 0)
            await b.bind("127.0.0.1", 0)
            await b.connect(*a.listener)
            # Timeouts short enough to cancel recv just as messages arrive:
            # both before and after the core completed its future.
            n, received, timeouts = 300, [], (0.0002, 0.0005, 0.001)
            sender = asyncio.ensure_future(
                asyncio.gather(*(b.send(a, b"%d" % i) for i in range(n)))
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            i = 0
            while len(received) < n and loop.time() < deadline:
                i += 1
                try:
                    received.append((await asyncio.wait_for(a.recv(), timeouts[i % 3]))[1])
                except asyncio.TimeoutError:
                    pass
            await sender  # every send was confirmed: every message is a's
            assert sorted(received, key=int) == [b"%d" % i for i in range(n)]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.recv(), 0.2)

    run(main())


def test_errors_and_hooks_in_aio():
    seen = []
    loop_thread = []

    async def main():
        loop_thread.append(threading.current_thread())
        async with aio.SwarmPeer(hooks={"recv": lambda n, d: seen.append(d)}) as a:
            with pytest.raises(cicada.CicadaError, match="not bound"):
                await a.send(("127.0.0.1", 1), b"x")
            await a.bind("127.0.0.1", 0)
            with pytest.raises(TypeError):
                await a.send(a, "str")
            with pytest.raises((TimeoutError, ConnectionError)):
                await a.connect("127.0.0.1", 1, timeout=0.5)
            async with aio.SwarmPeer() as b:
                await b.bind("127.0.0.1", 0)
                await b.connect(*a.listener)
                await b.send(a, b"hooked")
                assert (await a.recv())[1] == b"hooked"
        # A cancelled connect (its task aborted) does not break the loop.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        async with aio.SwarmPeer() as c:
            await c.bind("127.0.0.1", 0)
            t = asyncio.ensure_future(c.connect(*silent.getsockname(), timeout=30))
            await asyncio.sleep(0.1)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
        silent.close()

    run(main())
    assert seen == [b"hooked"]


def test_recv_cancelled_at_either_moment_keeps_the_message():
    class Handle:
        aborted = False

        def abort(self):
            Handle.aborted = True

    async def main():
        loop = asyncio.get_running_loop()
        async with aio.SwarmPeer() as a, aio.SwarmPeer() as b:
            await a.bind("127.0.0.1", 0)
            await b.bind("127.0.0.1", 0)
            await b.connect(*a.listener)
            await b.send(a, b"first")
            await b.send(a, b"second")
            m1 = await a.recv()
            m2 = await a.recv()

            # 1. The core completed the future, then the task was cancelled
            #    before it resumed: _run hands the message back.
            fut = loop.create_future()
            task = asyncio.ensure_future(aio._run((fut, Handle()), a._peer._unrecv))
            await asyncio.sleep(0)
            fut.set_result(m1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert Handle.aborted

            # 2. The future was cancelled before the core's result came:
            #    _complete hands it back.
            fut = loop.create_future()
            fut.cancel()
            aio._complete(fut, True, m2, a._peer._unrecv)

            # Both come back, in the order they were handed back (last first).
            got = [(await a.recv())[1], (await a.recv())[1]]
            assert sorted(got) == [b"first", b"second"]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.recv(), 0.2)

    run(main())
