"""Text output of the ``taskserve`` command: tables, labelled values, times.

Everything here returns strings and never writes. Stored text (task names,
error messages, results) may hold anything, so every cell and value goes
through :func:`clean`: control characters, which could move a terminal's
cursor or change its colours, are shown escaped instead.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Collection, Sequence
from datetime import datetime

EMPTY = "-"
"""What an absent value reads as."""

CELL_MAX = 60
"""Widest table cell, in terminal columns; longer text ends with ``…``."""

MIN_FLEX = 12
"""Narrowest a table's flexible column shrinks to when fitting a terminal."""

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
"""Times are shown in the local time zone (``TZ``), with its name."""

_BIDI_CONTROLS = frozenset(
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)
)
"""Characters that reorder the text after them on screen."""


def clean(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to print: control and text-direction characters escaped
    (``\\x1b``, ``\\n``...), newlines kept when ``keep_newlines``."""
    out = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch in _BIDI_CONTROLS or unicodedata.category(ch) == "Cc":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def char_width(ch: str) -> int:
    """Terminal columns ``ch`` takes: 2 for wide East Asian characters, 0 for
    combining marks, else 1."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` (one line) takes."""
    return sum(char_width(ch) for ch in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending with ``…`` when cut."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - display_width(text))
    return gap + text if right else text + gap


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None = None,
    right: Collection[int] = (),
    flex: int = -1,
    upper: bool = True,
) -> str:
    """Rows under headers (upper-cased unless not ``upper``), columns two spaces apart, one line per
    row (each cell :func:`clean`-ed and cut at :data:`CELL_MAX` columns).

    Columns whose index is in ``right`` are right-aligned (numbers). With
    ``width`` (a terminal's columns), column ``flex`` is narrowed, down to
    :data:`MIN_FLEX`, until the lines fit.
    """
    cells = [[truncate(clean(str(c)), CELL_MAX) for c in row] for row in rows]
    heads = [h.upper() if upper else h for h in headers]
    widths = [
        max([display_width(heads[i])] + [display_width(row[i]) for row in cells])
        for i in range(len(heads))
    ]
    flex_at = flex % len(heads)
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        if excess > 0:
            widths[flex_at] = max(MIN_FLEX, widths[flex_at] - excess)
            cells = [
                [truncate(c, widths[i]) if i == flex_at else c for i, c in enumerate(row)]
                for row in cells
            ]
    aligned = set(right)
    lines = [
        "  ".join(_pad(c, widths[i], i in aligned) for i, c in enumerate(row)).rstrip()
        for row in [heads, *cells]
    ]
    return "\n".join(lines) + "\n"


def key_values(pairs: Sequence[tuple[str, str]]) -> str:
    """``label  value`` lines, values aligned; a value of several lines
    continues indented under its first line."""
    if not pairs:
        return ""
    label_width = max(display_width(label) for label, _ in pairs)
    lines = []
    for label, value in pairs:
        first, *rest = clean(value, keep_newlines=True).split("\n")
        lines.append(f"{_pad(label, label_width, False)}  {first}".rstrip())
        lines.extend(f"{' ' * (label_width + 2)}{line}".rstrip() for line in rest)
    return "\n".join(lines) + "\n"


def format_duration(seconds: float) -> str:
    """A length of time, rounded to its two largest units: ``45 s``,
    ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h``."""
    total = round(abs(seconds))
    if total < 60:
        return f"{total} s"
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if total >= size or parts:
            count, total = divmod(total, size)
            parts.append(f"{count} {name}")
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0 ")) or "0 s"


def format_time(
    timestamp: float | None, *, now: float | None = None, relative: bool = False
) -> str:
    """A unix time as local time (:data:`TIME_FORMAT`); with ``relative``,
    followed by how long ago or ahead of ``now`` it is: ``(5 s ago)``,
    ``(in 2 min)``. :data:`EMPTY` for None."""
    if timestamp is None:
        return EMPTY
    text = datetime.fromtimestamp(timestamp).astimezone().strftime(TIME_FORMAT)
    if not relative:
        return text
    delta = timestamp - (time.time() if now is None else now)
    if abs(delta) < 1:
        return f"{text} (now)"
    span = format_duration(delta)
    return f"{text} (in {span})" if delta > 0 else f"{text} ({span} ago)"


def yes_no(value: bool | None, none: str = EMPTY) -> str:
    """``yes``, ``no``, or ``none`` for None."""
    if value is None:
        return none
    return "yes" if value else "no"


def count(value: int | None, none: str = EMPTY) -> str:
    """A number, or ``none`` for None."""
    return none if value is None else str(value)
