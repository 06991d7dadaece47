"""`retail-sync` command line: worker, ingress, demo, bench, simulators, settings.

Long module: the command line's one parser and the thin command functions it dispatches to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from retail_sync.broker import BrokerError
from retail_sync.channels import PluginError
from retail_sync.settings import ENV_PREFIX, Settings
from retail_sync.streams.models import ExceptionKind, utcnow


def load_settings() -> Settings:
    """Settings from the environment, or one clear message per bad variable and exit 2 (an
    unknown RETAIL_SYNC_* variable, e.g. a typo, is a bad variable too)."""
    from retail_sync.startup_checks import unknown_variables, unknown_variables_message

    unknown = unknown_variables()
    if unknown:
        print(f"retail-sync: {unknown_variables_message(unknown)}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return Settings()
    except ValidationError as exc:
        print("retail-sync: invalid settings:", file=sys.stderr)
        for err in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            print(f"  {name or ENV_PREFIX + '*'}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_worker(args: argparse.Namespace) -> int:
    from retail_sync import event_loop, heap, log_throttle, tansu_compat
    from retail_sync.app import create_app
    from retail_sync.broker import broker_for

    settings = load_settings()
    event_loop.use_event_loop(settings.event_loop)
    embedded = not settings.broker_url
    if embedded and not (args.embedded_broker or settings.embedded_broker):
        print("retail-sync: no broker: set RETAIL_SYNC_BROKER_URL=kafka://host:9092, or pass "
              "--embedded-broker (or RETAIL_SYNC_EMBEDDED_BROKER=true) for an in-memory broker "
              "whose orders are lost when the worker stops", file=sys.stderr)
        return 2
    _warn_unsafe_start(settings, embedded)
    if not _erp_custom_fields_ok(settings):
        return 2
    if settings.tansu_compat or (settings.tansu_compat is None and embedded):
        tansu_compat.install()
    with broker_for(settings.broker_url) as url:
        try:
            ctx = create_app(settings, url)
        except ValueError as exc:  # e.g. an unreadable or malformed admin tokens file
            print(f"retail-sync: {exc}", file=sys.stderr)
            return 2
        heap.tune_gc(settings.gc_thresholds)  # issue 16: the collector's share of the CPU
        worker = log_throttle.worker(ctx.app, settings.log_repeat_window_s,  # §5f.2
                                     loglevel=settings.log_level, quiet=not args.verbose)
        worker.execute_from_commandline()
    return 0


def cmd_ingress(args: argparse.Namespace) -> int:
    from retail_sync import ingress_process

    return ingress_process.main(load_settings())


def _erp_custom_fields_ok(settings: Settings) -> bool:
    """The configured ERP plugin's start-up check (ERPNext: its Custom Fields,
    connectors/erpnext/fields_check.py): False when it refuses the start (ERPNext: one is missing
    or not unique and RETAIL_SYNC_ERP_CUSTOM_FIELDS_CHECK is 'refuse')."""
    import logging

    from retail_sync.erps import erp_plugin, settings_for

    plugin = erp_plugin(settings)
    if plugin.startup_check is None:
        return True
    lines, refuse = plugin.startup_check(settings_for(plugin, settings))
    log = logging.getLogger("retail_sync.cli")
    for level, text in lines:
        print(f"retail-sync: {level}: {text}", file=sys.stderr, flush=True)
        log.log(getattr(logging, level), text)
    return not refuse


def _warn_unsafe_start(settings: Settings, embedded: bool) -> None:
    """Say loudly, on stderr (the worker's log) and through logging, what is unsafe here."""
    import logging

    from retail_sync.startup_checks import demo_secrets

    log = logging.getLogger("retail_sync.cli")
    warnings = []
    if embedded:
        warnings.append("EMBEDDED BROKER: no RETAIL_SYNC_BROKER_URL, so this worker starts an "
                        "in-memory broker; every order it accepts is LOST when it stops. For "
                        "demos and tests only.")
    if not settings.admin_tokens and settings.admin_tokens_file is None:
        warnings.append("NO ADMIN TOKENS: RETAIL_SYNC_ADMIN_TOKENS and _FILE are unset, so every "
                        "admin view but /health answers 401 (`retail-sync admin-token create "
                        "NAME --scopes viewer,operator` makes one).")
    secrets = demo_secrets(settings)
    if secrets:
        warnings.append(f"DEMO SECRETS in use: {', '.join(secrets)} still have their demo "
                        "default (or 'change-me'); set real ones before taking real traffic.")
    for text in warnings:
        print(f"retail-sync: WARNING: {text}", file=sys.stderr, flush=True)
        log.warning(text)


def cmd_settings(args: argparse.Namespace) -> int:
    print(json.dumps(load_settings().masked(), indent=2, default=str))
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from pathlib import Path

    from retail_sync.streams import schemas

    root = Path(args.dir) if args.dir else schemas.DEFAULT_DIR
    if args.action == "check":
        problems = schemas.check(root)
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in {root}" if problems else f"{root}: up to date")
        return 1 if problems else 0
    try:
        lines = schemas.export(root)
    except ValueError as exc:
        print(f"retail-sync schemas: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from retail_sync.demo import run_demo

    return run_demo(args)


def cmd_exceptions(args: argparse.Namespace) -> int:
    import asyncio

    from retail_sync import exceptions_view as ev

    settings = load_settings()
    if not settings.broker_url:
        print("retail-sync: set RETAIL_SYNC_BROKER_URL=kafka://host:9092 (the workers' broker)",
              file=sys.stderr)
        return 2
    bootstrap = ev.bootstrap_of(settings.broker_url)
    topic = f"{settings.app_id}.sync-exceptions"
    if args.action == "list":
        records, notes = asyncio.run(ev.load_exceptions(bootstrap, topic))
        now = utcnow()
        matched = ev.filter_records(records, args.kind, args.channel, args.older_than_s,
                                    args.newer_than_s, now)
        rows = ev.as_view(matched, now, args.limit)
        if args.json:
            print(json.dumps({"summary": ev.summarise(records, now), "notes": notes,
                              "exceptions": rows}, indent=2))
        else:
            for row in rows:
                print(f"{row['exception_id']}  {row['kind']:<14} {row['channel'] or '-':<10} "
                      f"{row['order_key'] or row['source_key'] or '-':<28} "
                      f"{row['age_s']:>10.0f}s  {row['reason'][:80]}")
            print(f"{len(rows)} shown of {len(matched)} matching, {len(records)} on {topic}"
                  + (f"; {len(notes)} undecodable skipped" if notes else ""))
        return 0
    if not (args.ids or args.kind):
        print("retail-sync: exceptions replay needs IDS or --kind", file=sys.stderr)
        return 2
    results = asyncio.run(ev.replay_from_topic(bootstrap, settings.app_id, ids=args.ids or None,
                                               kind=args.kind, channel=args.channel,
                                               requested_by="cli"))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['exception_id']}  {'replayed' if r['replayed'] else 'skipped ':<8} "
                  f"{r['target'] or '-'}  {r['reason']}")
    return 0 if all(r["replayed"] for r in results) else 1


