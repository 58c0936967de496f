"""Ctrl-C interrupts a blocked call: SIGINT to a Python process blocked in
`recv` (or `connect`) ends it with KeyboardInterrupt, promptly."""

import signal
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
        # A swarm that swallows packets: 192.0.2.1 is TEST-NET, never answers.
        "peer.connect('192.0.2.1', 5000, timeout=60)",
    ],
)
def test_sigint_interrupts_a_blocked_call(call):
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
        if p.poll() is None:
            p.kill()
            p.wait()
    assert out.strip() == "interrupted"
    assert "KeyboardInterrupt" in err
    assert rc != 0
    assert elapsed < 2, "took %.2fs to react to SIGINT" % elapsed
