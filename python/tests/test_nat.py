"""The original tutorial's NAT example against a real NAT gateway: the
project's network lab (scripts/netlab: network namespaces, nftables NAT
and miniupnpd). Needs root and the lab's Debian packages, as CI has."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, Node, need

NETLAB = str(REPO / "scripts" / "netlab")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from cicada import swarmlib, traversal

    pub, pub_port = sys.argv[1], int(sys.argv[2])
    peer = swarmlib.SwarmPeer()
    with traversal.PortMapping(42000) as pm:  # UDP, the default here
        eip = pm.mapper.external_ip
        peer.bind(pm.local_address, pm.port, eip, pm.eport)
        peer.connect(pub, pub_port)
        print(json.dumps({"eip": eip, "eport": pm.eport, "local": pm.local_address,
                          "port": pm.port, "method": pm.mapper.method,
                          "listener": list(peer.listener)}), flush=True)
        peer.send((pub, pub_port), b"from behind the NAT")
        src, data, _ = peer.recv(timeout=20)
        print(json.dumps({"from": list(src.chord_addr), "data": data.decode()}), flush=True)
        peer.close()
    print("unmapped", flush=True)
    """
)


def netlab(*args, env=None):
    return subprocess.run(
        ["bash", NETLAB, *args], check=True, stdout=subprocess.PIPE, text=True, env=env, timeout=120
    ).stdout


@pytest.fixture
def lab():
    check = subprocess.run(
        ["bash", NETLAB, "check", "lab"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )
    need("netlab", check.returncode == 0, "the network lab cannot run here: " + check.stdout.strip())
    prefix = "py%d" % os.getpid()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLAB_") or k in ("NETLAB_MINIUPNPD", "NETLAB_RUNDIR")}
    netlab("up", prefix, env=env)
    try:
        lab_env = dict(
            line.split("=", 1) for line in netlab("env", prefix).splitlines() if "=" in line
        )
        yield prefix, {k: v.strip("'") for k, v in lab_env.items()}
    finally:
        subprocess.run(["bash", NETLAB, "down", prefix, "--kill-strays"], timeout=120)


def test_tutorial_nat_example_behind_a_real_gateway(lab, cicada_bin):
    prefix, env = lab
    pub, gw = env["NETLAB_PUB1_IP"], env["NETLAB_GW1_IP"]
    node = Node(
        cicada_bin,
        bind="%s:42001" % pub,
        wrap=["bash", NETLAB, "exec", "pub1", prefix, "--"],
    )
    child = subprocess.Popen(
        ["bash", NETLAB, "exec", "lan1-1", prefix, "--", sys.executable, "-c", SCRIPT, pub, "42001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line, "the peer behind the NAT said nothing: %s" % child.stderr.read()
        info = json.loads(line)
        assert info["eip"] == gw
        assert info["local"] == env["NETLAB_LAN1_1_IP"]
        assert info["port"] == 42000
        assert info["method"] in ("upnp", "natpmp")
        # The peer announces the gateway's address and the mapped port.
        assert info["listener"] == [gw, info["eport"]]
        assert str(info["eport"]) in netlab("mappings", "gw1", prefix)

        e = node.wait(lambda e: e["event"] == "recv", 20)
        assert e["data"] == "from behind the NAT"
        assert e["from"] == "%s:%d" % (gw, info["eport"])
        # The public node reaches it through the mapping.
        node.cmd("send %s:%d from the public side" % (gw, info["eport"]))
        reply = json.loads(child.stdout.readline())
        assert reply == {"from": [pub, 42001], "data": "from the public side"}
        assert child.stdout.readline().strip() == "unmapped"
        assert child.wait(20) == 0
        assert str(info["eport"]) not in netlab("mappings", "gw1", prefix)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        node.close()
