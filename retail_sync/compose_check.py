"""Validate docker-compose.yml, the Dockerfile it builds and the Prometheus files it mounts,
without a Docker engine.

    python -m retail_sync.compose_check docker-compose.yml [--no-external]

Checks, each reported as one line naming the file and the key at fault:

* YAML: parses, no duplicate keys; ``${VAR}`` / ``${VAR:-default}`` / ``$$`` interpolation is
  well-formed (a lone ``$`` or ``${VAR:default}`` is what Compose itself rejects).
* Compose spec rules that matter: every service has ``image`` or ``build``; no unknown service
  keys (typos such as ``enviroment``); ``depends_on`` targets exist, with valid conditions, no
  cycles, ``service_healthy`` only on services that have a healthcheck, and no always-on service
  depending on one that a profile may leave out; ports and ``expose`` well-formed, in range and
  not published twice; named volumes and networks declared; volume targets absolute; every file
  or directory mounted, built or read from the repository exists (build context, Dockerfile and
  the sources its COPY lines need, ``env_file``, bind mounts such as deploy/prometheus.yml);
  healthcheck ``test`` forms (``CMD``/``CMD-SHELL``/``NONE``) and durations; restart policies.
* retail-sync specifics: every ``RETAIL_SYNC_*`` variable is a real setting (the settings ignore
  unknown ones, so a typo would silently fall back to a default); workers that share an app id
  have distinct, reachable ``RETAIL_SYNC_CANONICAL_URL`` values and distinct datadir volumes;
  no worker publishes its admin listener (``RETAIL_SYNC_WEB_PORT``) beyond 127.0.0.1; a
  ``--webhook-url`` naming a worker uses its ingress port; Prometheus scrapes every worker, with
  a bearer token (``/metrics`` needs the ``metrics`` scope).
* Prometheus: the config mounted into the prometheus service parses, its ``rule_files`` are
  mounted too, and each rules file has groups -> rules with ``alert``, a well-formed ``expr``,
  ``labels.severity`` and ``annotations.summary``; the ``retail_sync_*`` metrics an expression
  uses exist in retail_sync/metrics.py.
* When present (and unless ``--no-external``): ``promtool check config/rules`` and
  ``docker compose config -q`` (which works without an engine); missing tools are skipped.

Prints a short summary; exits 1 with one message per problem.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

METRICS_SOURCE = Path(__file__).with_name("metrics.py")
#: other modules that define metrics (collectors registered by retail_sync/app.py)
EXTRA_METRICS_SOURCES = (Path(__file__).with_name("exceptions_view.py"),)
SEVERITIES = ("critical", "warning", "info")
WORKER_ENV_PREFIX = "RETAIL_SYNC_"

SERVICE_KEYS = frozenset("""
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares
cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname driver_opts entrypoint env_file environment expose extends external_links
extra_hosts gpus group_add healthcheck hostname image init ipc isolation labels label_file links
logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode
networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
privileged profiles provider pull_policy pull_refresh_after read_only restart runtime scale secrets
security_opt
shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits
use_api_socket user userns_mode uts volumes volumes_from working_dir
""".split())
TOP_LEVEL_KEYS = frozenset(
    {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include",
     "models"}
)
HEALTHCHECK_KEYS = frozenset(
    {"test", "interval", "timeout", "start_period", "start_interval", "retries", "disable"}
)
DEPENDS_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
VOLUME_MODES = frozenset(
    {"ro", "rw", "z", "Z", "cached", "delegated", "consistent", "nocopy", "shared", "slave",
     "private", "rshared", "rslave", "rprivate"}
)
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SERVICE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
PROFILE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
GO_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
PROM_DURATION_RE = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
PORT_RE = re.compile(
    r"^(?:(?P<ip>\[[0-9A-Fa-f:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?"
    r"(?:(?P<host>\d*(?:-\d+)?):)?"
    r"(?P<container>\d+(?:-\d+)?)"
    r"(?:/(?P<proto>tcp|udp|sctp))?$"
)
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
METRIC_RE = re.compile(r"\b(retail_sync_[A-Za-z0-9_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


# --- reporting ---------------------------------------------------------------------------------


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.notes.append(f"{where}: {message}")

    @property
    def ok(self) -> bool:
        return not self.errors


class CheckError(Exception):
    """A problem that stops the check of one file (it cannot be parsed at all)."""


# --- YAML with duplicate-key detection ---------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (Compose rejects it too).

    Keys brought in by a ``<<`` merge may be overridden; only literal repeats are errors.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CheckError(f"{path}: invalid YAML: {exc}") from None


# --- interpolation ----------------------------------------------------------------------------


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str], unset: set[str] | None = None) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e},
    ${VAR:+a}, ${VAR+a}, $$ for a literal dollar; defaults may nest further ${...}."""
    out, _ = _interpolate(text, 0, env, unset if unset is not None else set(), top=True)
    return out


def _interpolate(
    text: str, i: int, env: dict[str, str], unset: set[str], top: bool
) -> tuple[str, int]:
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "}" and not top:
            return "".join(out), i
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            value, i = _braced(text, i + 2, env, unset)
            out.append(value)
        else:
            m = NAME_RE.match(text, i + 1)
            if not m:
                shown = repr(nxt) if nxt else "end of string"
                raise InterpolationError(
                    f"invalid interpolation at {text[i:i + 12]!r}: '$' followed by {shown}; "
                    "write $$ for a literal dollar sign"
                )
            name = m.group(0)
            if name not in env:
                unset.add(name)
            out.append(env.get(name, ""))
            i = m.end()
    if not top:
        raise InterpolationError(f"unterminated '${{' in {text!r}")
    return "".join(out), i


def _braced(text: str, i: int, env: dict[str, str], unset: set[str]) -> tuple[str, int]:
    m = NAME_RE.match(text, i)
    if not m:
        raise InterpolationError(f"invalid variable name in {text!r} at {text[i - 2:i + 10]!r}")
    name, i = m.group(0), m.end()
    if i >= len(text):
        raise InterpolationError(f"unterminated '${{{name}' in {text!r}")
    if text[i] == "}":
        if name not in env:
            unset.add(name)
        return env.get(name, ""), i + 1
    op_match = re.compile(r":?[-?+]").match(text, i)
    if not op_match:
        raise InterpolationError(
            f"invalid interpolation '${{{name}{text[i:i + 8]}...' in {text!r}: after the name "
            "expect '}', ':-', '-', ':?', '?', ':+' or '+'"
        )
    op, i = op_match.group(0), op_match.end()
    arg, i = _interpolate(text, i, env, unset, top=False)
    i += 1  # the closing brace
    value = env.get(name)
    empty_counts = op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if op.endswith("-"):
        return (arg if missing else value or ""), i
    if op.endswith("+"):
        return ("" if missing else arg), i
    if missing:  # ? and :?
        raise InterpolationError(f"required variable {name} is not set: {arg or 'no message'}")
    return value or "", i


