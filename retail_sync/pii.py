"""Personal data out of what the admin views answer and what the worker logs (issue 13).

Customer names, emails, phones and street addresses are masked unless the caller's token has
the ``pii`` scope (``retail_sync.admin_auth``). Masking is driven by field names, at any depth
of a JSON document, so fields added later under the usual names are covered without a change
here (``email``, ``contact_email``, ``BuyerEmail``, ``phone``, ``first_name``, ``address1``,
``AddressLine2``, ``line1``, ``zip``, ``postalCode``, ...; ``name`` and ``company`` only inside
a person or address object: ``customer``, ``*address*``, ``buyer*``, ``recipient``, ...). A
string that holds JSON (an exception's payload, a raw marketplace body inside it) is parsed and
masked the same way; any other text (CSV bodies, error messages, log lines) has its emails,
separated phone numbers and ``"key": "value"`` pairs of personal keys masked by pattern.

Masked forms keep enough for support to recognise a customer without exposing them:

| what     | example in              | masked                |
|----------|-------------------------|-----------------------|
| email    | jane.doe.123@example.com| ``j***@e***.com``     |
| phone    | 555-625-1199            | ``***-***-1199``      |
| name     | Jane Doe                | ``J. D.``             |
| street   | 126 Chestnut Street     | ``1*** C*** S***``    |
| postcode | K1A 0B1                 | ``K1***``             |

City, region and country are kept. Masking is idempotent (a masked document masked again is
unchanged), so an answer fetched from another worker can be masked again safely. What is
stored is never changed: exception payloads keep what replay needs; only the view is masked.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MASK = "***"
PII_SCOPE = "pii"

#: objects (by normalised key) whose ``name``/``company`` are a person's or a business's name
_PERSON_CONTAINERS = ("customer", "address", "buyer", "billing", "recipient", "contact",
                      "shipto", "billto", "shippinginfo", "consignee", "person")
_NAME_KEYS = {"firstname", "lastname", "middlename", "fullname", "buyername", "customername",
              "contactname", "recipientname", "shiptoname", "billtoname", "custombuyername",
              "attentionof"}
_CONTAINER_NAME_KEYS = {"name", "company", "companyname"}
_STREET_KEYS = {"address1", "address2", "address3", "addressline1", "addressline2",
                "addressline3", "line1", "line2", "line3", "street", "street1", "street2",
                "streetaddress", "address", "addressdisplay", "shippingaddress", "billingaddress",
                "customeraddress", "houseno", "housenumber"}
_POSTAL_KEYS = {"zip", "zipcode", "postalcode", "postcode", "postal"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# a phone written with separators or a leading +: "555-625-1199", "+1 (555) 625 1199";
# plain digit runs are left alone in free text (they are order ids and timestamps far more
# often); under a phone key they are masked whatever their form
_PHONE = re.compile(r"(?<![\w*.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])"
                    r"\d{2,4}[\s.-]\d{3,4}(?![\w*]|\.\d)|(?<![\w*])\+\d{8,15}(?!\w)")
_TEXT_KEYS = ("email", "phone", "first_name", "last_name", "firstname", "lastname", "address1",
              "address2", "addressline1", "addressline2", "AddressLine1", "AddressLine2",
              "line1", "line2", "street", "zip", "postal_code", "postalCode", "PostalCode",
              "buyer_name", "BuyerName", "BuyerEmail", "contact_email", "customerEmailId",
              "buyer_email", "name", "Name")
# "key": "value" / 'key': 'value' / key='value' inside text (JSON fragments, reprs, log lines),
# also with escaped quotes (\"key\": \"value\": JSON inside a JSON string inside a repr)
_KEY_VALUE = re.compile(
    r"""(?P<q1>\\*["']?)(?P<key>[A-Za-z_]*(?:""" + "|".join(sorted(set(map(re.escape, _TEXT_KEYS)),
                                                                   key=len, reverse=True))
    + r"""))(?P=q1)(?P<sep>\s*[:=]\s*)(?P<q2>\\*["'])(?P<value>[^"'\\\n]{1,200})(?P=q2)""")


def norm(key: str) -> str:
    """``Postal-Code``, ``postal_code``, ``postalCode`` -> ``postalcode``."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


def kind_of(key: str, in_person: bool) -> str | None:
    """Which personal datum a field of this name holds (None: not personal)."""
    k = norm(key)
    if "email" in k and not k.startswith(("verified", "accepts", "send", "notify")):
        return "email"
    if "phone" in k or k in ("mobile", "fax", "telephone", "tel"):
        return "phone"
    if k in _NAME_KEYS or (in_person and k in _CONTAINER_NAME_KEYS):
        return "name"
    if k in _STREET_KEYS:
        return "street"
    if k in _POSTAL_KEYS or k.endswith(("postalcode", "zipcode")):
        return "postal"
    return None


def _is_person_container(key: str) -> bool:
    k = norm(key)
    return any(c in k for c in _PERSON_CONTAINERS)


# --- masks of one value ------------------------------------------------------------------------


def mask_email(value: str) -> str:
    """``jane.doe@example.com`` -> ``j***@e***.com``."""
    local, _, domain = value.strip().partition("@")
    if not domain:
        return mask_name(value) if MASK not in value else value
    labels = domain.split(".")
    tld = labels[-1] if len(labels) > 1 else ""
    head = labels[0]
    masked_domain = f"{head[:1]}{MASK}" + (f".{tld}" if tld else "")
    return f"{local[:1]}{MASK}@{masked_domain}"


def mask_phone(value: str) -> str:
    """Only the last four digits: ``+1 555-625-1199`` -> ``***-***-1199``."""
    if MASK in value:
        return value
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return MASK
    return f"{MASK}-{MASK}-{digits[-4:]}"


def mask_name(value: str) -> str:
    """Initials: ``Jane Doe`` -> ``J. D.``."""
    words = [w for w in re.split(r"[\s,]+", value.strip()) if w]
    if not words:
        return value
    return " ".join(f"{w[0].upper()}." for w in words[:4])


def mask_street(value: str) -> str:
    """Each word's first character: ``126 Chestnut Street`` -> ``1*** C*** S***``."""
    if MASK in value:
        return value
    words = [w for w in re.split(r"\s+", value.strip()) if w]
    return " ".join(f"{w[0]}{MASK}" for w in words[:6]) if words else value


def mask_postal(value: str) -> str:
    """The first two characters: ``K1A 0B1`` -> ``K1***``."""
    if MASK in value:
        return value
    text = value.strip()
    return f"{text[:2]}{MASK}" if text else value


_MASKS = {"email": mask_email, "phone": mask_phone, "name": mask_name, "street": mask_street,
          "postal": mask_postal}


def mask_text(text: str) -> str:
    """Free text with emails, separated phone numbers and ``"key": "value"`` pairs of personal
    keys masked (log lines, error messages, CSV bodies, text that is not JSON)."""
    if not text:
        return text
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m[0]), text)
    text = _PHONE.sub(lambda m: mask_phone(m[0]), text)
    return _KEY_VALUE.sub(_mask_pair, text)


