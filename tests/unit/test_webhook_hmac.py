import base64
import hashlib
import hmac

import pytest

from retail_sync.connectors.dedupe import InProcessDeduper
from retail_sync.connectors.shopify.inbound import compute_hmac, header, verify_hmac

SECRET = "hush"
BODY = b'{"id": 1, "name": "#1001"}'


def reference_signature(body: bytes, secret: str) -> str:
    # The computation Shopify documents, written out independently of the code under test.
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_signature_matches_shopifys_computation():
    assert compute_hmac(BODY, SECRET) == reference_signature(BODY, SECRET)


def test_good_signature_verifies():
    assert verify_hmac(BODY, reference_signature(BODY, SECRET), SECRET)


@pytest.mark.parametrize(
    "received",
    [
        reference_signature(BODY, "other-secret"),
        reference_signature(BODY + b" ", SECRET),  # re-serialised body breaks it
        "not-base64",
        "",
        None,
    ],
)
def test_bad_or_missing_signature_fails(received):
    assert not verify_hmac(BODY, received, SECRET)


def test_prefixless_header_form_is_read():
    assert header({"Shopify-Hmac-Sha256": "x"}, "X-Shopify-Hmac-Sha256") == "x"
    assert header({"X-Shopify-Hmac-Sha256": "y"}, "X-Shopify-Hmac-Sha256") == "y"


async def test_deduper_sees_each_delivery_once_and_forgets_on_request():
    clock = [0.0]
    dedupe = InProcessDeduper(ttl_s=10, max_entries=100, clock=lambda: clock[0])
    assert await dedupe.first_seen("a")
    assert not await dedupe.first_seen("a")
    await dedupe.forget("a")
    assert await dedupe.first_seen("a")
    clock[0] = 11.0
    assert await dedupe.first_seen("a")  # expired


async def test_deduper_is_bounded():
    dedupe = InProcessDeduper(ttl_s=100, max_entries=100)
    for i in range(150):
        assert await dedupe.first_seen(str(i))
    assert len(dedupe._seen) == 100