def cmd_chaos(args: argparse.Namespace) -> int:
    from retail_sync.chaos import run_chaos

    return run_chaos(args.scenarios)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import timedelta

    from retail_sync.reconcile import reconcile

    settings = load_settings()
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] or None
    report = asyncio.run(reconcile(settings, channels, lookback=timedelta(days=args.days)))
    print(json.dumps(report.as_json(), indent=2) if args.json else report.table(limit=args.limit))
    return 0 if report.ok else 1


def cmd_admin_token(args: argparse.Namespace) -> int:
    from retail_sync import admin_tokens

    if args.action == "create":
        return admin_tokens.cli_create(args.name, args.scopes, args.file, args.rotate,
                                       sys.stdout, sys.stderr)
    if not args.file:
        print("retail-sync: admin-token revoke needs --file (the tokens file to edit); for "
              "RETAIL_SYNC_ADMIN_TOKENS remove the entry and restart", file=sys.stderr)
        return 2
    return admin_tokens.cli_revoke(args.name, args.file, sys.stdout, sys.stderr)


def cmd_bench(args: argparse.Namespace) -> int:
    from retail_sync.bench import run_bench

    return run_bench(args)


def cmd_sim(args: argparse.Namespace) -> int:
    from retail_sync.simctl import run_simulator

    return run_simulator(args)


