"""Shared helpers: free ports, the `cicada` CLI and `cicada node` processes."""

import json
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _require_items():
    return [i.strip() for i in os.environ.get("CICADA_REQUIRE", "").split(",") if i.strip()]


def required(need):
    """Whether `CICADA_REQUIRE` (as for the Rust tests: `all`, a comma list
    of needs, `-need` to leave one out) makes `need` a failure when missing."""
    items = _require_items()
    if "-" + need in items:
        return False
    return "all" in items or need in items


def need(name, ok, why):
    """Skips the test when `ok` is false, or fails it where `name` is required."""
    if ok:
        return
    msg = "SKIPPED [%s]: %s" % (name, why)
    if required(name):
        pytest.fail("CICADA_REQUIRE asks for %s: %s" % (name, why))
    pytest.skip(msg)


_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    # Under CICADA_REQUIRE=all (CI) nothing may skip, whatever the reason.
    if _skipped and "all" in _require_items():
        print("\nskipped under CICADA_REQUIRE=%s: %s" % (os.environ.get("CICADA_REQUIRE"), ", ".join(_skipped)))
        session.exitstatus = 1


def free_port():
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.1)


@pytest.fixture(scope="session")
def cicada_bin():
    """The `cicada` binary: $CICADA_BIN, or built with cargo (a no-op when
    it is up to date, as after `cargo test --workspace`)."""
    if os.environ.get("CICADA_BIN"):
        return os.environ["CICADA_BIN"]
    out = subprocess.run(
        ["cargo", "build", "-p", "cicada-cli", "--bin", "cicada", "--message-format=json-render-diagnostics"],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
        timeout=1800,
    ).stdout.decode()
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            if msg["target"]["name"] == "cicada":
                return msg["executable"]
    raise AssertionError("cargo built no cicada binary")


class Node:
    """A `cicada node` process, its JSON events read on a thread."""

    def __init__(self, binary, join=None, bind="127.0.0.1:0", wrap=()):
        args = list(wrap) + [binary, "node", "--bind", bind, "--json", "--stabilize-ms", "200"]
        if join:
            args += ["--join", join]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.events = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.wait(lambda e: e["event"] == "ready", 20)
        self.addr = ready["addr"]
        self.id = ready["id"]
        if join:
            self.wait(lambda e: e["event"] == "joined", 20)

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def wait(self, pred, timeout):
        """The first event (since the last one returned) matching `pred`."""
        deadline = time.monotonic() + timeout
        for e in self.seen:
            if pred(e):
                self.seen.remove(e)
                return e
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("node %s: no matching event in %ss" % (getattr(self, "addr", "?"), timeout))
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if pred(e):
                return e
            self.seen.append(e)

    def cmd(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.cmd("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nodes(cicada_bin):
    """Starts `cicada node` processes: `nodes(join=None)`; all closed at the end."""
    made = []

    def start(join=None):
        n = Node(cicada_bin, join)
        made.append(n)
        return n

    yield start
    for n in made:
        n.close()
