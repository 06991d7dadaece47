"""retail-sync's own rules for docker-compose.yml, on top of the compose-spec schema.

The schema says each service is well-formed; these say the services agree with each other:

* every ``RETAIL_SYNC_*`` variable a service sets is a setting (the settings ignore unknown
  names, so a typo would silently leave the default in force);
* services that talk to each other share their credentials: a worker and the ERP simulator its
  ``RETAIL_SYNC_ERP_BASE_URL`` names (else the ERP answers 401), the Shopify simulator and the
  worker its ``--webhook-url`` names (else the webhooks are refused as badly signed). A setting a
  service does not set counts at its default (``retail_sync/settings.py``);
* a URL naming a compose host names a service that exists, listens on that port and runs
  whenever the caller runs (``profiles``); a worker's ``RETAIL_SYNC_CANONICAL_URL`` names itself;
* a ``/webhooks/`` URL uses the worker's ingress port; no worker publishes its admin listener
  (``RETAIL_SYNC_WEB_PORT``) beyond 127.0.0.1;
* published host ports are well-formed and not published twice; ``depends_on`` targets, secrets,
  named volumes, networks and configs are declared; files and directories the file mounts, builds
  or reads exist; a ``service_healthy`` dependency has a healthcheck (its own or the
  Dockerfile's); Prometheus loads only mounted rule files and scrapes and alerts only compose
  services, the workers with a token.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from dotenv import dotenv_values
from pydantic import SecretStr

from retail_sync.settings import ENV_PREFIX, Settings
from retail_sync.startup_checks import unknown_variables

if TYPE_CHECKING:
    from retail_sync.compose_check import Report

#: (caller's role, callee's role) -> settings whose values both must hold
SHARED_SETTINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("worker", "sim erp"): ("RETAIL_SYNC_ERP_API_KEY", "RETAIL_SYNC_ERP_API_SECRET"),
    ("sim shopify", "worker"): ("RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET",),
    ("sim shopify", "ingress"): ("RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET",),
}
#: the roles with a webhook (ingress) listener and a token-guarded admin listener
LISTENERS = ("worker", "ingress")
URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^/@\s]*@)?([A-Za-z0-9_.-]*)(?::(\d+))?[^\s'\",]*")
PORT_RE = re.compile(r"^(?:(?P<ip>\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]*\]):)?(?:(?P<host>\d+(?:-\d+)?)?:)?"
                     r"(?P<target>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp|sctp))?$")


def _env(node: Any) -> dict[str, str]:
    if isinstance(node, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in node)
    return {k: "" if v is None else str(v) for k, v in (node or {}).items()}


def _list(node: Any) -> list[Any]:
    return [] if node is None else [node] if isinstance(node, str | dict) else list(node)


def _command(node: Any) -> list[str]:
    return shlex.split(node) if isinstance(node, str) else [str(a) for a in node or []]


def setting_default(name: str) -> str | None:
    info = Settings.model_fields.get(name[len(ENV_PREFIX):].lower())
    if info is None or info.default is None:
        return None
    value = info.default
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    raw: dict[str, Any]
    env: dict[str, str]

    @property
    def profiles(self) -> set[str]:
        return set(self.spec.get("profiles") or [])

    @property
    def command(self) -> list[str]:
        return _command(self.spec.get("command"))

    @property
    def role(self) -> str | None:
        """'worker', 'sim erp', ... for a service running the retail-sync image, else None."""
        image = str(self.spec.get("image", ""))
        if "build" not in self.spec and not image.startswith("retail-sync"):
            return None
        cmd = self.command or ["retail-sync", "worker"]  # the Dockerfile's CMD
        return " ".join(cmd[1:3] if cmd[1:2] == ["sim"] else cmd[1:2])

    def setting(self, name: str) -> tuple[str | None, bool]:
        """(value, whether the service sets it): a setting it does not set is at its default."""
        return (self.env[name], True) if name in self.env else (setting_default(name), False)

    def runs_whenever(self, caller: Service) -> bool:
        return not self.profiles or bool(caller.profiles) and caller.profiles <= self.profiles

    def listens_on(self) -> set[int]:
        ports = {int(m["target"]) for m in map(PORT_RE.match, map(str, _list(self.spec.get("ports"))))
                 if m and m["target"].isdigit()}
        ports |= {int(p["target"]) for p in _list(self.spec.get("ports")) if isinstance(p, dict)}
        ports |= {int(str(p).split("/")[0]) for p in _list(self.spec.get("expose"))
                  if str(p).split("/")[0].isdigit()}
        ports |= {int(v) for k, v in self.env.items() if k.endswith("_PORT") and v.isdigit()}
        cmd = self.command
        ports |= {int(b) for a, b in zip(cmd, cmd[1:], strict=False) if a == "--port" and b.isdigit()}
        return ports


class Project:
    def __init__(self, root: Path, raw: dict[str, Any], doc: dict[str, Any]) -> None:
        self.root, self.doc = root, doc
        self.services: dict[str, Service] = {}
        for name, spec in (doc.get("services") or {}).items():
            env: dict[str, str] = {}
            for item in _list(spec.get("env_file")):
                path = root / (item["path"] if isinstance(item, dict) else item)
                env.update({k: v or "" for k, v in dotenv_values(path).items()} if path.is_file() else {})
            env.update(_env(spec.get("environment")))
            self.services[name] = Service(name, spec, raw["services"][name], env)
        self.hosts = {host: s for s in self.services.values()
                      for host in (s.name, s.spec.get("hostname"), s.spec.get("container_name")) if host}

    def describe(self) -> str:
        always = [n for n, s in self.services.items() if not s.profiles]
        profiles = sorted({p for s in self.services.values() for p in s.profiles})
        parts = [", ".join(always)] + [
            f"profile {p}: {', '.join(n for n, s in self.services.items() if p in s.profiles)}"
            for p in profiles]
        workers = [n for n, s in self.services.items() if s.role == "worker"]
        doors = [n for n, s in self.services.items() if s.role == "ingress"]
        return (f"{self.doc.get('name', self.root.name)}: {len(self.services)} services "
                f"({'; '.join(parts)}), {len(self.doc.get('volumes') or {})} named volumes; "
                f"workers: {', '.join(workers)}"
                + (f"; ingress processes: {', '.join(doors)}" if doors else ""))

    def dockerfile(self, service: Service) -> Path | None:
        build = service.spec.get("build")
        if build is None:
            return None
        if isinstance(build, str):
            return self.root / build / "Dockerfile"
        return Path(self.root, str(build.get("context", ".")), str(build.get("dockerfile", "Dockerfile")))

    def has_healthcheck(self, service: Service) -> bool:
        """Its own healthcheck, or the HEALTHCHECK of the Dockerfile it is built from."""
        own = service.spec.get("healthcheck") or {}
        if own:
            return bool(not own.get("disable") and (own.get("test") or ["?"])[0] != "NONE")
        dockerfile = self.dockerfile(service)
        return bool(dockerfile and dockerfile.is_file() and re.search(
            r"^HEALTHCHECK\s+(?!NONE\b)", dockerfile.read_text(), re.M))

    def binds(self, service: Service) -> Iterator[tuple[int, str, str]]:
        """(index, host source, container target) of each bind mount."""
        for i, vol in enumerate(_list(service.spec.get("volumes"))):
            if isinstance(vol, dict):
                if vol.get("type") == "bind":
                    yield i, vol["source"], vol.get("target", "")
            elif str(vol).startswith((".", "/", "~")):
                source, _, rest = str(vol).partition(":")
                yield i, source, rest.split(":")[0]

    def prometheus_files(self, service: Service) -> tuple[list[tuple[Path, str]], list[Path]]:
        """([(config, its path in the container)], the rule files it loads) of a Prometheus."""
        if not str(service.spec.get("image", "")).startswith("prom/prometheus"):
            return [], []
        config_in = next((a.split("=", 1)[1] for a in service.command
                          if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
        mounts = {target: (self.root / source).resolve() for _, source, target in self.binds(service)}
        config = mounts.get(config_in)
        if config is None or not config.is_file():
            return [], []
        try:
            doc = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError:
            doc = {}
        loads = [str(PurePosixPath(config_in).parent / f) for f in doc.get("rule_files") or []]
        return [(config, config_in)], [mounts[p] for p in loads if p in mounts and mounts[p].is_file()]


# --- the rules --------------------------------------------------------------------------------


def check(project: Project, report: Report, label: str) -> None:
    for rule in (known_settings, shared_settings, urls, ports, dependencies, declarations, files,
                 prometheus_refs):
        for where, message in rule(project):
            report.error(label, f"{where}: {message}")
    for name, service in project.services.items():
        for url_of, target in _urls(service):
            host = URL_RE.match(target)
            callee = project.hosts.get(host[1]) if host else None
            raw = _raw_value(service, url_of)
            if callee and not callee.runs_whenever(service) and "${" in raw:
                report.note(label, f"services.{name}.{url_of}: defaults to {callee.name}, which "
                                   f"only runs with profiles {sorted(callee.profiles)}: set it otherwise")


def known_settings(project: Project) -> Iterator[tuple[str, str]]:
    for name, service in project.services.items():
        for var, close in unknown_variables(service.env):
            hint = f" (did you mean {close}?)" if close else ""
            yield f"services.{name}.environment.{var}", f"not a retail-sync setting{hint}"


def shared_settings(project: Project) -> Iterator[tuple[str, str]]:
    for name, caller in project.services.items():
        for url_of, url in _urls(caller):
            host = URL_RE.match(url)
            callee = project.hosts.get(host[1]) if host else None
            if callee is None:
                continue
            for setting in SHARED_SETTINGS.get((caller.role or "", callee.role or ""), ()):
                (mine, i_set), (theirs, they_set) = caller.setting(setting), callee.setting(setting)
                if mine != theirs:
                    how = {True: "sets it", False: "leaves it at the default"}
                    yield (f"services.{name}.environment.{setting}",
                           f"differs from {callee.name}'s ({name} {how[i_set]}, {callee.name} "
                           f"{how[they_set]}), and {url_of} sends {name} to {callee.name}: "
                           f"{callee.name} will refuse it (401); give both the same value")


def _urls(service: Service) -> Iterator[tuple[str, str]]:
    """(where, value) of every URL the service is given (environment and command)."""
    for key, value in service.env.items():
        for m in URL_RE.finditer(value):
            yield f"environment.{key}", m.group(0)
    for i, arg in enumerate(service.command):
        for m in URL_RE.finditer(arg):
            yield f"command[{i}]", m.group(0)


def _raw_value(service: Service, where: str) -> str:
    if where.startswith("command["):
        return " ".join(_command(service.raw.get("command")))
    return _env(service.raw.get("environment")).get(where.split(".", 1)[1], "")


def _is_compose_host(host: str) -> bool:
    return bool(host) and "." not in host and host != "localhost"


def urls(project: Project) -> Iterator[tuple[str, str]]:
    for name, service in project.services.items():
        for where, url in _urls(service):
            m = URL_RE.match(url)
            host, port = (m[1], m[2]) if m else ("", None)
            if not _is_compose_host(host):
                continue
            callee = project.hosts.get(host)
            if where == "environment.RETAIL_SYNC_CANONICAL_URL" and host != name:
                yield f"services.{name}.{where}", f"{url!r} should name this service ({name})"
            elif callee is None:
                yield f"services.{name}.{where}", f"{url!r}: {host} is not a service"
            elif not callee.runs_whenever(service) and "${" not in _raw_value(service, where):
                yield (f"services.{name}.{where}", f"{url!r}: {host} only runs with profiles "
                       f"{sorted(callee.profiles)}, {name} runs without them")
            elif (callee.role in LISTENERS and "/webhooks/" in url
                  and port != (ingress := callee.setting("RETAIL_SYNC_INGRESS_PORT")[0])):
                yield f"services.{name}.{where}", f"{url!r} is not {host}'s ingress listener (port {ingress})"
            elif port and (listening := callee.listens_on()) and int(port) not in listening:
                yield (f"services.{name}.{where}",
                       f"{url!r}: {host} listens on {', '.join(map(str, sorted(listening)))}, not {port}")


def ports(project: Project) -> Iterator[tuple[str, str]]:
    seen: dict[tuple[int, str], tuple[str, str]] = {}
    for name, service in project.services.items():
        for i, port in enumerate(_list(service.spec.get("ports"))):
            where = f"services.{name}.ports[{i}]"
            if isinstance(port, dict):
                ip, host, proto = port.get("host_ip", ""), str(port.get("published", "")), port.get(
                    "protocol", "tcp")
                target = str(port["target"])
            elif m := PORT_RE.match(str(port)):
                ip, host, target, proto = m["ip"] or "", m["host"] or "", m["target"], m["proto"] or "tcp"
            else:
                yield where, f"{port!r} is not [IP:][HOST:]CONTAINER[/PROTOCOL]"
                continue
            if service.role in LISTENERS and target == service.setting("RETAIL_SYNC_WEB_PORT")[0] \
                    and ip not in ("127.0.0.1", "[::1]"):
                yield where, f"publishes the admin listener (container port {target}) on every interface"
            first, _, last = host.partition("-")
            for p in range(int(first), int(last or first) + 1) if first.isdigit() else ():
                if not 0 < p < 65536:
                    yield where, f"host port {p} is out of range"
                elif (p, proto) in seen and (not ip or not seen[p, proto][1] or ip == seen[p, proto][1]):
                    yield where, f"host port {p}/{proto} is also published by {seen[p, proto][0]}"
                else:
                    seen[p, proto] = (name, ip)


def dependencies(project: Project) -> Iterator[tuple[str, str]]:
    for name, service in project.services.items():
        if "image" not in service.spec and "build" not in service.spec:
            yield f"services.{name}", "has neither 'image' nor 'build'"
        depends = service.spec.get("depends_on") or {}
        for target in depends:
            callee = project.services.get(target)
            condition = depends[target].get("condition") if isinstance(depends, dict) else None
            if callee is None:
                yield f"services.{name}.depends_on", f"{target!r} is not a service"
            elif not callee.runs_whenever(service):
                yield (f"services.{name}.depends_on", f"{target} only runs with profiles "
                       f"{sorted(callee.profiles)}, {name} runs without them")
            elif condition == "service_healthy" and not project.has_healthcheck(callee):
                yield (f"services.{name}.depends_on.{target}",
                       f"condition service_healthy but {target} has no healthcheck")


def declarations(project: Project) -> Iterator[tuple[str, str]]:
    """Secrets, configs, named volumes and networks a service uses are declared at the top."""
    doc = project.doc
    for name, service in project.services.items():
        for kind in ("secrets", "configs"):
            for ref in _list(service.spec.get(kind)):
                source = ref["source"] if isinstance(ref, dict) else ref
                if source not in (doc.get(kind) or {}):
                    yield f"services.{name}.{kind}", f"{source!r} is not declared in top-level {kind}"
        for i, vol in enumerate(_list(service.spec.get("volumes"))):
            source = vol.get("source") if isinstance(vol, dict) and vol.get("type") == "volume" else (
                str(vol).split(":")[0] if isinstance(vol, str) and ":" in vol else None)
            if source and not source.startswith((".", "/", "~")) and source not in (doc.get("volumes") or {}):
                yield f"services.{name}.volumes[{i}]", f"named volume {source!r} is not declared"
        nets = service.spec.get("networks") or {}
        for net in nets if isinstance(nets, dict | list) else ():
            if net != "default" and net not in (doc.get("networks") or {}):
                yield f"services.{name}.networks", f"network {net!r} is not declared"


def files(project: Project) -> Iterator[tuple[str, str]]:
    """What the file mounts, builds from or reads exists in the repository."""
    root = project.root
    for name, service in project.services.items():
        for i, source, _ in project.binds(service):
            if not (root / source).exists():
                yield f"services.{name}.volumes[{i}]", f"mounts {source}, which does not exist"
        dockerfile = project.dockerfile(service)
        if dockerfile is not None and not dockerfile.is_file():
            yield f"services.{name}.build", f"{dockerfile.relative_to(root)} does not exist"
        for item in _list(service.spec.get("env_file")):
            path, required = (item["path"], item.get("required", True)) if isinstance(item, dict) \
                else (item, True)
            if required and not (root / path).is_file():
                yield f"services.{name}.env_file", f"{path} does not exist"


def prometheus_refs(project: Project) -> Iterator[tuple[str, str]]:
    """Prometheus scrapes and alerts compose services; its rule files are mounted."""
    for service in project.services.values():
        configs, _ = project.prometheus_files(service)
        mounted = {target for _, _, target in project.binds(service)}
        for config, config_in in configs:
            where = str(config.relative_to(project.root))
            try:
                doc = yaml.safe_load(config.read_text()) or {}
            except yaml.YAMLError as exc:
                yield where, f"invalid YAML: {exc}"
                continue
            for rule_file in doc.get("rule_files") or []:
                path = str(PurePosixPath(config_in).parent / rule_file)
                if path not in mounted:
                    yield (f"{where}: rule_files", f"{rule_file} resolves to {path} in the container, "
                           f"which the {service.name} service does not mount")
            jobs = [*(doc.get("scrape_configs") or []),
                    *((doc.get("alerting") or {}).get("alertmanagers") or [])]
            for job in jobs:
                for sc in job.get("static_configs") or []:
                    for target in sc.get("targets") or []:
                        host = str(target).rsplit(":", 1)[0]
                        if _is_compose_host(host) and host not in project.hosts:
                            yield f"{where}: target {target}", f"{host} is not a compose service"
                        elif host in project.hosts and project.hosts[host].role in LISTENERS \
                                and not _has_token(job):
                            yield (f"{where}: job {job.get('job_name')}", f"scrapes {target} without "
                                   "a token (/metrics needs one with the metrics scope)")


def _has_token(job: dict[str, Any]) -> bool:
    auth = job.get("authorization") or {}
    return bool(auth.get("credentials") or auth.get("credentials_file")
                or job.get("bearer_token") or job.get("bearer_token_file"))