def interpolate_tree(
    node: Any, env: dict[str, str], where: str, report: Report, unset: set[str], label: str = ""
) -> Any:
    """Interpolate every string value (not keys) of a parsed YAML tree, reporting bad syntax."""

    def sub(key: object) -> str:
        return f"{where}.{key}" if where else str(key)

    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, sub(k), report, unset, label) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{where}[{i}]", report, unset, label)
                for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, env, unset)
        except InterpolationError as exc:
            report.error(f"{label}: {where}" if label else where, str(exc))
            return node
    return node


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass
class Dockerfile:
    path: Path
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    has_healthcheck: bool = False
    copies: list[tuple[int, list[str]]] = field(default_factory=list)  # (line, sources)


def parse_dockerfile(path: Path) -> Dockerfile:
    info = Dockerfile(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    if buf:
        logical.append((start, buf))
    for number, line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            info.env = {}  # ENV does not cross stages; the last stage is the image
            info.cmd, info.has_healthcheck = None, False
        elif instruction == "ENV":
            parts = shlex.split(rest)
            if parts and "=" not in parts[0]:
                info.env[parts[0]] = " ".join(parts[1:])
            else:
                for part in parts:
                    key, _, value = part.partition("=")
                    info.env[key] = value
        elif instruction == "CMD":
            info.cmd = _exec_or_shell(rest)
        elif instruction == "HEALTHCHECK":
            info.has_healthcheck = not rest.upper().startswith("NONE")
        elif instruction in ("COPY", "ADD"):
            words = [w for w in _exec_or_shell(rest) if not w.startswith("--")]
            if "--from=" in rest or "<<" in rest or len(words) < 2:
                continue
            sources = [s for s in words[:-1] if "://" not in s]
            info.copies.append((number, sources))
    return info


def _exec_or_shell(rest: str) -> list[str]:
    if rest.startswith("["):
        import json

        try:
            value = json.loads(rest)
            return [str(v) for v in value]
        except ValueError:
            pass
    return shlex.split(rest)


# --- the compose check ------------------------------------------------------------------------


@dataclass
class ServiceFacts:
    name: str
    profiles: list[str]
    dockerfile: Dockerfile | None = None
    mounts: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, source, target)


