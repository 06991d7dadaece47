"""The OpenAPI 3.1 contract (retail_sync/openapi.py) against the routes the code registers."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from retail_sync import openapi, pii
from retail_sync.app import create_app
from retail_sync.settings import Settings
from retail_sync.streams.models import SyncException
from retail_sync.streams.schemas import sample_of
from retail_sync.streams.state import OrderState


@pytest.fixture(scope="module")
def ctx() -> Any:
    ctx = create_app(Settings(), "kafka://127.0.0.1:1")  # nothing connects until it starts
    ctx.app.web.init_server()  # Faust's own blueprints join the routes as when the worker starts
    return ctx


@pytest.fixture(scope="module")
def doc(ctx: Any) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(openapi.build(ctx.app, ctx.settings)))


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert doc["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(doc)


def test_every_registered_route_is_documented_and_vice_versa(ctx: Any, doc: dict) -> None:
    registered = {route for route in openapi.registered_routes(ctx.app)
                  if route[1] not in openapi.UNDOCUMENTED}
    documented = set(openapi.OPERATIONS)
    assert registered - documented == set(), "registered but not documented in OPERATIONS"
    assert documented - registered == set(), "documented but not registered"
    in_doc = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert in_doc == registered
    # both listeners: the webhook is the ingress listener's only route
    webhook = doc["paths"]["/webhooks/shopify/{resource}/{event}"]["post"]
    assert webhook["tags"] == ["ingress"] and webhook["servers"]


def test_security_is_the_scope_each_view_requires(ctx: Any, doc: dict) -> None:
    routes = openapi.registered_routes(ctx.app)
    for (method, path), scope in routes.items():
        if path in openapi.UNDOCUMENTED:
            continue
        op = doc["paths"][path][method.lower()]
        if scope is None:
            assert op.get("security") in ([], [{"shopifyHmac": []}]), (method, path)
        else:
            assert op["security"] == [{"adminToken": [scope]}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert routes[("GET", "/orders/{order_key}")] == "viewer"
    assert routes[("POST", "/orders/{order_key}/cancel")] == "operator"
    assert routes[("GET", "/openapi.json")] is None  # open: the contract holds no data


def _validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_the_views_answers_match_their_schemas(doc: dict) -> None:
    state = sample_of(OrderState)
    _validator(doc, "OrderView").validate(state)
    _validator(doc, "OrderView").validate({**pii.mask(state), "archived": True})
    record = sample_of(SyncException)
    _validator(doc, "ExceptionView").validate({**pii.mask(record), "age_s": 1.5})
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, "OrderView").validate({**state, "status": "nonsense"})
