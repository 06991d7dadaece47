"""The broker probe behind /health readiness and the webhook's fast 503 (ARCHITECTURE §5f.2),
against a real embedded broker that is killed and started again on the same port."""

import signal
import time
from types import SimpleNamespace

from retail_sync.broker import EmbeddedBroker
from retail_sync.broker_watch import BrokerWatch, bootstrap_hosts


def test_bootstrap_hosts():
    assert bootstrap_hosts("kafka://a:9092,kafka://b:9093") == [("a", 9092), ("b", 9093)]
    assert bootstrap_hosts("a:1, b") == [("a", 1), ("b", 9092)]


async def test_probe_follows_the_broker_away_and_back():
    broker = EmbeddedBroker().start()
    watch = BrokerWatch([(broker.host, broker.port)], probe_timeout_s=2.0)
    app = SimpleNamespace(should_stop=False, crashed=False)
    try:
        assert watch.reachable is None and watch.accepting(app)  # not probed yet: accept
        assert await watch.probe() and watch.accepting(app)
        assert broker.process is not None
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait(5)
        started = time.monotonic()
        assert not await watch.probe()
        assert time.monotonic() - started < 2.0  # a refused connection is not a timeout
        assert not watch.accepting(app) and watch.state(app) == "broker_unreachable"
        assert watch.as_json()["reachable"] is False and watch.as_json()["error"]
        assert "unreachable" in watch.refusal(app)
        again = EmbeddedBroker(port=broker.port).start()
        try:
            assert await watch.probe() and watch.accepting(app) and watch.state(app) == "ok"
        finally:
            again.stop()
    finally:
        broker.stop()


def test_a_stopping_worker_accepts_nothing():
    watch = BrokerWatch([("127.0.0.1", 9)], probe_timeout_s=1.0)
    watch.mark_ok()
    assert watch.accepting(SimpleNamespace(should_stop=False, crashed=False))
    assert not watch.accepting(SimpleNamespace(should_stop=True, crashed=False))
    assert not watch.accepting(SimpleNamespace(should_stop=False, crashed=True))
    watch.stopping = True
    assert not watch.accepting() and watch.state() == "stopping"
