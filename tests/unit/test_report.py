"""Percentiles from a Prometheus histogram, as the demo and the benchmark report them."""

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from retail_sync.report import Samples


def exposition(values, **labels):
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["channel"], buckets=(0.1, 0.5, 1, 5),
                          registry=registry)
    for channel, observed in values.items():
        for v in observed:
            histogram.labels(channel=channel).observe(v)
    return Samples(generate_latest(registry).decode())


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    samples = exposition({"a": [0.05] * 50 + [0.3] * 40 + [2] * 10})
    assert samples.quantile("t_seconds", 0.5, channel="a") == 0.1
    assert math.isclose(samples.quantile("t_seconds", 0.99, channel="a"), 4.6)
    assert samples.count("t_seconds", channel="a") == 100


def test_quantile_sums_over_labels_not_asked_for_and_is_nan_when_empty():
    samples = exposition({"a": [0.05] * 10, "b": [3.0] * 10})
    assert samples.quantile("t_seconds", 0.25) < 0.1 < samples.quantile("t_seconds", 0.75)
    assert math.isnan(samples.quantile("t_seconds", 0.5, channel="nobody"))
    assert math.isnan(Samples("").quantile("t_seconds", 0.5))


def test_quantile_in_the_open_top_bucket_is_its_lower_bound():
    samples = exposition({"a": [30.0] * 5})
    assert samples.quantile("t_seconds", 0.99, channel="a") == 5


def test_minus_keeps_only_what_happened_since():
    before = exposition({"a": [3.0] * 10})
    after = exposition({"a": [3.0] * 10 + [0.05] * 4})
    since = after.minus(before)
    assert since.count("t_seconds", channel="a") == 4
    assert since.quantile("t_seconds", 0.99, channel="a") < 0.1
