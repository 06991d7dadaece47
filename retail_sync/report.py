"""Terminal output shared by the demo and the benchmark: progress line, percentiles, tables."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def duration(seconds: float) -> str:
    """A duration for people: milliseconds below a second, seconds above (1.75 s, 12.4 s, 95 s)."""
    if math.isnan(seconds):
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


class Samples:
    """Samples of a Prometheus text exposition, summed over any labels not asked for."""

    def __init__(self, exposition: str = "") -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
        ]

    def minus(self, earlier: Samples) -> Samples:
        """What happened since ``earlier`` (counters and histogram buckets of the same series)."""
        before = {(n, tuple(sorted(lab.items()))): v for n, lab, v in earlier.samples}
        out = Samples()
        out.samples = [(n, lab, v - before.get((n, tuple(sorted(lab.items()))), 0.0))
                       for n, lab, v in self.samples]
        return out

    def get(self, name: str, **labels: str) -> float:
        return sum(value for n, lab, value in self.samples
                   if n == name and all(lab.get(k) == v for k, v in labels.items()))


    def quantile(self, name: str, q: float, **labels: str) -> float:
        """``histogram_quantile`` as Prometheus computes it (linear inside the bucket) over the
        ``<name>_bucket`` samples matching ``labels``, summed over the other labels; q in 0..1.
        NaN when the histogram is empty."""
        buckets: dict[float, float] = {}
        for n, lab, value in self.samples:
            if n == f"{name}_bucket" and all(lab.get(k) == v for k, v in labels.items()):
                le = float(lab["le"])
                buckets[le] = buckets.get(le, 0.0) + value
        bounds = sorted(buckets)
        if not bounds or buckets[bounds[-1]] == 0:
            return math.nan
        rank = q * buckets[bounds[-1]]
        lower, below = 0.0, 0.0
        for le in bounds:
            count = buckets[le]
            if count >= rank:
                if math.isinf(le):
                    return lower
                inside = count - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = le, count
        return lower

    def count(self, name: str, **labels: str) -> float:
        """Observations of histogram ``name`` matching ``labels``."""
        return self.get(f"{name}_count", **labels)


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width)
    return "█" * full + "░" * (width - full)


class Progress:
    """One status line redrawn in place on a terminal, plain lines every few seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, plain_every: int = 10) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_every = plain_every
        self._ticks = 0

    def update(self, text: str) -> None:
        self._ticks += 1
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif self._ticks % self.plain_every == 1:
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def table(rows: Iterable[tuple[str, object]], title: str) -> str:
    rows = list(rows)
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"── {title} " + "─" * max(0, 54 - len(title))]
    lines += [f"  {label:<{width}}{value}" for label, value in rows]
    return "\n".join(lines)


def grid(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None,
         footnotes: Sequence[str] = ()) -> str:
    """A small aligned table: the first column left-aligned, numbers right-aligned, ``-`` for
    None; an optional ruled title and footnotes under it."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_numeric(row[i]) for row in cells[1:]) and len(cells) > 1
               for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
                 for i in range(len(row))]
        return ("  " + "  ".join(parts)).rstrip()

    out = [f"── {title} " + "─" * max(0, 54 - len(title))] if title else []
    out += [line(cells[0]), "  " + "  ".join("─" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    out += [f"  {note}" for note in footnotes]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    head = text.split(" ", 1)[0].replace(".", "", 1).replace(",", "")
    return text in ("-", "") or head.isdigit()


def counts_grid(counts: dict[str, int], title: str | None = None, width: int = 96) -> str:
    """A mapping of counters as one-row tables (names as headers), split to fit ``width``."""
    items = [(k.replace("_", " "), v) for k, v in counts.items()]
    if not items:
        return grid(["-"], [], title)
    chunks: list[list[tuple[str, object]]] = [[]]
    used = 0
    for name, value in items:
        cell = max(len(name), len(str(value))) + 2
        if chunks[-1] and used + cell > width:
            chunks.append([])
            used = 0
        chunks[-1].append((name, value))
        used += cell
    parts = [grid([n for n, _ in chunk], [[v for _, v in chunk]], title if i == 0 else None)
             for i, chunk in enumerate(chunks)]
    return "\n".join(parts)
