"""``broker.free_port``: ports for listeners started a little later, taken below the kernel's
ephemeral range (where ``bind(0)`` and outgoing connections get theirs), never twice."""

from __future__ import annotations

import socket

from retail_sync.broker import _ephemeral_range, free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed


def test_a_port_something_listens_on_or_handed_out_before_is_skipped(monkeypatch) -> None:
    from retail_sync import broker

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        given = free_port()
        real = broker.random.randrange
        picks = iter([busy, given])  # then real picks: a fixed third one may be in use meanwhile
        monkeypatch.setattr(broker.random, "randrange", lambda a, b: next(picks, None) or real(a, b))
        assert free_port() not in (busy, given)  # busy: listening; given: handed out before