def _checked(read: Callable[[dict[str, str]], object]) -> Callable[[str], object]:
    """An argparse type from a retail_sync.query_params reader (the views' rules)."""
    from retail_sync import query_params as qp

    def convert(text: str) -> object:
        try:
            return read({"value": text})
        except qp.BadParam as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value must", "must")) from None
    return convert


def _days(text: str) -> object:
    from retail_sync import query_params as qp
    from retail_sync.web import MAX_RECONCILE_DAYS

    return _checked(lambda q: qp.number(q, "value", None, minimum=0, above_minimum=True,
                                        maximum=MAX_RECONCILE_DAYS, unit="days"))(text)


def _seconds(text: str) -> object:
    from retail_sync import query_params as qp
    from retail_sync.web import MAX_AGE_S

    return _checked(lambda q: qp.number(q, "value", None, minimum=0, maximum=MAX_AGE_S,
                                        unit="seconds"))(text)


def _limit(text: str) -> object:
    from retail_sync import query_params as qp
    from retail_sync.web import MAX_EXCEPTIONS_LIMIT

    return _checked(lambda q: qp.integer(q, "value", 0, minimum=0,
                                         maximum=MAX_EXCEPTIONS_LIMIT))(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retail-sync", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run one Faust worker on RETAIL_SYNC_BROKER_URL")
    w.add_argument("--verbose", action="store_true", help="show Faust's startup banner")
    w.add_argument("--embedded-broker", action="store_true",
                   help="without RETAIL_SYNC_BROKER_URL, start an in-memory embedded broker "
                        "(orders are lost when the worker stops; demos and tests only; same as "
                        "RETAIL_SYNC_EMBEDDED_BROKER=true)")
    w.set_defaults(func=cmd_worker)

    sub.add_parser("ingress", help="a webhook front door: verify, dedupe, write orders-raw "
                   "(no agents; docs/ARCHITECTURE.md 10a)").set_defaults(func=cmd_ingress)

    d = sub.add_parser("demo", help="broker + simulators + a worker, with live progress")
    d.add_argument("--duration", type=float, default=None,
                   help="seconds to send orders (default: until Ctrl-C)")
    d.add_argument("--rate", type=float, default=10.0, help="orders per second, all channels")
    d.add_argument("--mix", default="shopify=2,amazon=1,walmart=1,regional=1",
                   help="channels and their shares of --rate "
                        "(default shopify=2,amazon=1,walmart=1,regional=1)")
    d.add_argument("--duplicate-rate", type=float, default=0.05)
    d.add_argument("--malformed-rate", type=float, default=0.01)
    d.add_argument("--unmappable-rate", type=float, default=0.01)
    d.add_argument("--erp-latency-ms", type=float, default=20.0)
    d.add_argument("--erp-error-rate", type=float, default=0.02)
    d.add_argument("--drain-timeout", type=float, default=60.0,
                   help="seconds to wait for in-flight orders after sending stops")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="measure the webhook->ERP pipeline and its anchors")
    b.add_argument("--orders", "--messages", dest="messages", type=int, default=20000,
                   help="orders for the throughput runs (pipeline and anchors)")
    b.add_argument("--repeat", type=int, default=1,
                   help="pipeline runs (and Faust anchor runs) to take the median of")
    b.add_argument("--workers", type=int, default=1, help="workers for the pipeline run")
    b.add_argument("--rate", type=float, default=100.0, help="offered rate for the latency run")
    b.add_argument("--latency-seconds", type=float, default=20.0)
    b.add_argument("--latency-ingress", action="store_true",
                   help="latency run: webhooks through an ingress process (retail-sync "
                        "ingress) instead of the worker's own listener")
    b.add_argument("--only", default="",
                   help="comma-separated runs: ceiling, faust (anchors: both), pipeline, "
                   "latency, stock, failover (default: all), soak (only when named)")
    b.add_argument("--stock-changes", type=int, default=200,
                   help="ERP receipts for the stock propagation run")
    b.add_argument("--stock-rate", type=float, default=20.0,
                   help="ERP receipts per second in the stock propagation run")
    b.add_argument("--failover-orders", type=int, default=2000,
                   help="orders through two workers before one is killed (failover run)")
    b.add_argument("--soak-rate", type=float, default=50.0,
                   help="orders per second, all channels, in the soak run")
    b.add_argument("--soak-orders", type=int, default=2500,
                   help="soak run: worker RSS after this many orders (N) and after 4N")
    b.add_argument("--json", dest="json_out", default=None, help="also write results here")
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("exceptions", help="list or replay the sync-exception records "
                                          "(needs RETAIL_SYNC_BROKER_URL)")
    x.add_argument("action", choices=["list", "replay"])
    x.add_argument("ids", nargs="*", help="replay: exception ids")
    x.add_argument("--kind", default=None, choices=[k.value for k in ExceptionKind])
    x.add_argument("--channel", default=None)
    x.add_argument("--older-than-s", type=_seconds, default=None)
    x.add_argument("--newer-than-s", type=_seconds, default=None)
    x.add_argument("--limit", type=_limit, default=50)
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=cmd_exceptions)

    c = sub.add_parser("chaos", help="run resilience scenarios with a pass/fail report")
    c.add_argument("scenarios", nargs="+",
                   choices=["all", "erp-flaky", "marketplace-outage", "worker-kill",
                            "worker-restart", "marketplace-throttle", "webhook-fragmented",
                            "broker-outage"])
    c.set_defaults(func=cmd_chaos)

    r = sub.add_parser("reconcile",
                       help="compare each marketplace's orders with the ERP's sales orders")
    r.add_argument("--channels", default="",
                   help="comma-separated channels (default: every configured one)")
    r.add_argument("--days", type=_days, default=7.0, help="orders created in the last N days")
    r.add_argument("--limit", type=int, default=20, help="mismatches shown in the table")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=cmd_reconcile)

    t = sub.add_parser("admin-token", help="create or revoke an admin API token (README "
                                           "'Admin listener')")
    t.add_argument("action", choices=["create", "revoke"])
    t.add_argument("name", help="who holds it (shown as 'who' in audit records)")
    t.add_argument("--scopes", default="viewer",
                   help="comma-separated: viewer, operator, pii, metrics (default viewer)")
    t.add_argument("--file", default=None,
                   help="add it to (or revoke it from) this tokens file, the one "
                        "RETAIL_SYNC_ADMIN_TOKENS_FILE names; without it the entry is printed")
    t.add_argument("--rotate", action="store_true",
                   help="create: replace an existing token of that name in --file")
    t.set_defaults(func=cmd_admin_token)

    s = sub.add_parser("sim", help="run a simulator as a server")
    s.add_argument("system", choices=["erp", "shopify"])
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8100)
    s.add_argument("--webhook-url", default="http://127.0.0.1:6065/webhooks/shopify/orders/create",
                   help="a worker's ingress listener (RETAIL_SYNC_INGRESS_PORT)")
    s.add_argument("--rate", type=float, default=5.0)
    s.set_defaults(func=cmd_sim)

    sub.add_parser("settings", help="print the effective settings (secrets masked)") \
        .set_defaults(func=cmd_settings)

    sc = sub.add_parser("schemas", help="JSON Schemas of the records on Kafka (schemas/): "
                                        "export the current versions, or check them")
    sc.add_argument("action", choices=["export", "check"])
    sc.add_argument("--dir", default=None, help="default: schemas/ of the source tree")
    sc.set_defaults(func=cmd_schemas)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from retail_sync.startup_checks import mask_credentials_in_logs

    args = parser().parse_args(argv)
    mask_credentials_in_logs()
    try:
        return int(args.func(args) or 0)
    except (BrokerError, PluginError) as exc:
        print(f"retail-sync: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
