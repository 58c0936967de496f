"""The asyncio face of Cicada: :class:`SwarmPeer` with the same calls as
:class:`cicada.swarmlib.SwarmPeer`, as coroutines.

The calls run on the Rust core's own runtime, not in an executor: each
returns an asyncio future that the core completes through the loop's
``call_soon_threadsafe``. Cancelling a call (``asyncio.wait_for``,
``task.cancel()``) cancels it in the core; a ``recv`` cancelled just as a
message arrived keeps that message for the next ``recv``, so none is lost.

::

    import asyncio
    from cicada import aio

    async def main():
        async with aio.SwarmPeer() as a, aio.SwarmPeer() as b:
            await a.bind("127.0.0.1", 0)
            await b.bind("127.0.0.1", 0)
            await b.connect(*a.listener)
            await b.send(a, b"hello")
            src, data, more = await a.recv()

    asyncio.run(main())
"""

import asyncio

from . import _native
from ._native import Hash, RemoteNode

__all__ = ["SwarmPeer", "RemoteNode", "Hash"]


def _complete(fut, ok, value, reject):
    # Runs on the loop's thread (scheduled by the core).
    if fut.done():
        # Cancelled meanwhile: a received message goes back to the peer.
        if ok and reject is not None:
            reject(value)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _run(pair, reject=None):
    fut, handle = pair
    try:
        return await fut
    except asyncio.CancelledError:
        handle.abort()
        # Cancelled after the core had completed the future (its result was
        # set, the awaiting task not yet resumed): a received message goes
        # back to the peer.
        if reject is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
            reject(fut.result())
        raise


class SwarmPeer:
    """A member of a Cicada swarm for asyncio code; see
    :class:`cicada.swarmlib.SwarmPeer` for the meaning of every call.

    ``hooks`` are as there (plain functions, called on the peer's hook
    thread, not on the event loop: use ``loop.call_soon_threadsafe`` to
    hand something to the loop).
    """

    def __init__(self, hooks=None):
        self._peer = _native.SwarmPeer(hooks)

    @staticmethod
    def _loop():
        return asyncio.get_running_loop()

    async def bind(self, addr, port, external_ip=None, external_port=None):
        """Binds and starts the peer (see ``swarmlib.SwarmPeer.bind``)."""
        return await _run(
            self._peer._bind_async(self._loop(), addr, port, external_ip, external_port)
        )

    async def connect(self, host, port, timeout=10):
        """Joins the swarm of the peer at ``host``:``port``; returns it."""
        return await _run(self._peer._connect_async(self._loop(), host, port, timeout))

    async def send(self, target, data, duplicates=0):
        """Sends ``data`` to ``target`` and waits for its confirmation;
        returns the peer that received it."""
        return await _run(self._peer._send_async(self._loop(), target, data, duplicates))

    async def broadcast(self, data, visited=None):
        """Sends ``data`` to every other peer of the swarm."""
        return await _run(self._peer._broadcast_async(self._loop(), data, visited))

    async def recv(self):
        """Waits for the next message: ``(source, data, more)``. Use
        ``asyncio.wait_for`` for a timeout."""
        return await _run(self._peer._recv_async(self._loop()), self._peer._unrecv)

    async def get_route(self, key):
        """The peer that owns ``key`` (a ``Hash``)."""
        return await _run(self._peer._get_route_async(self._loop(), key))

    async def get_peers(self):
        """The peers in this peer's routing state, without blocking the loop."""
        return await _run(self._peer._peers_async(self._loop()))

    async def close(self):
        """Stops the peer and releases its socket. Idempotent."""
        return await _run(self._peer._close_async(self._loop()))

    @property
    def hash(self):
        """This peer's id (a ``Hash``)."""
        return self._peer.hash

    @property
    def listener(self):
        """The address this peer announces, ``(ip, port)``."""
        return self._peer.listener

    @property
    def peers(self):
        """The peers in the routing state (a short blocking query; in a
        coroutine prefer ``await get_peers()``)."""
        return self._peer.peers

    @property
    def closed(self):
        """Whether ``close`` has run."""
        return self._peer.closed

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False

    def __repr__(self):
        return repr(self._peer).replace("<SwarmPeer", "<aio.SwarmPeer", 1)
