import pytest

from retail_sync.demo_channels import parse_mix


def test_mix_is_normalised_to_shares():
    assert parse_mix("shopify=2,amazon=1,walmart=1") == {"shopify": 0.5, "amazon": 0.25,
                                                         "walmart": 0.25}
    assert parse_mix("amazon") == {"amazon": 1.0}
    assert parse_mix("shopify=1,walmart=0") == {"shopify": 1.0}


@pytest.mark.parametrize(("text", "message"), [
    ("ebay=1", "unknown channel"), ("regional=-1", "positive"), ("", "positive"),
])
def test_bad_mix_is_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)