class ComposeChecker:
    def __init__(self, path: Path, report: Report, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.root = path.resolve().parent
        self.report = report
        self.name = path.name
        base = read_dotenv(self.root / ".env")
        base.update(os.environ if env is None else env)
        self.env = base
        self.facts: dict[str, ServiceFacts] = {}
        self.services: dict[str, Any] = {}
        self.prometheus_configs: list[tuple[str, Path, dict[str, Path]]] = []

    def err(self, where: str, message: str) -> None:
        self.report.error(f"{self.name}: {where}", message)

    def note(self, where: str, message: str) -> None:
        self.report.note(f"{self.name}: {where}", message)

    def rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.root))
        except ValueError:
            return str(p)

    # -- entry ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        raw = load_yaml(self.path)
        if not isinstance(raw, dict):
            raise CheckError(f"{self.name}: the top level must be a mapping with 'services'")
        unset: set[str] = set()
        doc = interpolate_tree(raw, self.env, "", self.report, unset, self.name)
        for name in sorted(unset):
            self.note("interpolation", f"${name} is not set; it defaults to an empty string")
        for key in doc:
            if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
                self.err(str(key), "unknown top-level key")
        if "version" in doc:
            self.note("version", "obsolete: Compose ignores the top-level version key")
        services = doc.get("services")
        if not isinstance(services, dict) or not services:
            self.err("services", "must be a non-empty mapping of service names to definitions")
            return doc
        self.services = services
        volumes = doc.get("volumes") or {}
        networks = doc.get("networks") or {}
        if not isinstance(volumes, dict):
            self.err("volumes", "must be a mapping of volume names")
            volumes = {}
        if not isinstance(networks, dict):
            self.err("networks", "must be a mapping of network names")
            networks = {}
        for name, svc in services.items():
            where = f"services.{name}"
            if not SERVICE_NAME_RE.match(str(name)):
                self.err(where, "invalid service name (letters, digits, '.', '_', '-')")
            if not isinstance(svc, dict):
                self.err(where, "must be a mapping")
                continue
            self.facts[name] = ServiceFacts(name, self._profiles(where, svc))
            self._service(where, name, svc, volumes, networks)
        self._depends_on_graph()
        self._published_ports()
        self._unused(volumes, "volumes", lambda f: [s for k, s, _ in f.mounts if k == "volume"])
        self._retail_sync_workers()
        return doc

    # -- one service ----------------------------------------------------------------------

    def _service(self, where: str, name: str, svc: dict[str, Any], volumes: dict[str, Any],
                 networks: dict[str, Any]) -> None:
        for key in svc:
            if key not in SERVICE_KEYS and not str(key).startswith("x-"):
                self.err(f"{where}.{key}", "unknown service key")
        if "image" not in svc and "build" not in svc:
            self.err(where, "has neither 'image' nor 'build'")
        if "image" in svc and (not isinstance(svc["image"], str) or not svc["image"].strip()):
            self.err(f"{where}.image", "must be a non-empty string")
        if "build" in svc:
            self._build(f"{where}.build", name, svc["build"])
        for key in ("command", "entrypoint"):
            if key in svc:
                self._command(f"{where}.{key}", svc[key])
        if "restart" in svc and not RESTART_RE.match(str(svc["restart"])):
            self.err(f"{where}.restart",
                     f"{svc['restart']!r}: use no, always, on-failure[:N] or unless-stopped")
        if "stop_grace_period" in svc:
            self._duration(f"{where}.stop_grace_period", svc["stop_grace_period"])
        if "environment" in svc:
            self._environment(f"{where}.environment", svc["environment"])
        if "env_file" in svc:
            self._env_file(f"{where}.env_file", svc["env_file"])
        if "ports" in svc:
            self._ports(f"{where}.ports", svc["ports"])
        if "expose" in svc:
            self._expose(f"{where}.expose", svc["expose"])
        if "volumes" in svc:
            self._volumes(f"{where}.volumes", name, svc["volumes"], volumes)
        if "networks" in svc:
            self._networks(f"{where}.networks", svc["networks"], networks)
        if "healthcheck" in svc:
            self._healthcheck(f"{where}.healthcheck", svc["healthcheck"])
        mode = svc.get("network_mode")
        if isinstance(mode, str) and mode.startswith("service:"):
            if mode.split(":", 1)[1] not in self.services:
                self.err(f"{where}.network_mode", f"{mode!r}: no such service")

    def _profiles(self, where: str, svc: dict[str, Any]) -> list[str]:
        profiles = svc.get("profiles", [])
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            self.err(f"{where}.profiles", "must be a list of profile names")
            return []
        for p in profiles:
            if not PROFILE_RE.match(p):
                self.err(f"{where}.profiles", f"{p!r} is not a valid profile name")
        return profiles

    def _build(self, where: str, name: str, build: Any) -> None:
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        elif isinstance(build, dict):
            context = build.get("context", ".")
            dockerfile = build.get("dockerfile", "Dockerfile")
            if "dockerfile_inline" in build:
                return
        else:
            self.err(where, "must be a path or a mapping with 'context'")
            return
        if not isinstance(context, str) or re.match(r"^(https?|git|ssh)://|^git@", context):
            return  # remote context: nothing to check here
        ctx = (self.root / context).resolve()
        if not ctx.is_dir():
            self.err(where, f"build context {context!r} is not a directory")
            return
        df = (ctx / dockerfile).resolve()
        if not df.is_file():
            self.err(where, f"Dockerfile {self.rel(df)} does not exist")
            return
        info = parse_dockerfile(df)
        self.facts[name].dockerfile = info
        for line, sources in info.copies:
            globs = [s for s in sources if any(c in s for c in "*?[")]
            plain = [s for s in sources if s not in globs]
            for src in plain:
                if not (ctx / src).exists():
                    self.report.error(f"{self.rel(df)}:{line}",
                                      f"COPY/ADD source {src!r} does not exist in the build "
                                      f"context {self.rel(ctx) or '.'}")
            if globs and not plain and not any(any(ctx.glob(g)) for g in globs):
                self.report.error(f"{self.rel(df)}:{line}",
                                  f"COPY/ADD sources {globs} match no file in the build context")

    def _command(self, where: str, value: Any) -> None:
        if isinstance(value, str):
            try:
                shlex.split(value)
            except ValueError as exc:
                self.err(where, f"cannot be split into arguments: {exc}")
        elif isinstance(value, list):
            for i, arg in enumerate(value):
                if not isinstance(arg, str):
                    self.err(f"{where}[{i}]", f"{arg!r} must be a string: quote it")
        elif value is not None:
            self.err(where, "must be a string or a list of strings")

    def _duration(self, where: str, value: Any) -> None:
        if not isinstance(value, str) or not GO_DURATION_RE.match(value):
            self.err(where, f"{value!r} is not a duration like 10s, 1m30s or 500ms")

    def _environment(self, where: str, env: Any) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        if isinstance(env, dict):
            for key, value in env.items():
                if isinstance(value, dict | list):
                    self.err(f"{where}.{key}", "value must be a string, number, bool or null")
                result[str(key)] = None if value is None else _scalar(value)
        elif isinstance(env, list):
            for item in env:
                if not isinstance(item, str):
                    self.err(where, f"{item!r}: list entries must be 'KEY=value' strings")
                    continue
                key, sep, value = item.partition("=")
                if key in result:
                    self.err(where, f"{key} is set twice")
                result[key] = value if sep else None
        else:
            self.err(where, "must be a mapping or a list of KEY=value")
        for key in result:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", key):
                self.err(where, f"{key!r} is not a valid variable name")
        return result

    def _env_file(self, where: str, value: Any) -> None:
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            required = True
            if isinstance(entry, dict):
                required = bool(entry.get("required", True))
                entry = entry.get("path")
            if not isinstance(entry, str):
                self.err(where, "entries must be paths")
                continue
            if required and not (self.root / entry).is_file():
                self.err(where, f"env file {entry!r} does not exist")

    def _ports(self, where: str, ports: Any) -> None:
        if not isinstance(ports, list):
            self.err(where, "must be a list")
            return
        for i, port in enumerate(ports):
            at = f"{where}[{i}]"
            if isinstance(port, bool):
                self.err(at, f"{port!r} is not a port")
            elif isinstance(port, int):
                if not 1 <= port <= 65535:
                    self.err(at, f"{port} is not a port; unquoted 'A:B' is read by YAML 1.1 as a "
                                 "base-60 number: quote port mappings")
            elif isinstance(port, str):
                self._port_string(at, port)
            elif isinstance(port, dict):
                target = port.get("target")
                if target is None or not _port_range_ok(str(target)):
                    self.err(at, "long syntax needs 'target': a container port")
                pub = port.get("published")
                if pub is not None and not _port_range_ok(str(pub)):
                    self.err(at, f"published {pub!r} is not a port or port range")
                if port.get("protocol", "tcp") not in ("tcp", "udp", "sctp"):
                    self.err(at, f"protocol {port.get('protocol')!r}: use tcp, udp or sctp")
                if port.get("mode", "ingress") not in ("host", "ingress"):
                    self.err(at, f"mode {port.get('mode')!r}: use host or ingress")
            else:
                self.err(at, "must be a string, a number or a mapping")

    def _port_string(self, where: str, spec: str) -> None:
        m = PORT_RE.match(spec)
        if not m:
            self.err(where, f"{spec!r} is not [IP:][HOST:]CONTAINER[/PROTOCOL]")
            return
        host, container = m.group("host"), m.group("container")
        for part in (host, container):
            if part and not _port_range_ok(part):
                self.err(where, f"{spec!r}: {part!r} is out of range 1-65535 or a reversed range")
                return
        if host and "-" in host and "-" in container:
            if _range_len(host) != _range_len(container):
                self.err(where, f"{spec!r}: host and container ranges differ in length")
        ip = m.group("ip")
        if ip and not ip.startswith("[") and any(int(o) > 255 for o in ip.split(".")):
            self.err(where, f"{spec!r}: {ip} is not an IPv4 address")

    def _expose(self, where: str, expose: Any) -> None:
        if not isinstance(expose, list):
            self.err(where, "must be a list")
            return
        for item in expose:
            spec = str(item).split("/", 1)[0]
            if not _port_range_ok(spec):
                self.err(where, f"{item!r} is not a port or port range")

    def _published_ports(self) -> None:
        seen: dict[tuple[str, str, int], str] = {}
        for name, svc in self.services.items():
            if not isinstance(svc, dict) or not isinstance(svc.get("ports"), list):
                continue
            for port in svc["ports"]:
                for key in _published(port):
                    if key in seen and seen[key] != name:
                        self.err(f"services.{name}.ports",
                                 f"host port {key[2]}/{key[1]} is also published by "
                                 f"{seen[key]}")
                    seen[key] = name

    def _volumes(self, where: str, service: str, entries: Any, declared: dict[str, Any]) -> None:
        if not isinstance(entries, list):
            self.err(where, "must be a list")
            return
        targets: set[str] = set()
        for i, entry in enumerate(entries):
            at = f"{where}[{i}]"
            parsed = self._volume_entry(at, entry)
            if parsed is None:
                continue
            kind, source, target = parsed
            if not target.startswith("/"):
                self.err(at, f"target {target!r} must be an absolute container path")
            if target in targets:
                self.err(at, f"{target} is mounted twice")
            targets.add(target)
            if kind == "volume" and source and source not in declared:
                self.err(at, f"named volume {source!r} is not declared under top-level volumes")
            if kind == "bind" and not source.startswith(("/", "~")):
                host = (self.root / source).resolve()
                if not host.exists():
                    self.err(at, f"mounts {source} ({self.rel(host)}), which does not exist")
            self.facts[service].mounts.append((kind, source, target))

    def _volume_entry(self, where: str, entry: Any) -> tuple[str, str, str] | None:
        if isinstance(entry, dict):
            kind = entry.get("type")
            if kind not in ("volume", "bind", "tmpfs", "npipe", "cluster", "image"):
                self.err(where, f"type {kind!r}: use volume, bind or tmpfs")
                return None
            target = entry.get("target")
            if not isinstance(target, str):
                self.err(where, "long syntax needs 'target'")
                return None
            return kind, str(entry.get("source") or ""), target
        if not isinstance(entry, str):
            self.err(where, "must be 'SOURCE:TARGET[:MODE]' or a mapping")
            return None
        parts = entry.split(":")
        if len(parts) == 1:
            return "volume", "", parts[0]  # anonymous volume
        if len(parts) > 3:
            self.err(where, f"{entry!r} has too many ':'")
            return None
        source, target = parts[0], parts[1]
        if len(parts) == 3:
            for mode in parts[2].split(","):
                if mode not in VOLUME_MODES:
                    self.err(where, f"{entry!r}: unknown mount option {mode!r}")
        if not source:
            self.err(where, f"{entry!r}: empty source")
            return None
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        return kind, source, target

    def _networks(self, where: str, value: Any, declared: dict[str, Any]) -> None:
        names = value if isinstance(value, list) else list(value) if isinstance(value, dict) else []
        if not isinstance(value, list | dict):
            self.err(where, "must be a list or a mapping")
        for net in names:
            if net != "default" and net not in declared:
                self.err(where, f"network {net!r} is not declared under top-level networks")

    def _healthcheck(self, where: str, hc: Any) -> None:
        if not isinstance(hc, dict):
            self.err(where, "must be a mapping")
            return
        for key in hc:
            if key not in HEALTHCHECK_KEYS:
                self.err(f"{where}.{key}", "unknown healthcheck key")
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if key in hc:
                self._duration(f"{where}.{key}", hc[key])
        if "retries" in hc and (not isinstance(hc["retries"], int) or hc["retries"] < 0):
            self.err(f"{where}.retries", "must be a non-negative integer")
        test = hc.get("test")
        if test is None:
            return
        if isinstance(test, str):
            if not test.strip():
                self.err(f"{where}.test", "is empty")
            return
        if not isinstance(test, list) or not test or not all(isinstance(t, str) for t in test):
            self.err(f"{where}.test", "must be a string or a non-empty list of strings")
            return
        form = test[0]
        if form == "NONE":
            if len(test) != 1:
                self.err(f"{where}.test", "['NONE'] takes no arguments")
        elif form == "CMD":
            if len(test) < 2:
                self.err(f"{where}.test", "['CMD', program, args...] needs a program")
        elif form == "CMD-SHELL":
            if len(test) != 2:
                self.err(f"{where}.test",
                         "['CMD-SHELL', 'command line'] takes exactly one string; "
                         f"got {len(test) - 1}")
        else:
            self.err(f"{where}.test",
                     f"a list must start with 'CMD', 'CMD-SHELL' or 'NONE', not {form!r}")

    def _has_healthcheck(self, name: str) -> bool | None:
        """True/False when known (compose healthcheck, or the HEALTHCHECK of the Dockerfile it
        builds); None for a prebuilt image, which this check cannot look into."""
        hc = self.services[name].get("healthcheck")
        if isinstance(hc, dict):
            if hc.get("disable") or hc.get("test") in (["NONE"], "NONE"):
                return False
            if hc.get("test"):
                return True
        df = self.facts[name].dockerfile
        if df is not None:
            return df.has_healthcheck
        return None

    def _depends_on_graph(self) -> None:
        graph: dict[str, list[str]] = {}
        for name, svc in self.services.items():
            if not isinstance(svc, dict) or "depends_on" not in svc:
                continue
            where = f"services.{name}.depends_on"
            deps = svc["depends_on"]
            items: list[tuple[str, dict[str, Any]]]
            if isinstance(deps, list):
                items = [(str(d), {}) for d in deps]
            elif isinstance(deps, dict):
                items = [(str(d), opts if isinstance(opts, dict) else {}) for d, opts in
                         deps.items()]
            else:
                self.err(where, "must be a list or a mapping")
                continue
            graph[name] = []
            for dep, opts in items:
                if dep == name:
                    self.err(where, "a service cannot depend on itself")
                    continue
                if dep not in self.services:
                    self.err(where, f"{dep!r} is not a service in this file")
                    continue
                graph[name].append(dep)
                if isinstance(deps, dict) and "condition" not in opts:
                    self.err(f"{where}.{dep}", "the mapping form needs 'condition' (e.g. "
                             "service_started or service_healthy)")
                cond = opts.get("condition", "service_started")
                if cond not in DEPENDS_CONDITIONS:
                    self.err(f"{where}.{dep}.condition",
                             f"{cond!r}: use one of {', '.join(DEPENDS_CONDITIONS)}")
                if cond == "service_healthy" and dep in self.facts:
                    has = self._has_healthcheck(dep)
                    if has is False:
                        self.err(f"{where}.{dep}",
                                 f"condition service_healthy but {dep} has no healthcheck")
                    elif has is None:  # a prebuilt image might have one, but rarely does
                        self.err(f"{where}.{dep}",
                                 f"condition service_healthy but {dep} has no healthcheck in "
                                 "this file; define one (most images do not ship a HEALTHCHECK)")
                if opts.get("required", True) and name in self.facts and dep in self.facts:
                    mine, theirs = self.facts[name].profiles, self.facts[dep].profiles
                    if theirs and not (mine and set(mine) <= set(theirs)):
                        active = f"profiles {mine}" if mine else "no profile"
                        self.err(where,
                                 f"{dep} is only started with profiles {theirs} but {name} runs "
                                 f"with {active}: add 'required: false' or align the profiles")
        for cycle in _cycles(graph):
            self.err("depends_on", "dependency cycle: " + " -> ".join(cycle))

    def _unused(self, declared: dict[str, Any], key: str, used_of: Any) -> None:
        used = {s for f in self.facts.values() for s in used_of(f)}
        for name in declared:
            if name not in used:
                self.note(f"{key}.{name}", "declared but not used by any service")

    # -- retail-sync specifics ----------------------------------------------------------------

    def service_env(self, name: str) -> dict[str, str]:
        svc = self.services[name]
        df = self.facts[name].dockerfile
        env: dict[str, str] = dict(df.env) if df else {}
        raw = svc.get("environment")
        if isinstance(raw, dict):
            env.update({str(k): _scalar(v) for k, v in raw.items() if v is not None})
        elif isinstance(raw, list):
            for item in raw:
                if isinstance(item, str) and "=" in item:
                    k, _, v = item.partition("=")
                    env[k] = v
        return env

    def command_of(self, name: str) -> list[str]:
        cmd = self.services[name].get("command")
        if isinstance(cmd, str):
            try:
                return shlex.split(cmd)
            except ValueError:
                return []
        if isinstance(cmd, list):
            return [str(c) for c in cmd]
        df = self.facts[name].dockerfile
        return list(df.cmd or []) if df else []

    def worker_services(self) -> list[str]:
        out = []
        for name in self.facts:
            cmd = self.command_of(name)
            if "retail-sync" in cmd and cmd[cmd.index("retail-sync") + 1:][:1] == ["worker"]:
                out.append(name)
        return out

    def _retail_sync_workers(self) -> None:
        known = _settings_env_names()
        for name in self.facts:
            raw = self.services[name].get("environment")
            keys = raw.keys() if isinstance(raw, dict) else [
                str(i).partition("=")[0] for i in raw or [] if isinstance(i, str)]
            for key in keys:
                if str(key).startswith(WORKER_ENV_PREFIX) and known and key not in known:
                    self.err(f"services.{name}.environment.{key}",
                             "not a retail-sync setting (see retail_sync/settings.py); "
                             "the worker would silently ignore it")
        groups: dict[str, list[str]] = {}
        for name in self.worker_services():
            env = self.service_env(name)
            groups.setdefault(env.get("RETAIL_SYNC_APP_ID", "retail-sync"), []).append(name)
        for app_id, workers in groups.items():
            urls: dict[str, str] = {}
            datadirs: dict[tuple[str, str], str] = {}
            for name in workers:
                env = self.service_env(name)
                where = f"services.{name}"
                url = env.get("RETAIL_SYNC_CANONICAL_URL")
                port = env.get("RETAIL_SYNC_WEB_PORT", "6066")
                if len(workers) > 1 and not url:
                    self.err(where, f"workers of app {app_id!r} share a consumer group: set "
                                    "RETAIL_SYNC_CANONICAL_URL so table routing can reach it")
                elif url:
                    m = re.match(r"^https?://([^:/]+)(?::(\d+))?", url)
                    svc = self.services[name]
                    names = {name, svc.get("hostname"), svc.get("container_name")}
                    if not m or m.group(1) not in names:
                        self.err(f"{where}.environment.RETAIL_SYNC_CANONICAL_URL",
                                 f"{url!r} should name this service ({name}) so other workers "
                                 "can reach it")
                    elif (m.group(2) or "80") != port:
                        self.err(f"{where}.environment.RETAIL_SYNC_CANONICAL_URL",
                                 f"{url!r} does not use the worker's web port {port}")
                    if url in urls:
                        self.err(f"{where}.environment.RETAIL_SYNC_CANONICAL_URL",
                                 f"{url!r} is also {urls[url]}'s: table routing would send "
                                 "requests to the wrong worker")
                    urls[url] = name
                self._admin_not_published(name, port)
                datadir = env.get("RETAIL_SYNC_DATADIR", "var/data")
                mount = next(((k, s) for k, s, t in self.facts[name].mounts
                              if s and _under(datadir, t)), None)
                if mount is None:
                    self.note(where, f"no volume holds the datadir {datadir}: table state is "
                                     "rebuilt from changelogs after every restart")
                elif mount in datadirs:
                    self.err(f"{where}.volumes", f"datadir {mount[1]!r} is shared with "
                             f"{datadirs[mount]}: each worker needs its own RocksDB directory")
                else:
                    datadirs[mount] = name
            self.report.summary.append(
                f"  workers: {', '.join(workers)} (app id {app_id!r}, one consumer group)")
        self._webhooks_go_to_the_ingress()

    def _admin_not_published(self, name: str, admin_port: str) -> None:
        """The admin listener (views, actions, metrics) stays off the host's public interfaces;
        the webhooks have their own ingress listener."""
        ports = self.services[name].get("ports")
        for i, spec in enumerate(ports if isinstance(ports, list) else []):
            if isinstance(spec, dict):
                container = str(spec.get("target", ""))
            else:
                m = PORT_RE.match(str(spec))
                container = m.group("container") if m else ""
            for ip, _proto, host_port in _published(spec):
                if container == admin_port and ip.strip("[]") not in ("127.0.0.1", "::1"):
                    self.err(f"services.{name}.ports[{i}]",
                             f"publishes the admin listener (container port {admin_port}) on "
                             f"{'every interface' if ip == '0.0.0.0' else ip} as {host_port}: "  # noqa: S104
                             "keep it on the compose network (expose) or on 127.0.0.1; "
                             "marketplaces reach RETAIL_SYNC_INGRESS_PORT")

    def _webhooks_go_to_the_ingress(self) -> None:
        """A ``--webhook-url`` naming a worker must use its ingress port, not the admin one."""
        workers = set(self.worker_services())
        for name in self.facts:
            cmd = self.command_of(name)
            for flag, url in zip(cmd, cmd[1:], strict=False):
                if flag != "--webhook-url":
                    continue
                m = re.match(r"^https?://([^:/]+)(?::(\d+))?", url)
                if not m or m.group(1) not in workers:
                    continue
                env = self.service_env(m.group(1))
                ingress = env.get("RETAIL_SYNC_INGRESS_PORT", "6065")
                if (m.group(2) or "80") != ingress:
                    self.err(f"services.{name}.command",
                             f"--webhook-url {url} is not {m.group(1)}'s ingress listener "
                             f"(port {ingress}): webhooks are served only there")

    # -- prometheus mounts --------------------------------------------------------------------

    def prometheus_files(self) -> list[tuple[str, Path, dict[str, Path]]]:
        """(service, host path of its config, container path -> host path of its bind mounts)."""
        found = []
        for name, svc in self.services.items():
            if not isinstance(svc, dict) or name not in self.facts:
                continue
            image = str(svc.get("image", ""))
            cmd = self.command_of(name)
            config = next((c.split("=", 1)[1] for c in cmd if c.startswith("--config.file=")),
                          None)
            if "alertmanager" in image.split("/")[-1]:  # its --config.file is not Prometheus'
                continue
            if config is None and "prometheus" not in image.split("/")[-1]:
                continue
            config = config or "/etc/prometheus/prometheus.yml"
            binds = {t: (self.root / s).resolve() for k, s, t in self.facts[name].mounts
                     if k == "bind" and not s.startswith(("/", "~"))}
            host = _host_path(config, binds)
            if host is None:
                self.note(f"services.{name}", f"{config} is not mounted from the repository; "
                                              "the image's own config is used")
                continue
            found.append((name, host, binds))
        return found


    def alertmanager_files(self) -> list[tuple[str, Path]]:
        """(service, host path of its config) of every Alertmanager service."""
        found = []
        for name, svc in self.services.items():
            if not isinstance(svc, dict) or name not in self.facts:
                continue
            if "alertmanager" not in str(svc.get("image", "")).split("/")[-1]:
                continue
            cmd = self.command_of(name)
            config = next((c.split("=", 1)[1] for c in cmd if c.startswith("--config.file=")),
                          "/etc/alertmanager/alertmanager.yml")
            binds = {t: (self.root / s).resolve() for k, s, t in self.facts[name].mounts
                     if k == "bind" and not s.startswith(("/", "~"))}
            host = _host_path(config, binds)
            if host is None:
                self.note(f"services.{name}", f"{config} is not mounted from the repository")
                continue
            found.append((name, host))
        return found


