"""Admin tokens: parsing, hashing, constant-time lookup, rotation of the tokens file."""

from __future__ import annotations

import os

import orjson
import pytest

from retail_sync import admin_auth, admin_tokens
from retail_sync.admin_auth import Principal, TokenStore, hash_token, new_token, token_entry


def _doc(**entries: tuple[str, list[str]]) -> str:
    return orjson.dumps({name: {"token_sha256": hash_token(tok), "scopes": scopes}
                         for name, (tok, scopes) in entries.items()}).decode()


def test_inline_tokens_authenticate_by_hash_only() -> None:
    alice, bob = new_token(), new_token()
    store = TokenStore(_doc(alice=(alice, ["viewer"]), bob=(bob, ["viewer", "operator"])))
    assert store.authenticate(alice) == Principal("alice", frozenset({"viewer"}))
    assert store.authenticate(bob).scopes == {"viewer", "operator"}  # type: ignore[union-attr]
    assert store.authenticate("rsat_wrong") is None
    assert store.authenticate("") is None and store.authenticate(None) is None
    assert store.authenticate(hash_token(alice)) is None  # the configured hash is no token
    assert all(alice not in repr(v) for v in vars(store).values())  # nothing holds the token


@pytest.mark.parametrize("text, needle", [
    ("[1]", "JSON object"),
    ("{", "not JSON"),
    ('{"x y": {"token_sha256": "' + "a" * 64 + '", "scopes": ["viewer"]}}', "token name"),
    ('{"x": {"token_sha256": "secret", "scopes": ["viewer"]}}', "64 hex"),
    ('{"x": {"token_sha256": "' + "a" * 64 + '", "scopes": ["root"]}}', "scopes must be"),
    ('{"x": {"token_sha256": "' + "a" * 64 + '", "scopes": []}}', "scopes must be"),
    ('{"x": {"token": "abc", "scopes": ["viewer"]}}', "must be"),
])
def test_bad_documents_are_refused_with_the_reason(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TokenStore(text)


def test_duplicate_names_and_hashes_are_refused(tmp_path) -> None:
    tok = new_token()
    path = tmp_path / "tokens.json"
    path.write_text(_doc(a=(tok, ["viewer"])))
    with pytest.raises(ValueError, match="configured twice"):
        TokenStore(_doc(a=(new_token(), ["viewer"])), path)
    with pytest.raises(ValueError, match="share one token_sha256"):
        TokenStore(_doc(b=(tok, ["viewer"])), path)


def test_missing_file_at_start_is_fatal(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        TokenStore("", tmp_path / "absent.json")


def test_file_rotation_without_restart(tmp_path) -> None:
    now = [0.0]
    old, new = new_token(), new_token()
    path = tmp_path / "tokens.json"
    path.write_text(_doc(ops=(old, ["operator"])))
    store = TokenStore("", path, clock=lambda: now[0])
    assert store.authenticate(old) is not None

    path.write_text(_doc(ops=(new, ["operator", "viewer"])))  # rotate: new token, old revoked
    os.utime(path, ns=(1, 10**18))  # a different mtime even on coarse clocks
    now[0] += admin_auth.RELOAD_CHECK_S + 0.01
    assert store.authenticate(old) is None
    assert store.authenticate(new) == Principal("ops", frozenset({"operator", "viewer"}))
    assert store.reloads == 1

    path.write_text("{ broken")  # a broken edit keeps the last good tokens
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] += admin_auth.RELOAD_CHECK_S + 0.01
    assert store.authenticate(new) is not None and store.reload_errors == 1


def test_token_entry_round_trips_and_validates() -> None:
    tok = new_token()
    entry = token_entry("ci-bot", ["viewer", "metrics"], tok)
    store = TokenStore(orjson.dumps(entry).decode())
    assert store.authenticate(tok) == Principal("ci-bot", frozenset({"viewer", "metrics"}))
    with pytest.raises(ValueError):
        token_entry("ci-bot", ["admin"], tok)


def test_bearer_parsing() -> None:
    assert admin_auth.bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert admin_auth.bearer_token({"Authorization": "bearer  abc "}) == "abc"
    assert admin_auth.bearer_token({"Authorization": "Basic abc"}) is None
    assert admin_auth.bearer_token({}) is None


def test_cli_writes_the_file_in_place_and_a_store_follows(tmp_path) -> None:
    """Docker Compose mounts a secret file by inode: rotation must rewrite it in place."""
    import io

    now = [0.0]
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    inode = path.stat().st_ino
    store = TokenStore("", path, clock=lambda: now[0])
    out, err = io.StringIO(), io.StringIO()
    assert admin_tokens.cli_create("alice", "viewer,operator", str(path), False, out, err) == 0
    token = out.getvalue().strip()
    assert path.stat().st_ino == inode and token not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) in ("0o600", "0o644")  # kept, not widened
    now[0] += 1
    assert store.authenticate(token) == Principal("alice", frozenset({"viewer", "operator"}))
    # the same name again needs --rotate; with it the old token stops working
    assert admin_tokens.cli_create("alice", "viewer", str(path), False, io.StringIO(), err) == 2
    out2 = io.StringIO()
    assert admin_tokens.cli_create("alice", "viewer", str(path), True, out2, err) == 0
    os.utime(path, ns=(1, 3 * 10**18))
    now[0] += 1
    assert store.authenticate(token) is None
    assert store.authenticate(out2.getvalue().strip()) is not None
    assert admin_tokens.cli_revoke("alice", str(path), io.StringIO(), err) == 0
    os.utime(path, ns=(1, 4 * 10**18))
    now[0] += 1
    assert store.authenticate(out2.getvalue().strip()) is None and store.names == []


def test_an_empty_file_mid_rewrite_keeps_the_tokens(tmp_path) -> None:
    now = [0.0]
    tok = new_token()
    path = tmp_path / "tokens.json"
    path.write_text(_doc(a=(tok, ["viewer"])))
    store = TokenStore("", path, clock=lambda: now[0])
    path.write_text("")  # what a reader sees between truncate and write
    os.utime(path, ns=(1, 10**18))
    now[0] += 1
    assert store.authenticate(tok) is not None and store.reload_errors == 1
