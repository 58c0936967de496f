"""Ctrl-C interrupts a blocked call: SIGINT to a Python process blocked in
`recv` (or `connect`) ends it with KeyboardInterrupt, promptly."""

import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    from cicada import swarmlib
    peer = swarmlib.SwarmPeer()
    peer.bind("127.0.0.1", 0)
    print("ready", flush=True)
    try:
        {call}
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
    print("returned", flush=True)
    """
)


@pytest.mark.parametrize(
    "call",
    [
        "peer.recv()",
        # A bootstrap that swallows every packet: a bare UDP socket.
        "peer.connect('127.0.0.1', {silent}, timeout=60)",
    ],
)
def test_sigint_interrupts_a_blocked_call(call):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    call = call.format(silent=silent.getsockname()[1])
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(call=call)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # well inside the blocked call
        assert p.poll() is None
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=10)
        elapsed = time.monotonic() - t0
        out, err = p.communicate()
    finally:
        silent.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert out.strip() == "interrupted"
    assert "KeyboardInterrupt" in err
    assert rc != 0
    assert elapsed < 2, "took %.2fs to react to SIGINT" % elapsed