def check_alertmanager(path: Path, report: Report, label: str) -> None:
    """The routing tree names receivers that exist; inhibit rules have source and target
    matchers. (``amtool check-config`` does the full check when installed.)"""
    try:
        doc = load_yaml(path)
    except CheckError as exc:
        report.errors.append(str(exc))
        return
    if not isinstance(doc, dict):
        report.error(label, "must be a mapping with 'route' and 'receivers'")
        return
    receivers = {r.get("name") for r in doc.get("receivers") or [] if isinstance(r, dict)}
    route = doc.get("route")
    if not isinstance(route, dict) or not route.get("receiver"):
        report.error(f"{label}: route", "needs a default 'receiver'")
        return
    routes = [route]
    count = 0
    while routes:
        r = routes.pop()
        count += 1
        if r.get("receiver") is not None and r["receiver"] not in receivers:
            report.error(f"{label}: route", f"receiver {r['receiver']!r} is not defined")
        routes.extend(x for x in r.get("routes") or [] if isinstance(x, dict))
    inhibits = doc.get("inhibit_rules") or []
    for i, rule in enumerate(inhibits):
        if not isinstance(rule, dict) or not rule.get("source_matchers") \
                or not rule.get("target_matchers"):
            report.error(f"{label}: inhibit_rules[{i}]", "needs source_matchers and target_matchers")
    report.summary.append(f"{label}: {count} routes, {len(receivers)} receivers, "
                          f"{len(inhibits)} inhibit rules")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _port_range_ok(spec: str) -> bool:
    parts = spec.split("-")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        return False
    nums = [int(p) for p in parts]
    return all(1 <= n <= 65535 for n in nums) and nums == sorted(nums)


