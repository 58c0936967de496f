"""routing.Hash: made from a value or a digest, compared as integers."""

import hashlib
import pickle

from cicada.chordlib import routing


def test_value_and_hashed_agree():
    h = routing.Hash(value="hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    assert h.hashed == digest == str(h)
    assert h.value == "hello"
    assert routing.Hash(value=b"hello") == h
    assert routing.Hash(hashed=digest) == h
    assert routing.Hash(hashed=digest.upper()) == h
    assert routing.Hash(hashed=bytes.fromhex(digest)) == h
    assert routing.Hash(hashed=int(digest, 16)) == h
    assert routing.Hash(hashed=digest).value is None
    assert int(h) == int(digest, 16)
    assert bytes(h) == h.digest == bytes.fromhex(digest)


def test_comparisons_and_hashing():
    hs = [routing.Hash(value=str(i)) for i in range(50)]
    assert sorted(hs, key=int) == sorted(hs)
    a, b = sorted(hs)[:2]
    assert a < b and a <= b and b > a and b >= a and a != b
    assert not (a == b)
    assert routing.Hash(hashed=0) < routing.Hash(hashed=2**256 - 1)
    assert len({routing.Hash(value="x"), routing.Hash(value="x"), routing.Hash(value="y")}) == 2
    assert (routing.Hash(value="x") == "x") is False
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a).startswith("Hash(hashed='")


def test_a_peer_hash_is_the_hash_of_its_address():
    from cicada import swarmlib

    with swarmlib.SwarmPeer() as p:
        p.bind("127.0.0.1", 0)
        host, port = p.listener
        assert p.hash == routing.Hash(value="%s:%d" % (host, port))
