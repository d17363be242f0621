"""Pure presentation helpers: money and age formatting, paging, and the trend chart's geometry.

No I/O here, so each helper is unit-tested on its own. Money stays `Decimal`; chart coordinates are
pixels computed with `Decimal` too and rounded to a tenth, so no float ever touches an amount.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from .data import TrendPoint

# ISO 4217 minor units that are not 2; amounts are stored in major units (NUMERIC(24,3)).
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF"), 0),
    **dict.fromkeys(("UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
SERIES_COLOURS = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")


def minor_units(currency: str | None) -> int:
    return _MINOR_UNITS.get((currency or "").strip().upper(), 2)


def format_money(amount: Decimal | None, currency: str | None = None, *, signed: bool = False) -> str:
    """`1234.5` USD -> `1,234.50`; JPY shows no decimals, KWD three. Never hides a stored digit:
    an amount finer than its currency's minor unit is shown with the digits it has."""
    if amount is None:
        return "—"
    places = minor_units(currency)
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        places = -exponent
    quantum = Decimal(1).scaleb(-places)
    text = f"{amount.quantize(quantum, rounding=ROUND_HALF_EVEN):,.{places}f}"
    if signed and amount > 0:
        text = "+" + text
    return text


def format_count(value: Decimal | int | None, *, signed: bool = False) -> str:
    """A record count (stored as NUMERIC in the totals table) as a whole number: `1,204`, `+3`."""
    if value is None:
        return "—"
    number = int(value)
    return f"{number:+,}" if signed and number else f"{number:,}"


def plain(value: object) -> str:
    """Free-form JSON figures (summary, sources) as readable text, no braces:
    `{"charges": {"records": 3, "sql": "t"}, "n": 1}` -> `charges (records 3, sql t); n 1`."""
    if isinstance(value, dict):
        parts = [f"{k} ({plain(v)})" if isinstance(v, dict) else f"{k} {plain(v)}" for k, v in value.items()]
        nested = any(isinstance(v, dict) for v in value.values())
        return ("; " if nested else ", ").join(parts)
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value)
    return str(value)


def format_age(oldest: datetime | None, now: datetime) -> str:
    """A compact age such as `3d 4h`, `2h 5m`, `40s`; `—` for an empty queue."""
    if oldest is None:
        return "—"
    seconds = max(0, int((now - oldest).total_seconds()))
    days, rem = divmod(seconds, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


_COMPACT_STEPS = ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k"))


def format_compact(amount: Decimal) -> str:
    """A short signed axis label: `+1.82M`, `-12.3k`, `+950`; exact figures live in the tooltips."""
    sign = "+" if amount > 0 else "-" if amount < 0 else ""
    magnitude = abs(amount)
    for step, suffix in _COMPACT_STEPS:
        if magnitude >= step:
            scaled = magnitude / step
            places = 2 if scaled < 10 else 1 if scaled < 100 else 0
            return f"{sign}{scaled.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)}{suffix}"
    places = 0 if magnitude >= 100 or magnitude == magnitude.to_integral_value() else 2
    return f"{sign}{magnitude.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)}"


@dataclass(frozen=True)
class Pager:
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else self.offset + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.offset + self.per_page)

    def window(self, radius: int = 3) -> list[int]:
        """Page numbers to show as links: the first, the last and those near the current page."""
        near = range(max(1, self.page - radius), min(self.pages, self.page + radius) + 1)
        return sorted({1, self.pages, *near})