def _range_len(spec: str) -> int:
    parts = [int(p) for p in spec.split("-")]
    return parts[-1] - parts[0] + 1


def _published(port: Any) -> Iterator[tuple[str, str, int]]:
    if isinstance(port, str):
        m = PORT_RE.match(port)
        if m and m.group("host") and _port_range_ok(m.group("host")):
            lo, _, hi = m.group("host").partition("-")
            for p in range(int(lo), int(hi or lo) + 1):
                yield (m.group("ip") or "0.0.0.0", m.group("proto") or "tcp", p)  # noqa: S104
    elif isinstance(port, dict) and str(port.get("published", "")).isdigit():
        yield (str(port.get("host_ip", "0.0.0.0")), str(port.get("protocol", "tcp")),  # noqa: S104
               int(port["published"]))


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def _under(path: str, mount: str) -> bool:
    p, m = PurePosixPath(path), PurePosixPath(mount)
    return p == m or m in p.parents


def _host_path(container_path: str, binds: dict[str, Path]) -> Path | None:
    target = PurePosixPath(container_path)
    for mount, host in binds.items():
        m = PurePosixPath(mount)
        if target == m:
            return host
        if m in target.parents:
            return host / target.relative_to(m)
    return None


def _settings_env_names() -> set[str]:
    try:
        from retail_sync.settings import ENV_PREFIX, Settings
    except Exception:  # noqa: BLE001 - the structural checks still run without the settings
        return set()
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