def _mask_pair(m: re.Match[str]) -> str:
    key, value = m["key"], m["value"]
    kind = kind_of(key, in_person=True)
    if kind is None or MASK in value:
        return m[0]
    if norm(key) == "name" and (not m["q1"] or "=" in m["sep"]):  # name='worker-1' in a log line
        return m[0]
    return f"{m['q1']}{key}{m['q1']}{m['sep']}{m['q2']}{_MASKS[kind](value)}{m['q2']}"


def _mask_json_text(text: str) -> str | None:
    """``text`` masked as the JSON it holds, or None when it is not JSON."""
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(mask(parsed)).decode()


def _mask_string(value: str) -> str:
    as_json = _mask_json_text(value)
    return as_json if as_json is not None else mask_text(value)


def mask(data: Any, *, _in_person: bool = False) -> Any:
    """A copy of a JSON-like document with every personal field masked (see the module doc)."""
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            skey = str(key)
            kind = kind_of(skey, _in_person)
            if kind is not None and isinstance(value, str | int) and not isinstance(value, bool):
                out[key] = _MASKS[kind](str(value)) if value != "" else value
            elif kind is not None and isinstance(value, list) and all(
                    isinstance(v, str) for v in value):  # e.g. Amazon's AddressLine list
                out[key] = [_MASKS[kind](v) for v in value]
            else:
                out[key] = mask(value, _in_person=_in_person or _is_person_container(skey))
        return out
    if isinstance(data, list | tuple):
        return [mask(v, _in_person=_in_person) for v in data]
    if isinstance(data, str):
        return _mask_string(data)
    return data


def shows_pii(request: Any) -> bool:
    """Whether the caller may see personal data unmasked (a token with the ``pii`` scope)."""
    from retail_sync.admin_auth import has_scope

    return bool(has_scope(request, PII_SCOPE))


def for_caller(request: Any, data: Any) -> Any:
    """``data`` as the caller may see it: unchanged with ``pii``, masked otherwise."""
    return data if shows_pii(request) else mask(data)


def json_for_caller(request: Any, model: Any) -> bytes:
    """A pydantic model's JSON as the caller may see it."""
    raw: bytes = model.model_dump_json().encode()
    if shows_pii(request):
        return raw
    return orjson.dumps(mask(orjson.loads(raw)))
