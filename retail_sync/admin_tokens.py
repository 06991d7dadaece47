"""``retail-sync admin-token create|revoke``: make a token and add its hash to a tokens file, or
remove it (``retail_sync/admin_auth.py`` is the token format and the checks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from retail_sync.admin_auth import new_token, parse_tokens, token_entry


def _write_tokens_file(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` into ``path`` *in place* (same inode, mode 0600 when created): Docker
    Compose mounts a secret file by its inode, so a rename-replaced file would never reach the
    containers. A worker reading mid-write sees an empty or partial file, keeps its last good
    tokens and reads the finished file on its next check."""
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.truncate(0)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _read_doc(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    parse_tokens(text, origin=str(path))  # refuse to edit a file the workers would refuse
    return orjson.loads(text) if text.strip() else {}


def cli_create(name: str, scopes_text: str, file: str | None, rotate: bool,
               out: Any, err: Any) -> int:
    """Make a token: the token on ``out`` (once: it is not kept anywhere), and either the entry
    added to ``file`` or the entry to put into RETAIL_SYNC_ADMIN_TOKENS on ``err``."""
    scopes = [s.strip() for s in scopes_text.split(",") if s.strip()]
    token = new_token()
    try:
        entry = token_entry(name, scopes, token)
        if file:
            path = Path(file)
            doc = _read_doc(path)
            if name in doc and not rotate:
                raise ValueError(f"{path} already has a token named {name!r}: pass --rotate to "
                                 "replace it (the old token stops working)")
            doc.update(entry)
            _write_tokens_file(path, doc)
    except (ValueError, OSError) as exc:
        print(f"retail-sync: {exc}", file=err)
        return 2
    print(token, file=out)
    if file:
        print(f"token {name!r} ({', '.join(sorted(set(scopes)))}) written to {file} as its "
              "SHA-256; workers reading it (RETAIL_SYNC_ADMIN_TOKENS_FILE) accept it within a "
              "second. The token above is shown once: keep it in your secret store.", file=err)
    else:
        print(f"token {name!r} ({', '.join(sorted(set(scopes)))}): shown once above. Add this "
              "entry to RETAIL_SYNC_ADMIN_TOKENS (a JSON object of such entries) or to the file "
              "named by RETAIL_SYNC_ADMIN_TOKENS_FILE, on every worker:", file=err)
        print(orjson.dumps(entry).decode(), file=err)
    return 0


def cli_revoke(name: str, file: str, out: Any, err: Any) -> int:
    """Remove a token from a tokens file (workers stop accepting it within a second)."""
    path = Path(file)
    try:
        doc = _read_doc(path)
        if name not in doc:
            raise ValueError(f"{path} has no token named {name!r} (it has "
                             f"{', '.join(sorted(doc)) or 'none'})")
        del doc[name]
        _write_tokens_file(path, doc)
    except (ValueError, OSError) as exc:
        print(f"retail-sync: {exc}", file=err)
        return 2
    print(f"token {name!r} removed from {path}", file=out)
    return 0