# --- prometheus config and rules ---------------------------------------------------------------


def known_metric_names(source: Path = METRICS_SOURCE) -> set[str]:
    """Metric names as they appear in string literals of retail_sync/metrics.py (and of the
    other modules defining collectors, EXTRA_METRICS_SOURCES)."""
    names: set[str] = set()
    sources = (source, *EXTRA_METRICS_SOURCES) if source == METRICS_SOURCE else (source,)
    for path in sources:
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"[\"'](retail_sync_[A-Za-z0-9_]+)[\"']", text))
    return names


def expr_metric_names(expr: str) -> set[str]:
    return set(METRIC_RE.findall(_strip_promql_strings(expr)))


def _strip_promql_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def _unknown_metric(name: str, known: set[str]) -> bool:
    if name in known:
        return False
    return not any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)


def _balanced(expr: str) -> str | None:
    """None when brackets and quotes balance, else what is wrong."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in "\"'`":
            end = i + 1
            while end < n and expr[end] != ch:
                end += 2 if expr[end] == "\\" and ch != "`" else 1
            if end >= n:
                return f"unterminated string starting at {expr[i:i + 20]!r}"
            i = end + 1
            continue
        if ch == "#":
            while i < n and expr[i] != "\n":
                i += 1
            continue
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack[-1] != pairs[ch]:
                return f"unbalanced {ch!r} at {expr[max(0, i - 20):i + 1]!r}"
            stack.pop()
        i += 1
    return f"unclosed {stack[-1]!r}" if stack else None


def check_alert_rules(path: Path, report: Report, label: str,
                      known: set[str] | None = None) -> None:
    try:
        doc = load_yaml(path)
    except CheckError as exc:
        report.errors.append(str(exc))
        return
    known = known_metric_names() if known is None else known
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        report.error(label, "must have a non-empty 'groups' list")
        return
    alerts = records = 0
    by_severity: dict[str, int] = {}
    group_names: set[str] = set()
    for gi, group in enumerate(groups):
        gwhere = f"{label}: groups[{gi}]"
        if not isinstance(group, dict):
            report.error(gwhere, "must be a mapping with 'name' and 'rules'")
            continue
        gname = group.get("name")
        if not isinstance(gname, str) or not gname:
            report.error(gwhere, "needs a 'name'")
        elif gname in group_names:
            report.error(gwhere, f"group name {gname!r} is used twice")
        group_names.add(str(gname))
        if "interval" in group and not _prom_duration(group["interval"]):
            report.error(f"{gwhere}.interval", f"{group['interval']!r} is not a duration")
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            report.error(gwhere, "needs a non-empty 'rules' list")
            continue
        names: set[str] = set()
        for ri, rule in enumerate(rules):
            where = f"{label}: {gname}.rules[{ri}]"
            if not isinstance(rule, dict):
                report.error(where, "must be a mapping")
                continue
            if "record" in rule:
                records += 1
                if "alert" in rule:
                    report.error(where, "has both 'record' and 'alert'")
                _check_expr(where, rule.get("expr"), report, known)
                continue
            alert = rule.get("alert")
            if not isinstance(alert, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", alert):
                report.error(where, f"needs 'alert': a name like ConsumerLagHigh, not {alert!r}")
                continue
            where = f"{label}: {alert}"
            if alert in names:
                report.error(where, "defined twice in one group")
            names.add(alert)
            alerts += 1
            for key in rule:
                if key not in ("alert", "expr", "for", "keep_firing_for", "labels",
                               "annotations"):
                    report.error(f"{where}.{key}", "unknown rule key")
            _check_expr(where, rule.get("expr"), report, known)
            for key in ("for", "keep_firing_for"):
                if key in rule and not _prom_duration(rule[key]):
                    report.error(f"{where}.{key}", f"{rule[key]!r} is not a duration like 5m")
            labels: dict[str, Any] = rule.get("labels") or {}
            if not isinstance(labels, dict):
                report.error(f"{where}.labels", "must be a mapping")
                labels = {}
            severity = labels.get("severity")
            if severity not in SEVERITIES:
                report.error(f"{where}.labels.severity",
                             f"{severity!r}: set one of {', '.join(SEVERITIES)}")
            else:
                by_severity[severity] = by_severity.get(severity, 0) + 1
            ann: dict[str, Any] = rule.get("annotations") or {}
            if not isinstance(ann, dict):
                report.error(f"{where}.annotations", "must be a mapping")
                ann = {}
            if not isinstance(ann.get("summary"), str) or not ann["summary"].strip():
                report.error(f"{where}.annotations.summary",
                             "missing: say what is wrong in one line")
            if not ann.get("description"):
                report.note(f"{where}.annotations", "no description telling what to look at")
            for key, text in {**labels, **ann}.items():
                if isinstance(text, str) and text.count("{{") != text.count("}}"):
                    report.error(f"{where}.{key}", "unbalanced '{{' / '}}' in template")
    sev = ", ".join(f"{n} {s}" for s, n in sorted(by_severity.items()))
    extra = f", {records} recording rules" if records else ""
    report.summary.append(f"{label}: {len(groups)} groups, {alerts} alerts ({sev}){extra}")


def _check_expr(where: str, expr: Any, report: Report, known: set[str]) -> None:
    if not isinstance(expr, str) and not isinstance(expr, int | float):
        report.error(f"{where}.expr", "missing: a PromQL expression")
        return
    text = str(expr)
    if not text.strip():
        report.error(f"{where}.expr", "is empty")
        return
    problem = _balanced(text)
    if problem:
        report.error(f"{where}.expr", problem)
    for name in sorted(expr_metric_names(text)):
        if _unknown_metric(name, known):
            report.error(f"{where}.expr", f"metric {name} is not defined in retail_sync/"
                                          "metrics.py (renamed or misspelled?)")


def _prom_duration(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and bool(PROM_DURATION_RE.match(value))


def check_prometheus(config: Path, report: Report, label: str,
                     binds: dict[str, Path] | None, compose: ComposeChecker | None) -> list[Path]:
    """Check a prometheus.yml; return the host paths of its rule files."""
    try:
        doc = load_yaml(config)
    except CheckError as exc:
        report.errors.append(str(exc))
        return []
    if not isinstance(doc, dict):
        report.error(label, "must be a mapping")
        return []
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        value = (doc.get("global") or {}).get(key)
        if value is not None and not _prom_duration(value):
            report.error(f"{label}: global.{key}", f"{value!r} is not a duration")
    rule_paths: list[Path] = []
    container_dir = PurePosixPath("/etc/prometheus")
    if binds:
        container_dir = next((PurePosixPath(t).parent for t, h in binds.items() if h == config),
                             container_dir)
    for rf in doc.get("rule_files") or []:
        if not isinstance(rf, str):
            report.error(f"{label}: rule_files", f"{rf!r} must be a path")
            continue
        host: Path | None
        if binds is not None:
            in_container = container_dir / rf
            host = _host_path(str(in_container), binds)
            if host is None:
                report.error(f"{label}: rule_files",
                             f"{rf} resolves to {in_container} in the container, which the "
                             "prometheus service does not mount")
                continue
        else:
            host = config.parent / rf
        if any(c in rf for c in "*?["):
            rule_paths.extend(sorted(host.parent.glob(host.name)))
        elif not host.is_file():
            report.error(f"{label}: rule_files", f"{rf} ({host}) does not exist")
        else:
            rule_paths.append(host)
    jobs = doc.get("scrape_configs") or []
    if not isinstance(jobs, list) or not jobs:
        report.error(f"{label}: scrape_configs", "needs at least one scrape job")
        jobs = []
    job_names: set[str] = set()
    targets: set[str] = set()
    for i, job in enumerate(jobs):
        where = f"{label}: scrape_configs[{i}]"
        if not isinstance(job, dict) or not isinstance(job.get("job_name"), str):
            report.error(where, "needs a 'job_name'")
            continue
        if job["job_name"] in job_names:
            report.error(where, f"job_name {job['job_name']!r} is used twice")
        job_names.add(job["job_name"])
        auth = job.get("authorization") if isinstance(job.get("authorization"), dict) else {}
        has_token = bool(auth.get("credentials_file") or auth.get("credentials")
                         or job.get("bearer_token_file") or job.get("bearer_token"))
        for sc in job.get("static_configs") or []:
            for target in (sc or {}).get("targets") or []:
                if not isinstance(target, str) or not re.match(r"^[^\s:/]+:\d+$", target):
                    report.error(f"{where}.static_configs", f"{target!r} is not host:port")
                    continue
                targets.add(target)
                target_host = target.split(":")[0]
                if compose is not None and target_host in compose.worker_services() \
                        and not has_token:
                    report.error(f"{where}", f"scrapes {target} without a token: a worker's "
                                 "/metrics needs one with the metrics scope (authorization: "
                                 "{type: Bearer, credentials_file: /run/secrets/...})")
                if compose is not None and "." not in target_host \
                        and target_host != "localhost" and target_host not in compose.services:
                    report.error(f"{where}.static_configs",
                                 f"target {target}: {target_host} is not a compose service")
    if compose is not None:
        for worker in compose.worker_services():
            port = compose.service_env(worker).get("RETAIL_SYNC_WEB_PORT", "6066")
            if f"{worker}:{port}" not in targets:
                report.error(f"{label}: scrape_configs",
                             f"worker {worker} is not scraped (expected target {worker}:{port})")
    report.summary.append(f"{label}: {len(job_names)} scrape jobs, {len(targets)} targets, "
                          f"rule files: {', '.join(p.name for p in rule_paths) or 'none'}")
    return rule_paths


# --- external tools ---------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,  # noqa: S603
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or a v2 `docker-compose` binary, if one works here."""
    if shutil.which("docker"):
        rc, _ = _run(["docker", "compose", "version"], Path.cwd())
        if rc == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        rc, out = _run(["docker-compose", "version", "--short"], Path.cwd())
        if rc == 0 and re.match(r"^v?2\.", out):  # v1 does not know the current spec
            return ["docker-compose"]
    return None