def make_pager(page: int, per_page: int, total: int) -> Pager:
    """A pager with `page` clamped into range (a stale link past the end shows the last page)."""
    pages = max(1, -(-total // per_page))
    return Pager(page=min(max(1, page), pages), per_page=per_page, total=total)


@dataclass(frozen=True)
class ChartPoint:
    x: Decimal
    y: Decimal
    label: str
    report_id: int
    status: str


@dataclass
class ChartSeries:
    stream: str
    colour: str
    points: list[ChartPoint] = field(default_factory=list)

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class AxisTick:
    y: Decimal
    label: str


@dataclass
class ChartPanel:
    """One currency's small-multiple chart: a line per stream, zero line, y ticks, first/last date."""

    currency: str
    width: int
    height: int
    series: list[ChartSeries]
    ticks: list[AxisTick]
    zero_y: Decimal
    x_labels: list[tuple[Decimal, str]]
    plot_left: int
    plot_right: int


_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 58, 18, 14, 26
_MAX_X_LABELS = 7
_PIXEL = Decimal("0.1")


def _px(value: Decimal) -> Decimal:
    return value.quantize(_PIXEL, rounding=ROUND_HALF_EVEN)


def build_trend_charts(
    points: Sequence[TrendPoint], *, width: int = 560, height: int = 200
) -> list[ChartPanel]:
    """Lay out one panel per currency (amounts in different currencies cannot share an axis).

    The x axis is the report period's start (the day audited), shared by every panel so they line
    up; y spans the currency's drift range and always includes zero, the line an auditor wants to see.
    """
    if not points:
        return []
    times = sorted({p.period_start for p in points})
    t0, t1 = times[0], times[-1]
    span = Decimal(max(1, int((t1 - t0).total_seconds())))
    plot_w = Decimal(width - _PAD_LEFT - _PAD_RIGHT)
    plot_h = Decimal(height - _PAD_TOP - _PAD_BOTTOM)

    def x_of(moment: datetime) -> Decimal:
        if t0 == t1:
            return _px(_PAD_LEFT + plot_w / 2)
        return _px(_PAD_LEFT + plot_w * Decimal(int((moment - t0).total_seconds())) / span)

    by_currency: dict[str, list[TrendPoint]] = defaultdict(list)
    for p in points:
        by_currency[p.currency_code].append(p)

    streams = sorted({p.stream for p in points})
    colours = {s: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, s in enumerate(streams)}
    shown = times if len(times) <= _MAX_X_LABELS else [t0, times[len(times) // 2], t1]
    x_labels = [(x_of(t), t.strftime("%d %b")) for t in shown]

    panels = []
    for currency in sorted(by_currency):
        cur_points = by_currency[currency]
        low = min(Decimal(0), *(p.difference for p in cur_points))
        high = max(Decimal(0), *(p.difference for p in cur_points))
        if low == high:
            high = low + 1

        def y_of(amount: Decimal, low: Decimal = low, high: Decimal = high) -> Decimal:
            return _px(_PAD_TOP + plot_h * (high - amount) / (high - low))

        series: dict[str, ChartSeries] = {}
        for p in sorted(cur_points, key=lambda p: (p.stream, p.period_start)):
            s = series.setdefault(p.stream, ChartSeries(stream=p.stream, colour=colours[p.stream]))
            label = (
                f"{p.stream} {currency} {p.period_start:%Y-%m-%d}: "
                f"{format_money(p.difference, currency, signed=True)} (report {p.report_id}, {p.status})"
            )
            s.points.append(
                ChartPoint(x_of(p.period_start), y_of(p.difference), label, p.report_id, p.status)
            )
        ticks = [AxisTick(y_of(v), format_compact(v)) for v in sorted({high, low} - {Decimal(0)})]
        panels.append(
            ChartPanel(
                currency=currency,
                width=width,
                height=height,
                series=list(series.values()),
                ticks=ticks,
                zero_y=y_of(Decimal(0)),
                x_labels=x_labels,
                plot_left=_PAD_LEFT,
                plot_right=width - _PAD_RIGHT,
            )
        )
    return panels


def chart_legend(panels: Sequence[ChartPanel]) -> list[tuple[str, str]]:
    """Each stream once with its colour (the same in every currency panel)."""
    seen: dict[str, str] = {}
    for panel in panels:
        for s in panel.series:
            seen.setdefault(s.stream, s.colour)
    return sorted(seen.items())


_CONSERVATION_ORDER = (
    "batches",
    "first_batch_id",
    "last_batch_id",
    "extracted",
    "loaded_new",
    "loaded_changed",
    "skipped_unchanged",
    "rejected",
    "balanced",
)


def _column_rank(name: str) -> tuple[int, str]:
    known = name in _CONSERVATION_ORDER
    return (_CONSERVATION_ORDER.index(name) if known else len(_CONSERVATION_ORDER), name)


def conservation_rows(conservation: dict[str, object]) -> tuple[list[str], list[tuple[str, list[object]]]]:
    """Turn the report's conservation JSON into a table: one row per stream, a column per figure.

    Understands the store's shape `{"basis": ..., "streams": {"charges": {"extracted": 10, ...}},
    "balanced": true}`, a bare `{"charges": {...}}`, and a flat `{"extracted": 10, ...}` ("all" row).
    """
    if not conservation:
        return [], []
    streams = conservation.get("streams")
    source = streams if isinstance(streams, dict) else conservation
    nested = {k: v for k, v in source.items() if isinstance(v, dict)}
    if nested and (source is streams or len(nested) == len(source)):
        columns: list[str] = []
        for figures in nested.values():
            columns.extend(k for k in figures if k not in columns)
        columns.sort(key=_column_rank)  # jsonb does not keep key order
        return columns, [(name, [figures.get(c, "") for c in columns]) for name, figures in nested.items()]
    columns = list(conservation)
    return columns, [("all", [conservation[c] for c in columns])]


_LAW_TERMS = ("loaded_new", "loaded_changed", "skipped_unchanged", "rejected")


def conservation_holds(figures: Sequence[object], columns: Sequence[str]) -> bool | None:
    """Whether `extracted = new + changed + unchanged + rejected` holds for one row; None if not shown."""
    named = dict(zip(columns, figures, strict=True))
    if "extracted" not in named or not all(t in named for t in _LAW_TERMS):
        return None
    try:
        return int(str(named["extracted"])) == sum(int(str(named[t])) for t in _LAW_TERMS)
    except ValueError:
        return None