def run_external(compose_path: Path, prom: list[tuple[Path, str]], rules: list[tuple[Path, str]],
                 profiles: set[str], report: Report) -> None:
    root = compose_path.resolve().parent
    cli = compose_cli()
    if cli is None:
        report.summary.append("docker compose: not available, skipped")
    else:
        cmd = [*cli, "-f", str(compose_path.resolve())]
        for p in sorted(profiles):
            cmd += ["--profile", p]
        rc, out = _run([*cmd, "config", "-q"], root)
        if rc == 0:
            report.summary.append(f"{' '.join(cli)} config -q: OK")
        else:
            report.error(f"{' '.join(cli)} config", out or f"exit {rc}")
    promtool = shutil.which("promtool")
    if promtool is None:
        report.summary.append("promtool: not installed, skipped")
        return
    for path, label in prom:
        rc, out = _run([promtool, "check", "config", "--syntax-only", str(path)], root)
        if rc != 0:
            report.error(f"promtool check config {label}", out)
    for path, label in rules:
        rc, out = _run([promtool, "check", "rules", str(path)], root)
        if rc != 0:
            report.error(f"promtool check rules {label}", out)
    report.summary.append(f"promtool: {len(prom)} config, {len(rules)} rule files checked")


# --- main -------------------------------------------------------------------------------------


def check(compose_path: Path, external: bool = True, env: dict[str, str] | None = None) -> Report:
    report = Report()
    if not compose_path.is_file():
        report.errors.append(f"{compose_path}: no such file")
        return report
    checker = ComposeChecker(compose_path, report, env)
    try:
        checker.run()
    except CheckError as exc:
        report.errors.append(str(exc))
        return report
    root = checker.root
    facts = checker.facts
    always = [n for n, f in facts.items() if not f.profiles]
    by_profile: dict[str, list[str]] = {}
    for n, f in facts.items():
        for p in f.profiles:
            by_profile.setdefault(p, []).append(n)
    parts = [", ".join(always)] + [f"profile {p}: {', '.join(ns)}" for p, ns in
                                   sorted(by_profile.items())]
    volumes = {s for f in facts.values() for k, s, _ in f.mounts if k == "volume" and s}
    report.summary.insert(0, f"{checker.name}: {len(facts)} services ({'; '.join(parts)}), "
                             f"{len(volumes)} named volumes")

    prom_checked: list[tuple[Path, str]] = []
    rules_checked: list[tuple[Path, str]] = []
    prom = checker.prometheus_files()
    if not prom:  # no prometheus service: still check the repository's deploy/ files
        fallback = root / "deploy" / "prometheus.yml"
        if fallback.is_file():
            prom = [("", fallback, {})]
    for _service, config, binds in prom:
        label = checker.rel(config)
        rule_files = check_prometheus(config, report, label, binds or None, checker)
        prom_checked.append((config, label))
        for rf in rule_files:
            rlabel = checker.rel(rf)
            check_alert_rules(rf, report, rlabel)
            rules_checked.append((rf, rlabel))
    am_checked: list[tuple[Path, str]] = []
    for _service, config in checker.alertmanager_files():
        label = checker.rel(config)
        check_alertmanager(config, report, label)
        am_checked.append((config, label))
    if external and report.ok:
        run_external(compose_path, prom_checked, rules_checked, set(by_profile), report)
        amtool = shutil.which("amtool")
        for config, label in am_checked if amtool else []:
            rc, out = _run([amtool, "check-config", str(config)], root)
            if rc != 0:
                report.error(f"amtool check-config {label}", out)
        if am_checked:
            report.summary.append(f"amtool: {len(am_checked)} config checked" if amtool
                                  else "amtool: not installed, skipped")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m retail_sync.compose_check",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("compose_file", nargs="?", default="docker-compose.yml", type=Path)
    p.add_argument("--no-external", action="store_true",
                   help="do not call docker compose / promtool even when installed")
    p.add_argument("--verbose", "-v", action="store_true", help="also print notes")
    args = p.parse_args(argv)
    report = check(args.compose_file, external=not args.no_external)
    for line in report.summary:
        print(line)
    if args.verbose or not report.ok:
        for line in report.notes:
            print(f"note: {line}")
    if report.errors:
        print(f"\n{len(report.errors)} problem(s):", file=sys.stderr)
        for line in report.errors:
            print(f"  ERROR {line}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
