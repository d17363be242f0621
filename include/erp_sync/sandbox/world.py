"""The sandbox's data: seeded generation, state, rendering, mutations and ground truth.

State lives in numpy columns (see `columns.py`). Every change of state is an event, and every state
transition of an object points at the event that made it (`fin_ev`, `final_ev`, ...). An object "as
of event E" applies only the transitions whose event row is <= E, so an event's `data.object` and
`previous_attributes` are rendered from the same columns as the current object, and seeded history
and run-time mutations share one code path. The current state is "as of" `CURRENT`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from erp_sync.sandbox import templates as tpl
from erp_sync.sandbox.columns import CreatedIndex, Table
from erp_sync.sandbox.ids import IdCodec

NEVER = np.iinfo(np.int64).max  # a transition that has not happened
CURRENT = NEVER - 1  # "as of" the present: every transition that happened
DAY = 86_400
EVENT_RETENTION_S = 30 * DAY

CURRENCIES = ("usd", "eur", "gbp", "jpy", "kwd")
CURRENCY_WEIGHTS = (0.5, 0.2, 0.15, 0.1, 0.05)
# Unit prices in minor units: jpy has no decimals, kwd has three (fils).
UNIT_LO = np.array([500, 500, 400, 300, 1_000], dtype=np.int64)
UNIT_HI = np.array([25_000, 25_000, 20_000, 30_000, 80_000], dtype=np.int64)
# Exclusive VAT in percent by currency (eur 19, gbp 20): each line's tax is rounded half up, the
# invoice's tax is the lines' sum, and its total is the subtotal (the lines' sum) plus that tax.
VAT_PERCENT = np.array([0, 19, 20, 0, 0], dtype=np.int64)
# Discounts (ADR 0019). About 5% of invoices have a percent-off coupon on one line: an item-level
# discount, in that line's `discounts`, with its `discount_amounts` entry. About half of those also
# have one on the invoice (in the invoice's `discounts`), apportioned to every line's
# `discount_amounts` by what the line is after its own discount. Each amount is rounded half up. A
# line's `amount` stays gross; the subtotal is the lines less their own discounts; the VAT is on what
# is left after both; the total is the subtotal less the invoice-level discount plus the VAT.
# Drawn from a generator of their own, so every other draw (and so each seed's world) is as before.
ITEM_DISCOUNT_SHARE = 0.05
INVOICE_DISCOUNT_SHARE = 0.5  # of the invoices with an item-level discount
ITEM_DISCOUNT_PERCENTS = np.array([10, 15, 20, 25, 50], dtype=np.int8)
INVOICE_DISCOUNT_PERCENTS = np.array([5, 10], dtype=np.int8)
DISCOUNT_STREAM = 0xD15C  # the discount generator's seed is (world seed, this[, invoice row])

DRAFT, OPEN, PAID, VOID, UNCOLLECTIBLE = range(5)
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
CN_STATUSES = ("issued", "void")
ORDER_STATES = ("pending", "paid", "shipped", "cancelled", "refunded")
ORDER_NEXT = {0: (1, 3), 1: (2, 4), 2: (4,), 3: (), 4: ()}

CUSTOMER, INVOICE, CHARGE, REFUND, CREDIT_NOTE, EVENT, ORDER, LINE = range(8)
RESOURCE_NAMES = ("customers", "invoices", "charges", "refunds", "credit_notes", "events", "orders")
PREFIX = {
    CUSTOMER: "cus",
    INVOICE: "in",
    CHARGE: "ch",
    REFUND: "re",
    CREDIT_NOTE: "cn",
    EVENT: "evt",
    LINE: "il",
}
OBJECT_NAME = {
    CUSTOMER: "customer",
    INVOICE: "invoice",
    CHARGE: "charge",
    REFUND: "refund",
    CREDIT_NOTE: "credit_note",
}

# (type, resource, is_update). The code is the index; it also orders same-second events causally.
EVENT_TYPES: tuple[tuple[str, int, bool], ...] = (
    ("customer.created", CUSTOMER, False),
    ("invoice.created", INVOICE, False),
    ("invoice.finalized", INVOICE, True),
    ("charge.succeeded", CHARGE, False),
    ("invoice.paid", INVOICE, True),
    ("invoice.voided", INVOICE, True),
    ("invoice.marked_uncollectible", INVOICE, True),
    ("refund.created", REFUND, False),
    ("charge.refunded", CHARGE, True),
    ("credit_note.created", CREDIT_NOTE, False),
    ("invoice.updated", INVOICE, True),
    ("credit_note.voided", CREDIT_NOTE, True),
    ("customer.deleted", CUSTOMER, False),
    ("invoice.deleted", INVOICE, False),  # Stripe deletes only draft invoices
)
EV_CODE = {name: code for code, (name, _, _) in enumerate(EVENT_TYPES)}

FIRST_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia")
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
)
COMPANY_SUFFIX = ("Ltd", "GmbH", "Inc.", "SARL", "BV", "AB", "K.K.", "W.L.L.")
AWKWARD_NAMES = (
    "Zoë Ångström-Øre",
    "O'Brien & Sons",
    'The "Quoted" Company',
    "Robert'); DROP TABLE customers;--",
    "1' OR '1'='1",
    "株式会社 サンドボックス",
    "شركة الكويت للتجارة",
    "🚀 Rocket Café 🎉",
    "Back\\slash\\Trading",
    "Tab\tSeparated\tLLC",
    "Line\nBreak Industries",
    "Ünïcödé Gmbh (ß)",
    "<script>alert('x')</script> Corp",
    "Null\\u0000Byte Labs",
    "Percent 100% & Co; Ltd",
    "",
)
PRODUCTS = (
    "Pro plan (monthly)",
    "Seat add-on",
    "API calls overage",
    "Premium support",
    "Onboarding — one-off",
    "Storage 100 GB",
    "Training day « advanced »",
    "Hardware token 🔑",
    "Consulting hours",
    "Data export",
)


@dataclass(frozen=True)
class Listing:
    rows: list[int]
    has_more: bool


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _percent_of(amounts: Any, percents: Any) -> Any:
    """`percents` percent of `amounts` (minor units; ints or arrays), rounded half up."""
    return (amounts * percents + 50) // 100


def _vat(amounts: Any, currencies: Any) -> Any:
    """Exclusive VAT on line amounts (minor units), rounded half up; zero where none applies."""
    return _percent_of(amounts, VAT_PERCENT[currencies])


def _discount_plan(
    rng: np.random.Generator, n_lines: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per invoice: the position of its discounted line (-1: no discount), that line's percent off
    and the invoice-level percent off (0: none)."""
    n = len(n_lines)
    has_item = rng.random(n) < ITEM_DISCOUNT_SHARE
    position = np.where(has_item, (rng.random(n) * n_lines).astype(np.int64), -1)
    item_percent = np.where(
        has_item, ITEM_DISCOUNT_PERCENTS[rng.integers(0, len(ITEM_DISCOUNT_PERCENTS), n)], 0
    )
    on_invoice = has_item & (rng.random(n) < INVOICE_DISCOUNT_SHARE)
    invoice_percent = np.where(
        on_invoice, INVOICE_DISCOUNT_PERCENTS[rng.integers(0, len(INVOICE_DISCOUNT_PERCENTS), n)], 0
    )
    return position, item_percent.astype(np.int8), invoice_percent.astype(np.int8)


def _invoice_amounts(
    line_amount: np.ndarray[Any, Any],
    line_off: np.ndarray[Any, Any],
    line_inv: np.ndarray[Any, Any],
    line_cur: np.ndarray[Any, Any],
    discounted_line: np.ndarray[Any, Any],
    item_percent: np.ndarray[Any, Any],
    invoice_percent: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], ...]:
    """Per line its taxable amount (after every discount) and VAT; per invoice its subtotal, its
    invoice-level discount and its total. `discounted_line`: each invoice's discounted line row, -1
    for none. The renderers recompute each discount amount with the same `_percent_of`."""
    line_percent = np.zeros(len(line_amount), dtype=np.int8)
    has_item = discounted_line >= 0
    line_percent[discounted_line[has_item]] = item_percent[has_item]
    net = line_amount - _percent_of(line_amount, line_percent)
    taxable = net - _percent_of(net, invoice_percent[line_inv])
    tax = _vat(taxable, line_cur)
    subtotal = np.add.reduceat(net, line_off).astype(np.int64)
    discount = subtotal - np.add.reduceat(taxable, line_off).astype(np.int64)
    total = subtotal - discount + np.add.reduceat(tax, line_off).astype(np.int64)
    return taxable, tax, subtotal, discount, total


def _taxes(tax: int, taxable: int, currency: int) -> list[dict[str, Any]]:
    """Stripe's `taxes` / `total_taxes` entries (API 2025-03-31 and later) for one VAT amount."""
    if not tax:
        return []
    return [
        {
            "amount": tax,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": f"txr_vat_{CURRENCIES[currency]}"},
            "taxability_reason": "standard_rated",
            "taxable_amount": taxable,
            "type": "tax_rate_details",
        }
    ]


def _line_counts(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    """Mostly one to three lines; some invoices with 4..10 and a few with 11..40 (> one page)."""
    u = rng.random(n)
    return np.where(
        u < 0.5,
        1,
        np.where(
            u < 0.8,
            rng.integers(2, 4, n),
            np.where(u < 0.95, rng.integers(4, 11, n), rng.integers(11, 41, n)),
        ),
    ).astype(np.int64)


class JsonCache:
    """Serialised objects, appended to one arena (a bytearray) and found by (resource, row).

    A dict of row -> bytes cost 9.1 KB of RSS per 4.5 KB invoice (100,000 invoices; likely malloc
    fragmentation among rendering's short-lived objects) and passed 14 GB before the benchmark's
    million-invoice warm-up had finished. The arena measured 457 MB of RSS for 450 MB of JSON. A
    changed object is forgotten (its bytes stay in the arena until the next reset); past `limit`
    objects everything starts over, O(1) amortised.
    """

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self._arena = bytearray()
        self._index: dict[int, dict[int, int]] = {}
        self.count = 0

    def get(self, res: int, row: int) -> bytes | None:
        packed = self._index.get(res, {}).get(row)
        if packed is None:
            return None
        start = packed >> 32
        return bytes(self._arena[start : start + (packed & 0xFFFFFFFF)])

    def put(self, res: int, row: int, body: bytes) -> None:
        self.count += 1
        if self.count > self.limit:
            self.reset()
            self.count = 1
        self._index.setdefault(res, {})[row] = (len(self._arena) << 32) | len(body)
        self._arena += body

    def forget(self, res: int, row: int) -> None:
        self._index.get(res, {}).pop(row, None)


class World:
    """All sandbox objects. Not thread-safe: the server runs it on one event loop."""

    def __init__(
        self,
        invoices: int = 200,
        seed: int = 1,
        history_days: int = 90,
        anchor: int | None = None,
        cache_objects: int = 250_000,
    ) -> None:
        if not 1 <= invoices <= 5_000_000:
            raise ValueError("invoices must be between 1 and 5,000,000")
        if history_days < 1:
            raise ValueError("history_days must be >= 1")
        self.seed = seed
        self.history_days = history_days
        self.anchor = int(anchor if anchor is not None else time.time() // 3600 * 3600)
        self.ids = IdCodec(seed)
        self._cache = JsonCache()
        # Serialised objects kept (~5 KB per invoice with its embedded lines): 250,000 is ~1 GB. The
        # benchmark raises it so that every pass after the first serves pre-serialised JSON.
        self.cache_limit = cache_objects
        self._cache.limit = cache_objects
        self._cands: dict[str, np.ndarray[Any, Any]] = {}
        self._line_template = tpl.line_item_template()
        self.mutation_calls = 0
        # Deleted objects (row -> the deletion event), only by the explicit mutations below: lists
        # leave them out, a deleted customer reads as Stripe's stub, a deleted invoice is a 404.
        self.deleted: dict[int, dict[int, int]] = {CUSTOMER: {}, INVOICE: {}}
        self._generate(invoices)
        self.index = {
            res: CreatedIndex(table.created)
            for res, table in (
                (CUSTOMER, self.customers),
                (INVOICE, self.invoices),
                (CHARGE, self.charges),
                (REFUND, self.refunds),
                (CREDIT_NOTE, self.credit_notes),
                (EVENT, self.events),
            )
        }
        self.orders_index = CreatedIndex(self.orders.updated)

    # ------------------------------------------------------------------ generation
    def _generate(self, n_inv: int) -> None:
        rng = np.random.default_rng(self.seed)
        anchor = self.anchor
        start = anchor - self.history_days * DAY
        i64 = np.int64

        n_cust = max(10, n_inv // 5)
        cust_created = np.sort(rng.integers(start - DAY, anchor, n_cust)).astype(i64)
        cust_created[0] = start - DAY
        cust_cur = rng.choice(len(CURRENCIES), n_cust, p=CURRENCY_WEIGHTS).astype(np.int8)

        inv_created = np.sort(rng.integers(start, anchor, n_inv)).astype(i64)
        known = np.searchsorted(cust_created, inv_created, side="right")
        inv_cust = (rng.random(n_inv) * known).astype(i64)
        inv_cur = cust_cur[inv_cust]

        n_lines = _line_counts(rng, n_inv)
        line_off = np.concatenate([[0], np.cumsum(n_lines)[:-1]]).astype(i64)
        n_line_rows = int(n_lines.sum())
        line_inv = np.repeat(np.arange(n_inv, dtype=i64), n_lines)
        line_cur = inv_cur[line_inv]
        qty = np.where(rng.random(n_line_rows) < 0.7, 1, rng.integers(2, 6, n_line_rows)).astype(i64)
        lo, hi = UNIT_LO[line_cur], UNIT_HI[line_cur]
        unit = lo + (rng.random(n_line_rows) * (hi - lo)).astype(i64)
        line_amount = unit * qty
        position, item_pct, inv_pct = _discount_plan(
            np.random.default_rng((self.seed, DISCOUNT_STREAM)), n_lines
        )
        disc_line = np.where(position >= 0, line_off + position, -1).astype(i64)
        line_taxable, line_tax, inv_subtotal, inv_discount, inv_total = _invoice_amounts(
            line_amount, line_off, line_inv, line_cur, disc_line, item_pct, inv_pct
        )
        product = rng.integers(0, len(PRODUCTS), n_line_rows).astype(np.int16)

        fin_t = np.minimum(inv_created + rng.integers(0, 3600, n_inv), anchor)
        u = rng.random(n_inv)
        final_status = np.select([u < 0.68, u < 0.76, u < 0.82], [PAID, VOID, UNCOLLECTIBLE], OPEN).astype(
            np.int8
        )
        final_t = fin_t + rng.integers(60, 12 * DAY, n_inv)
        final_status[final_t > anchor] = OPEN
        final_t[final_status == OPEN] = NEVER

        paid = np.flatnonzero(final_status == PAID)
        ch_sort = np.lexsort((paid, final_t[paid]))
        ch_inv = paid[ch_sort].astype(i64)
        ch_created = final_t[ch_inv]
        ch_amount = inv_total[ch_inv]
        n_ch = len(ch_inv)
        inv_charge = np.full(n_inv, -1, dtype=i64)
        inv_charge[ch_inv] = np.arange(n_ch, dtype=i64)

        ref_t = ch_created + rng.integers(3600, 20 * DAY, n_ch)
        has_ref = (rng.random(n_ch) < 0.10) & (ref_t <= anchor)
        full = rng.random(n_ch) < 0.4
        ref_amount_all = np.where(
            full, ch_amount, np.maximum(1, ch_amount * rng.integers(10, 90, n_ch) // 100)
        )
        ref_ch = np.flatnonzero(has_ref)
        ref_sort = np.lexsort((ref_ch, ref_t[ref_ch]))
        ref_ch = ref_ch[ref_sort].astype(i64)
        ref_created = ref_t[ref_ch]
        ref_amount = ref_amount_all[ref_ch]
        ch_refunded = np.zeros(n_ch, dtype=i64)
        ch_refunded[ref_ch] = ref_amount

        cn_t = np.where(final_t == NEVER, NEVER, final_t + rng.integers(3600, 15 * DAY, n_inv))
        has_cn = (final_status == PAID) & (rng.random(n_inv) < 0.06) & (cn_t <= anchor)
        cn_inv = np.flatnonzero(has_cn)
        cn_sort = np.lexsort((cn_inv, cn_t[cn_inv]))
        cn_inv = cn_inv[cn_sort].astype(i64)
        cn_created = cn_t[cn_inv]
        first_line = line_taxable[line_off[cn_inv]]  # as charged: after its discounts, before VAT
        cn_amount = np.maximum(1, first_line * rng.integers(10, 101, len(cn_inv)) // 100)
        inv_cn_amount = np.zeros(n_inv, dtype=i64)
        inv_cn_amount[cn_inv] = cn_amount

        n_ord = max(10, n_inv // 2)
        ord_created = np.sort(rng.integers(start, anchor, n_ord)).astype(i64)
        ord_known = np.searchsorted(cust_created, ord_created, side="right")
        ord_cust = (rng.random(n_ord) * ord_known).astype(i64)
        ord_cur = cust_cur[ord_cust]
        ord_total = UNIT_LO[ord_cur] + (rng.random(n_ord) * (UNIT_HI[ord_cur] * 3)).astype(i64)
        ord_state = rng.choice(len(ORDER_STATES), n_ord, p=(0.15, 0.45, 0.3, 0.06, 0.04)).astype(np.int8)
        ord_updated = np.where(
            ord_state == 0, ord_created, np.minimum(ord_created + rng.integers(60, 5 * DAY, n_ord), anchor)
        ).astype(i64)

        # Events: every creation and state change, ordered by (time, type code, object).
        parts: list[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []

        def add(kind: str, times: np.ndarray[Any, Any], objs: np.ndarray[Any, Any]) -> int:
            parts.append((EV_CODE[kind], times.astype(i64), objs.astype(i64)))
            return len(parts) - 1

        all_inv = np.arange(n_inv, dtype=i64)
        void = np.flatnonzero(final_status == VOID)
        uncol = np.flatnonzero(final_status == UNCOLLECTIBLE)
        seg = {
            "cust": add("customer.created", cust_created, np.arange(n_cust)),
            "inv": add("invoice.created", inv_created, all_inv),
            "fin": add("invoice.finalized", fin_t, all_inv),
            "ch": add("charge.succeeded", ch_created, np.arange(n_ch)),
            "paid": add("invoice.paid", final_t[ch_inv], ch_inv),
            "void": add("invoice.voided", final_t[void], void),
            "uncol": add("invoice.marked_uncollectible", final_t[uncol], uncol),
            "ref": add("refund.created", ref_created, np.arange(len(ref_ch))),
            "chref": add("charge.refunded", ref_created, ref_ch),
            "cn": add("credit_note.created", cn_created, np.arange(len(cn_inv))),
            "cninv": add("invoice.updated", cn_created, cn_inv),
        }
        times = np.concatenate([p[1] for p in parts])
        kinds = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int8) for p in parts])
        objs = np.concatenate([p[2] for p in parts])
        perm = np.lexsort((objs, kinds, times))
        rank = np.empty(len(perm), dtype=i64)
        rank[perm] = np.arange(len(perm), dtype=i64)
        offsets = np.concatenate([[0], np.cumsum([len(p[1]) for p in parts])])

        def ev_rows(name: str) -> np.ndarray[Any, Any]:
            k = seg[name]
            return rank[offsets[k] : offsets[k + 1]]

        inv_final_ev = np.full(n_inv, NEVER, dtype=i64)
        inv_final_ev[ch_inv] = ev_rows("paid")
        inv_final_ev[void] = ev_rows("void")
        inv_final_ev[uncol] = ev_rows("uncol")
        n_cn = len(cn_inv)

        self.events = Table(created=times[perm], kind=kinds[perm], obj=objs[perm])
        self.customers = Table(created=cust_created, currency=cust_cur, created_ev=ev_rows("cust"))
        self.invoices = Table(
            created=inv_created,
            customer=inv_cust,
            currency=inv_cur,
            line_off=line_off,
            n_lines=n_lines,
            subtotal=inv_subtotal,
            discount=inv_discount,
            total=inv_total,
            disc_line=disc_line,
            item_pct=item_pct,
            inv_pct=inv_pct,
            created_ev=ev_rows("inv"),
            fin_ev=ev_rows("fin"),
            final_ev=inv_final_ev,
            final_status=np.where(final_status == OPEN, OPEN, final_status).astype(np.int8),
            charge=inv_charge,
            cn_amount=inv_cn_amount,
        )
        self.lines = Table(
            invoice=line_inv, amount=line_amount, tax=line_tax, unit=unit, qty=qty, product=product
        )
        self.charges = Table(
            created=ch_created,
            invoice=ch_inv,
            currency=inv_cur[ch_inv],
            amount=ch_amount,
            refunded=ch_refunded,
            created_ev=ev_rows("ch"),
        )
        self.refunds = Table(
            created=ref_created,
            charge=ref_ch,
            currency=inv_cur[ch_inv[ref_ch]] if len(ref_ch) else np.empty(0, dtype=np.int8),
            amount=ref_amount,
            created_ev=ev_rows("ref"),
            charge_ev=ev_rows("chref"),
        )
        self.credit_notes = Table(
            created=cn_created,
            invoice=cn_inv,
            currency=inv_cur[cn_inv],
            amount=cn_amount.astype(i64),
            created_ev=ev_rows("cn"),
            inv_ev=ev_rows("cninv"),
            void_ev=np.full(n_cn, NEVER, dtype=i64),
            inv_void_ev=np.full(n_cn, NEVER, dtype=i64),
        )
        self.orders = Table(
            created=ord_created,
            updated=ord_updated,
            customer=ord_cust,
            currency=ord_cur,
            state=ord_state,
            total=ord_total.astype(i64),
        )
        self.charge_refunds: dict[int, list[int]] = {}
        for r, c in enumerate(ref_ch.tolist()):
            self.charge_refunds.setdefault(c, []).append(r)
        self.invoice_cns: dict[int, list[int]] = {}
        for c, i in enumerate(cn_inv.tolist()):
            self.invoice_cns.setdefault(i, []).append(c)

    # ------------------------------------------------------------------ names
    def customer_name(self, i: int) -> str:
        h = (i * 2654435761 + self.seed * 97) & 0xFFFFFFFF
        if i % 6 == 0:
            return AWKWARD_NAMES[(i // 6) % len(AWKWARD_NAMES)]
        if h % 3 == 0:
            return f"{LAST_NAMES[h % len(LAST_NAMES)]} {COMPANY_SUFFIX[(h >> 8) % len(COMPANY_SUFFIX)]}"
        return f"{FIRST_NAMES[(h >> 4) % len(FIRST_NAMES)]} {LAST_NAMES[(h >> 12) % len(LAST_NAMES)]}"

    def customer_email(self, i: int) -> str:
        return f"billing+{i}@customer{i % 97}.example.com"

    def invoice_prefix(self, i: int) -> str:
        return f"{(i * 2654435761 + self.seed) & 0xFFFFFFF:07X}"

    def ev_time(self, ev: int) -> int | None:
        return None if ev == NEVER else int(self.events.created[ev])

    # ------------------------------------------------------------------ rendering
    def render(self, res: int, row: int, as_of: int = CURRENT) -> dict[str, Any]:
        return self._renderers[res](self, row, as_of)

    def render_customer(self, i: int, as_of: int = CURRENT) -> dict[str, Any]:
        d = dict(tpl.customer_template())
        d.update(
            id=self.ids.encode("cus", i),
            created=int(self.customers.created[i]),
            currency=CURRENCIES[self.customers.currency[i]],
            name=self.customer_name(i),
            email=self.customer_email(i),
            invoice_prefix=self.invoice_prefix(i),
            description=None,
            metadata={"erp_account": f"C{i:07d}"},
            next_invoice_sequence=1,
        )
        return d

    def render_line(self, j: int) -> dict[str, Any]:
        lines, invoices, encode = self.lines, self.invoices, self.ids.encode
        inv = lines.invoice.a.item(j)
        created = invoices.created.a.item(inv)
        amount = lines.amount.a.item(j)
        currency = invoices.currency.a.item(inv)
        d = dict(self._line_template)
        d["id"] = encode("il", j)
        d["invoice"] = encode("in", inv)
        d["amount"] = amount
        d["subtotal"] = amount
        d["currency"] = CURRENCIES[currency]
        taxable = amount
        if invoices.disc_line.a.item(inv) >= 0:
            d["discounts"], d["discount_amounts"] = self._line_discounts(j, inv, amount)
            taxable -= sum(entry["amount"] for entry in d["discount_amounts"])
        tax = lines.tax.a.item(j)
        if tax:
            d["taxes"] = _taxes(tax, taxable, currency)
        d["description"] = PRODUCTS[lines.product.a.item(j)]
        d["quantity"] = lines.qty.a.item(j)
        d["period"] = {"end": created + 30 * DAY, "start": created}
        d["pricing"] = {"type": "price_details", "unit_amount_decimal": str(lines.unit.a.item(j))}
        d["parent"] = {
            "invoice_item_details": {
                "invoice_item": encode("ii", j),
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
        d["metadata"] = {}
        return d

    def _item_discount_id(self, j: int) -> str:
        return self.ids.encode("di", 2 * j)  # even: a line's own coupon; odd: an invoice's

    def _invoice_discount_id(self, i: int) -> str:
        return self.ids.encode("di", 2 * i + 1)

    def _line_discounts(self, j: int, inv: int, amount: int) -> tuple[list[str], list[dict[str, Any]]]:
        """A line's `discounts` (its own coupon, if it is the invoice's discounted line) and
        `discount_amounts` (its own, then its share of the invoice's coupon), as `_invoice_amounts`
        computed them."""
        invoices = self.invoices
        discounts: list[str] = []
        amounts: list[dict[str, Any]] = []
        own = 0
        if invoices.disc_line.a.item(inv) == j:
            own = _percent_of(amount, invoices.item_pct.a.item(inv))
            discounts.append(self._item_discount_id(j))
            amounts.append({"amount": own, "discount": discounts[0]})
        invoice_percent = invoices.inv_pct.a.item(inv)
        if invoice_percent:
            share = _percent_of(amount - own, invoice_percent)
            amounts.append({"amount": share, "discount": self._invoice_discount_id(inv)})
        return discounts, amounts

    def lines_list(self, i: int, start: int, limit: int) -> dict[str, Any]:
        off, n = int(self.invoices.line_off[i]), int(self.invoices.n_lines[i])
        end = min(n, start + limit)
        return {
            "data": [self.render_line(off + k) for k in range(start, end)],
            "has_more": end < n,
            "object": "list",
            "url": f"/v1/invoices/{self.ids.encode('in', i)}/lines",
        }

    def invoice_status(self, i: int, as_of: int = CURRENT) -> int:
        inv = self.invoices
        if inv.final_ev[i] <= as_of:
            return int(inv.final_status[i])
        if inv.fin_ev[i] <= as_of:
            return OPEN
        return DRAFT

    def invoice_cn_amount(self, i: int, as_of: int) -> int:
        if as_of == CURRENT:
            return int(self.invoices.cn_amount[i])
        cn = self.credit_notes
        return sum(
            int(cn.amount[c])
            for c in self.invoice_cns.get(i, ())
            if cn.inv_ev[c] <= as_of and not cn.inv_void_ev[c] <= as_of
        )

    def render_invoice(self, i: int, as_of: int = CURRENT) -> dict[str, Any]:
        inv = self.invoices
        status = self.invoice_status(i, as_of)
        total, subtotal, discount = int(inv.total[i]), int(inv.subtotal[i]), int(inv.discount[i])
        paid = total if status == PAID else 0
        cust = int(inv.customer[i])
        created = int(inv.created[i])
        finalized = status != DRAFT
        fin_at = self.ev_time(int(inv.fin_ev[i])) if finalized else None
        final_at = self.ev_time(int(inv.final_ev[i])) if status in (PAID, VOID, UNCOLLECTIBLE) else None
        invoice_id = self.ids.encode("in", i)
        d = dict(tpl.invoice_template())
        d.update(
            id=invoice_id,
            created=created,
            currency=CURRENCIES[inv.currency[i]],
            customer=self.ids.encode("cus", cust),
            customer_name=self.customer_name(cust),
            customer_email=self.customer_email(cust),
            number=f"{self.invoice_prefix(cust)}-{i + 1:06d}" if finalized else None,
            status=INVOICE_STATUSES[status],
            amount_due=total,
            amount_paid=paid,
            amount_remaining=total - paid,
            attempted=status == PAID,
            attempt_count=1 if status == PAID else 0,
            auto_advance=status in (DRAFT, OPEN),
            subtotal=subtotal,
            subtotal_excluding_tax=subtotal,
            total=total,
            total_excluding_tax=subtotal - discount,
            total_taxes=_taxes(total - subtotal + discount, subtotal - discount, int(inv.currency[i])),
            post_payment_credit_notes_amount=self.invoice_cn_amount(i, as_of),
            pre_payment_credit_notes_amount=0,
            effective_at=fin_at,
            ending_balance=0 if finalized else None,
            period_start=created,
            period_end=created,
            webhooks_delivered_at=created,
            hosted_invoice_url=f"https://invoice.sandbox.invalid/i/{invoice_id}" if finalized else None,
            invoice_pdf=f"https://invoice.sandbox.invalid/i/{invoice_id}/pdf" if finalized else None,
            status_transitions={
                "finalized_at": fin_at,
                "marked_uncollectible_at": final_at if status == UNCOLLECTIBLE else None,
                "paid_at": final_at if status == PAID else None,
                "voided_at": final_at if status == VOID else None,
            },
            lines=self.lines_list(i, 0, 10),
            metadata={},
        )
        disc_line = int(inv.disc_line[i])
        if disc_line >= 0:
            own = _percent_of(int(self.lines.amount[disc_line]), int(inv.item_pct[i]))
            d["total_discount_amounts"] = [{"amount": own, "discount": self._item_discount_id(disc_line)}]
            if discount:
                d["discounts"] = [self._invoice_discount_id(i)]
                d["total_discount_amounts"].append({"amount": discount, "discount": d["discounts"][0]})
        return d

    def render_refund(self, r: int, as_of: int = CURRENT) -> dict[str, Any]:
        ref = self.refunds
        c = int(ref.charge[r])
        inv = int(self.charges.invoice[c])
        d = dict(tpl.refund_template())
        d.update(
            id=self.ids.encode("re", r),
            amount=int(ref.amount[r]),
            charge=self.ids.encode("ch", c),
            created=int(ref.created[r]),
            currency=CURRENCIES[ref.currency[r]],
            customer=self.ids.encode("cus", int(self.invoices.customer[inv])),
            balance_transaction=self.ids.encode("txn", 1_000_000_000 + r),
            reason="requested_by_customer",
            metadata={"invoice": self.ids.encode("in", inv)},
            status="succeeded",
        )
        return d

    def render_charge(self, c: int, as_of: int = CURRENT) -> dict[str, Any]:
        ch = self.charges
        inv = int(ch.invoice[c])
        cust = int(self.invoices.customer[inv])
        refund_rows = [r for r in self.charge_refunds.get(c, ()) if self.refunds.charge_ev[r] <= as_of]
        refunded = sum(int(self.refunds.amount[r]) for r in refund_rows)
        amount = int(ch.amount[c])
        charge_id = self.ids.encode("ch", c)
        d = dict(tpl.charge_template())
        billing = dict(d["billing_details"])
        billing.update(name=self.customer_name(cust), email=self.customer_email(cust))
        d.update(
            id=charge_id,
            amount=amount,
            amount_captured=amount,
            amount_refunded=refunded,
            refunded=refunded >= amount,
            captured=True,
            paid=True,
            status="succeeded",
            created=int(ch.created[c]),
            currency=CURRENCIES[ch.currency[c]],
            customer=self.ids.encode("cus", cust),
            description=f"Payment for invoice {self.invoice_prefix(cust)}-{inv + 1:06d}",
            metadata={"invoice": self.ids.encode("in", inv)},
            billing_details=billing,
            balance_transaction=self.ids.encode("txn", c),
            payment_method=self.ids.encode("pm", c),
            receipt_url=f"https://pay.sandbox.invalid/receipts/{charge_id}",
            refunds={
                "data": [self.render_refund(r) for r in reversed(refund_rows[-10:])],
                "has_more": len(refund_rows) > 10,
                "object": "list",
                "url": f"/v1/charges/{charge_id}/refunds",
            },
        )
        return d

    def render_credit_note(self, c: int, as_of: int = CURRENT) -> dict[str, Any]:
        cn = self.credit_notes
        inv = int(cn.invoice[c])
        cust = int(self.invoices.customer[inv])
        amount = int(cn.amount[c])
        voided = cn.void_ev[c] <= as_of
        cn_id = self.ids.encode("cn", c)
        line = dict(tpl.credit_note_line_template())
        line.update(
            id=self.ids.encode("cnli", c),
            amount=amount,
            description="Service credit",
            invoice_line_item=self.ids.encode("il", int(self.invoices.line_off[inv])),
            quantity=1,
            type="invoice_line_item",
        )
        d = dict(tpl.credit_note_template())
        d.update(
            id=cn_id,
            amount=amount,
            subtotal=amount,
            subtotal_excluding_tax=amount,
            total=amount,
            total_excluding_tax=amount,
            total_taxes=[],
            created=int(cn.created[c]),
            effective_at=int(cn.created[c]),
            currency=CURRENCIES[cn.currency[c]],
            customer=self.ids.encode("cus", cust),
            invoice=self.ids.encode("in", inv),
            number=f"{self.invoice_prefix(cust)}-{inv + 1:06d}-CN-{c % 100:02d}",
            lines={
                "data": [line],
                "has_more": False,
                "object": "list",
                "url": f"/v1/credit_notes/{cn_id}/lines",
            },
            memo="Goodwill credit",
            metadata={},
            out_of_band_amount=amount,
            post_payment_amount=amount,
            pre_payment_amount=0,
            pdf=f"https://invoice.sandbox.invalid/cn/{cn_id}/pdf",
            reason="product_unsatisfactory",
            status=CN_STATUSES[1 if voided else 0],
            type="post_payment",
            voided_at=self.ev_time(int(cn.void_ev[c])) if voided else None,
        )
        return d

    def render_event(self, ev: int, as_of: int = CURRENT) -> dict[str, Any]:
        type_name, res, is_update = EVENT_TYPES[self.events.kind[ev]]
        obj_row = int(self.events.obj[ev])
        obj = self.render(res, obj_row, ev)
        data: dict[str, Any] = {"object": obj}
        if is_update:
            before = self.render(res, obj_row, ev - 1)
            data["previous_attributes"] = {k: before[k] for k in obj if before.get(k) != obj[k]}
        d = dict(tpl.event_template())
        d.update(
            id=self.ids.encode("evt", ev),
            created=int(self.events.created[ev]),
            data=data,
            type=type_name,
            request={"id": None, "idempotency_key": None},
        )
        return d

    _renderers: dict[int, Callable[[World, int, int], dict[str, Any]]] = {
        CUSTOMER: render_customer,
        INVOICE: render_invoice,
        CHARGE: render_charge,
        REFUND: render_refund,
        CREDIT_NOTE: render_credit_note,
        EVENT: render_event,
    }

    def render_order(self, o: int) -> dict[str, Any]:
        orders = self.orders
        return {
            "order_id": f"ord_{self.ids.tag}{o:08d}",
            "customer_id": self.ids.encode("cus", int(orders.customer[o])),
            "state": ORDER_STATES[orders.state[o]],
            "currency": CURRENCIES[orders.currency[o]],
            "total_cents": int(orders.total[o]),
            "updated_at": _iso(int(orders.updated[o])),
            "created_at": _iso(int(orders.created[o])),
        }

    # ------------------------------------------------------------------ JSON cache
    def json(self, res: int, row: int) -> bytes:
        """The current object's JSON, serialised once and cached until it changes."""
        body = self._cache.get(res, row)
        if body is None:
            obj = self.render_order(row) if res == ORDER else self.render(res, row)
            body = orjson.dumps(obj)
            self._cache.put(res, row, body)
        return body

    def line_json(self, j: int) -> bytes:
        """An invoice line's JSON (lines never change once generated), cached like `json`."""
        body = self._cache.get(LINE, j)
        if body is None:
            body = orjson.dumps(self.render_line(j))
            self._cache.put(LINE, j, body)
        return body

    def json_many(self, res: int, rows: list[int]) -> list[bytes]:
        get = self._cache.get
        return [get(res, r) or self.json(res, r) for r in rows]

    def _touch(self, res: int, row: int) -> None:
        self._cache.forget(res, row)

    # ------------------------------------------------------------------ lookup and listing
    def table(self, res: int) -> Table:
        return {
            CUSTOMER: self.customers,
            INVOICE: self.invoices,
            CHARGE: self.charges,
            REFUND: self.refunds,
            CREDIT_NOTE: self.credit_notes,
            EVENT: self.events,
            ORDER: self.orders,
            LINE: self.lines,
        }[res]

    def find(self, res: int, object_id: str) -> int | None:
        """The row of an id of resource `res`, or None (unknown, or an event past retention)."""
        row = self.ids.decode(PREFIX[res], object_id)
        if row is None or row >= self.table(res).n:
            return None
        if res == EVENT and int(self.events.created[row]) < self.event_horizon():
            return None
        return row

    def event_horizon(self) -> int:
        return int(time.time()) - EVENT_RETENTION_S

    def listing(
        self,
        res: int,
        *,
        created_gte: int | None,
        created_lte: int | None,
        starting_after: int | None,
        ending_before: int | None,
        limit: int,
        predicate: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None,
    ) -> Listing:
        """Stripe list order (newest first) over rows in a created window, after/before a cursor."""
        predicate = self._without_deleted(res, predicate)
        idx = self.index[res]
        sorted_created, order = idx.sorted_created, idx.order
        lo, hi = 0, len(order)
        if res == EVENT:
            horizon = self.event_horizon()
            created_gte = horizon if created_gte is None else max(created_gte, horizon)
        if created_gte is not None:
            lo = int(np.searchsorted(sorted_created, created_gte, side="left"))
        if created_lte is not None:
            hi = int(np.searchsorted(sorted_created, created_lte, side="right"))
        if ending_before is not None:
            lo = max(lo, idx.pos_of(ending_before) + 1)
            positions, more = self._scan(order, lo, hi, limit, predicate, descending=False)
            return Listing(order[positions][::-1].tolist(), more)
        if starting_after is not None:
            hi = min(hi, idx.pos_of(starting_after))
        positions, more = self._scan(order, lo, hi, limit, predicate, descending=True)
        return Listing(order[positions].tolist(), more)

    def is_deleted(self, res: int, row: int) -> bool:
        return row in self.deleted.get(res, ())

    def _alive(self, res: int, n: int) -> np.ndarray[Any, Any]:
        """A mask of the rows of `res` (of `n`) that are not deleted."""
        alive = np.ones(n, dtype=bool)
        gone = list(self.deleted.get(res, {}))
        if gone:
            alive[gone] = False
        return alive

    def _without_deleted(
        self, res: int, predicate: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None
    ) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None:
        if not self.deleted.get(res):
            return predicate
        gone = np.fromiter(self.deleted[res], dtype=np.int64)

        def alive(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            keep = ~np.isin(rows, gone)
            return keep if predicate is None else keep & predicate(rows)

        return alive

    @staticmethod
    def _scan(
        order: np.ndarray[Any, Any],
        lo: int,
        hi: int,
        limit: int,
        predicate: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None,
        *,
        descending: bool,
    ) -> tuple[Any, bool]:
        """Positions (a slice or a list) of up to `limit` matches, scanning from `hi` down or `lo` up."""
        if hi <= lo:
            return [], False
        if predicate is None:
            if descending:
                first = max(lo, hi - limit)
                return slice(hi - 1, first - 1 if first > 0 else None, -1), first > lo
            last = min(hi, lo + limit)
            return slice(lo, last), last < hi
        found: list[int] = []
        chunk = 512
        cursor = hi if descending else lo
        while len(found) <= limit and (cursor > lo if descending else cursor < hi):
            if descending:
                a, b = max(lo, cursor - chunk), cursor
                cursor = a
            else:
                a, b = cursor, min(hi, cursor + chunk)
                cursor = b
            positions = np.arange(a, b, dtype=np.int64)
            hits = positions[predicate(order[a:b])]
            found.extend((hits[::-1] if descending else hits).tolist())
            chunk = min(chunk * 2, 262_144)
        return found[:limit], len(found) > limit

    def current_invoice_status(self) -> np.ndarray[Any, Any]:
        inv = self.invoices
        return np.where(
            inv.final_ev.v != NEVER, inv.final_status.v, np.where(inv.fin_ev.v != NEVER, OPEN, DRAFT)
        ).astype(np.int8)

    def orders_page(
        self, updated_since: int | None, updated_before: int | None, offset: int, limit: int
    ) -> tuple[list[int], int]:
        """Orders by (updated_at, id) ascending in [since, before): one offset page and the total."""
        idx = self.orders_index
        updated, order = idx.sorted_created, idx.order
        lo = 0 if updated_since is None else int(np.searchsorted(updated, updated_since, side="left"))
        hi = (
            len(order)
            if updated_before is None
            else int(np.searchsorted(updated, updated_before, side="left"))
        )
        total = max(0, hi - lo)
        start = lo + offset
        return [int(r) for r in order[start : min(hi, start + limit)]], total

    # ------------------------------------------------------------------ mutations
    def _emit(self, kind: str, obj: int, at: int) -> int:
        return self.events.append(created=at, kind=EV_CODE[kind], obj=obj)

    def _new_customer(self, rng: random.Random, at: int) -> dict[str, Any]:
        row = self.customers.n
        cur = rng.choices(range(len(CURRENCIES)), weights=CURRENCY_WEIGHTS)[0]
        ev = self._emit("customer.created", row, at)
        self.customers.append(created=at, currency=cur, created_ev=ev)
        return {"kind": "new_customer", "id": self.ids.encode("cus", row), "events": [ev]}

    def _new_invoice(self, rng: random.Random, at: int, *, draft: bool = False) -> dict[str, Any]:
        cust = rng.randrange(self.customers.n)
        while self.is_deleted(CUSTOMER, cust):
            cust = rng.randrange(self.customers.n)
        cur = int(self.customers.currency[cust])
        n_lines = int(_line_counts(np.random.default_rng(rng.getrandbits(32)), 1)[0])
        row = self.invoices.n
        off = self.lines.n
        drawn = []
        for _ in range(n_lines):
            unit = rng.randrange(int(UNIT_LO[cur]), int(UNIT_HI[cur]))
            qty = 1 if rng.random() < 0.7 else rng.randrange(2, 6)
            drawn.append((unit, qty, rng.randrange(len(PRODUCTS))))
        # The discounts come from the row's own generator: the mutation's draws stay as they were.
        position, item_pct, inv_pct = _discount_plan(
            np.random.default_rng((self.seed, DISCOUNT_STREAM, row)), np.array([n_lines])
        )
        disc_line = off + int(position[0]) if position[0] >= 0 else -1
        amounts = np.array([unit * qty for unit, qty, _ in drawn], dtype=np.int64)
        _, line_tax, subtotal, discount, total = _invoice_amounts(
            amounts,
            np.array([0]),
            np.zeros(n_lines, dtype=np.int64),
            np.full(n_lines, cur),
            np.array([position[0]]),
            item_pct,
            inv_pct,
        )
        for (unit, qty, product), tax in zip(drawn, line_tax.tolist(), strict=True):
            self.lines.append(invoice=row, amount=unit * qty, tax=tax, unit=unit, qty=qty, product=product)
        ev_created = self._emit("invoice.created", row, at)
        ev_fin = NEVER if draft else self._emit("invoice.finalized", row, at)
        self.invoices.append(
            created=at,
            customer=cust,
            currency=cur,
            line_off=off,
            n_lines=n_lines,
            subtotal=int(subtotal[0]),
            discount=int(discount[0]),
            total=int(total[0]),
            disc_line=disc_line,
            item_pct=int(item_pct[0]),
            inv_pct=int(inv_pct[0]),
            created_ev=ev_created,
            fin_ev=ev_fin,
            final_ev=NEVER,
            final_status=OPEN,
            charge=-1,
            cn_amount=0,
        )
        kind, events = ("new_draft_invoice", [ev_created]) if draft else ("new_invoice", [ev_created, ev_fin])
        return {"kind": kind, "id": self.ids.encode("in", row), "events": events}

    def _delete_customer(
        self, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        rows = self._candidates("customers", lambda: np.arange(self.customers.n))

        def ok(i: int) -> bool:
            return (
                (CUSTOMER, i) not in touched
                and not self.is_deleted(CUSTOMER, i)
                and self.customers.created[i] <= at
            )

        return self._delete(CUSTOMER, self._pick(rng, rows, ok), at, "delete_customer", touched)

    def _delete_draft_invoice(
        self, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        return self._delete(INVOICE, self._pick_draft(rng, at, touched), at, "delete_draft_invoice", touched)

    def _finalize_draft_invoice(
        self, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        """A draft finalized at `at`, however long after its creation (its `effective_at` is then)."""
        row = self._pick_draft(rng, at, touched)
        if row is None:
            return None
        touched.add((INVOICE, row))
        ev = self._emit("invoice.finalized", row, at)
        self.invoices.fin_ev[row] = ev
        self._touch(INVOICE, row)
        return {"kind": "finalize_draft_invoice", "id": self.ids.encode("in", row), "events": [ev]}

    def _pick_draft(self, rng: random.Random, at: int, touched: set[tuple[int, int]]) -> int | None:
        drafts = self._candidates("draft", lambda: np.flatnonzero(self.current_invoice_status() == DRAFT))

        def ok(i: int) -> bool:
            free = (INVOICE, i) not in touched and not self.is_deleted(INVOICE, i)
            return free and self.invoice_status(i) == DRAFT and self.invoices.created[i] <= at

        return self._pick(rng, drafts, ok)

    def _delete(
        self, res: int, row: int | None, at: int, kind: str, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        if row is None:
            return None
        touched.add((res, row))
        ev = self._emit(f"{OBJECT_NAME[res]}.deleted", row, at)
        self.deleted[res][row] = ev
        self._touch(res, row)
        return {"kind": kind, "id": self.ids.encode(PREFIX[res], row), "events": [ev]}

    def _candidates(self, key: str, compute: Callable[[], np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        """Candidate rows, computed once per `mutate` call; `_pick` re-checks each row's current state."""
        found = self._cands.get(key)
        if found is None:
            found = self._cands[key] = compute()
        return found

    def _pick(
        self, rng: random.Random, candidates: np.ndarray[Any, Any], ok: Callable[[int], bool]
    ) -> int | None:
        for _ in range(32):
            if not len(candidates):
                return None
            row = int(candidates[rng.randrange(len(candidates))])
            if ok(row):
                return row
        return None

    def _close_invoice(
        self, rng: random.Random, at: int, kind: str, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        open_rows = self._candidates("open", lambda: np.flatnonzero(self.current_invoice_status() == OPEN))

        def ok(i: int) -> bool:  # open now, and already finalized at `at` (mutations may be back-dated)
            free = (INVOICE, i) not in touched and self.invoice_status(i) == OPEN
            return free and self.events.created[self.invoices.fin_ev[i]] <= at

        row = self._pick(rng, open_rows, ok)
        if row is None:
            return None
        touched.add((INVOICE, row))
        inv = self.invoices
        events = []
        if kind == "pay_invoice":
            c = self.charges.n
            ev_ch = self._emit("charge.succeeded", c, at)
            self.charges.append(
                created=at,
                invoice=row,
                currency=int(inv.currency[row]),
                amount=int(inv.total[row]),
                refunded=0,
                created_ev=ev_ch,
            )
            touched.add((CHARGE, c))
            inv.charge[row] = c
            events.append(ev_ch)
            ev = self._emit("invoice.paid", row, at)
            status = PAID
        elif kind == "void_invoice":
            ev, status = self._emit("invoice.voided", row, at), VOID
        else:
            ev, status = self._emit("invoice.marked_uncollectible", row, at), UNCOLLECTIBLE
        inv.final_ev[row] = ev
        inv.final_status[row] = status
        self._touch(INVOICE, row)
        events.append(ev)
        return {"kind": kind, "id": self.ids.encode("in", row), "events": events}

    def _refund(
        self, rng: random.Random, at: int, full: bool, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        ch = self.charges
        rows = self._candidates("refundable", lambda: np.flatnonzero(ch.refunded.v < ch.amount.v))
        c = self._pick(
            rng,
            rows,
            lambda i: (CHARGE, i) not in touched and ch.refunded[i] < ch.amount[i] and ch.created[i] <= at,
        )
        if c is None:
            return None
        touched.add((CHARGE, c))
        remaining = int(ch.amount[c]) - int(ch.refunded[c])
        amount = remaining if full or remaining < 2 else rng.randrange(1, remaining)
        r = self.refunds.n
        ev_ref = self._emit("refund.created", r, at)
        ev_ch = self._emit("charge.refunded", c, at)
        self.refunds.append(
            created=at,
            charge=c,
            currency=int(ch.currency[c]),
            amount=amount,
            created_ev=ev_ref,
            charge_ev=ev_ch,
        )
        ch.refunded[c] = int(ch.refunded[c]) + amount
        self.charge_refunds.setdefault(c, []).append(r)
        self._touch(CHARGE, c)
        kind = "refund_full" if amount == remaining else "refund_partial"
        return {
            "kind": kind,
            "id": self.ids.encode("re", r),
            "charge": self.ids.encode("ch", c),
            "events": [ev_ref, ev_ch],
        }

    def _credit_note(
        self, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        inv = self.invoices
        paid = self._candidates(
            "creditable",
            lambda: np.flatnonzero((self.current_invoice_status() == PAID) & (inv.cn_amount.v < inv.total.v)),
        )

        def ok(i: int) -> bool:
            return (
                (INVOICE, i) not in touched
                and self.invoice_status(i) == PAID
                and inv.cn_amount[i] < inv.total[i]
                and self.events.created[inv.final_ev[i]] <= at
            )

        row = self._pick(rng, paid, ok)
        if row is None:
            return None
        touched.add((INVOICE, row))
        available = int(inv.total[row]) - int(inv.cn_amount[row])
        amount = max(1, available * rng.randrange(10, 101) // 100)
        c = self.credit_notes.n
        ev_cn = self._emit("credit_note.created", c, at)
        ev_inv = self._emit("invoice.updated", row, at)
        self.credit_notes.append(
            created=at,
            invoice=row,
            currency=int(inv.currency[row]),
            amount=amount,
            created_ev=ev_cn,
            inv_ev=ev_inv,
            void_ev=NEVER,
            inv_void_ev=NEVER,
        )
        inv.cn_amount[row] = int(inv.cn_amount[row]) + amount
        self.invoice_cns.setdefault(row, []).append(c)
        self._touch(INVOICE, row)
        return {
            "kind": "credit_note",
            "id": self.ids.encode("cn", c),
            "invoice": self.ids.encode("in", row),
            "events": [ev_cn, ev_inv],
        }

    def _void_credit_note(
        self, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        cn = self.credit_notes
        issued = self._candidates("issued_cn", lambda: np.flatnonzero(cn.void_ev.v == NEVER))

        def ok(c: int) -> bool:
            free = (CREDIT_NOTE, c) not in touched and (INVOICE, int(cn.invoice[c])) not in touched
            return free and cn.void_ev[c] == NEVER and cn.created[c] <= at

        c = self._pick(rng, issued, ok)
        if c is None:
            return None
        row = int(cn.invoice[c])
        touched.update({(CREDIT_NOTE, c), (INVOICE, row)})
        ev_cn = self._emit("credit_note.voided", c, at)
        ev_inv = self._emit("invoice.updated", row, at)
        cn.void_ev[c] = ev_cn
        cn.inv_void_ev[c] = ev_inv
        self.invoices.cn_amount[row] = int(self.invoices.cn_amount[row]) - int(cn.amount[c])
        self._touch(CREDIT_NOTE, c)
        self._touch(INVOICE, row)
        return {
            "kind": "void_credit_note",
            "id": self.ids.encode("cn", c),
            "invoice": self.ids.encode("in", row),
            "events": [ev_cn, ev_inv],
        }

    def _order_change(self, rng: random.Random, at: int, new: bool) -> dict[str, Any] | None:
        orders = self.orders
        if new:
            cust = rng.randrange(self.customers.n)
            cur = int(self.customers.currency[cust])
            total = rng.randrange(int(UNIT_LO[cur]), int(UNIT_HI[cur]) * 3)
            o = orders.append(created=at, updated=at, customer=cust, currency=cur, state=0, total=total)
        else:
            movable = self._candidates("movable_orders", lambda: np.flatnonzero(orders.state.v <= 2))
            picked = self._pick(rng, movable, lambda o: bool(orders.state[o] <= 2))
            if picked is None:
                return None
            o = picked
            orders.state[o] = rng.choice(ORDER_NEXT[int(orders.state[o])])
            orders.updated[o] = at
            self.orders_index.invalidate()
        self._touch(ORDER, o)
        return {
            "kind": "new_order" if new else "update_order",
            "id": f"ord_{self.ids.tag}{o:08d}",
            "events": [],
        }

    MUTATION_WEIGHTS = (
        ("pay_invoice", 25),
        ("void_invoice", 6),
        ("mark_uncollectible", 4),
        ("refund_full", 6),
        ("refund_partial", 10),
        ("credit_note", 8),
        ("void_credit_note", 3),
        ("new_customer", 8),
        ("new_invoice", 20),
        ("update_order", 6),
        ("new_order", 4),
    )
    # Only when asked for by name (`kinds`): the default mix, and what a seed produces, stay as they were.
    EXPLICIT_MUTATIONS = (
        ("new_draft_invoice", 10),
        ("finalize_draft_invoice", 10),
        ("delete_draft_invoice", 10),
        ("delete_customer", 5),
    )

    def mutate(self, n: int, at: int | None = None, kinds: list[str] | None = None) -> dict[str, Any]:
        """Apply `n` realistic changes at unix time `at` (default now); deterministic per seed and call."""
        if n < 0 or n > 1_000_000:
            raise ValueError("n must be between 0 and 1,000,000")
        at = int(time.time()) if at is None else int(at)
        choices = [k for k, _ in self.MUTATION_WEIGHTS]
        weights = [w for _, w in self.MUTATION_WEIGHTS]
        if kinds:
            every = (*self.MUTATION_WEIGHTS, *self.EXPLICIT_MUTATIONS)
            unknown = set(kinds) - {k for k, _ in every}
            if unknown:
                raise ValueError(f"unknown mutation kinds: {sorted(unknown)}")
            choices = [k for k, _ in every]
            weights = [w if k in kinds else 0 for k, w in every]
        rng = random.Random(f"{self.seed}:{self.mutation_calls}")
        self.mutation_calls += 1
        touched: set[tuple[int, int]] = set()
        self._cands = {}
        applied = []
        for _ in range(n):
            kind = rng.choices(choices, weights=weights)[0]
            change = self._apply(kind, rng, at, touched)
            if change is None:
                touched.add((INVOICE, self.invoices.n))
                change = self._new_invoice(rng, at)
            change["events"] = [self.ids.encode("evt", e) for e in change["events"]]
            applied.append(change)
        counts: dict[str, int] = {}
        for change in applied:
            counts[change["kind"]] = counts.get(change["kind"], 0) + 1
        return {"at": at, "applied": applied, "counts": counts}

    def _apply(
        self, kind: str, rng: random.Random, at: int, touched: set[tuple[int, int]]
    ) -> dict[str, Any] | None:
        if kind in ("pay_invoice", "void_invoice", "mark_uncollectible"):
            return self._close_invoice(rng, at, kind, touched)
        if kind in ("refund_full", "refund_partial"):
            return self._refund(rng, at, kind == "refund_full", touched)
        if kind == "credit_note":
            return self._credit_note(rng, at, touched)
        if kind == "void_credit_note":
            return self._void_credit_note(rng, at, touched)
        if kind == "new_customer":
            return self._new_customer(rng, at)
        if kind == "new_draft_invoice":
            touched.add((INVOICE, self.invoices.n))
            return self._new_invoice(rng, at, draft=True)
        if kind == "finalize_draft_invoice":
            return self._finalize_draft_invoice(rng, at, touched)
        if kind == "delete_draft_invoice":
            return self._delete_draft_invoice(rng, at, touched)
        if kind == "delete_customer":
            return self._delete_customer(rng, at, touched)
        if kind == "new_invoice":
            touched.add((INVOICE, self.invoices.n))  # one change per object per call
            return self._new_invoice(rng, at)
        return self._order_change(rng, at, kind == "new_order")

    # ------------------------------------------------------------------ truth
    @staticmethod
    def _group(
        currency: np.ndarray[Any, Any],
        status: np.ndarray[Any, Any],
        names: tuple[str, ...],
        **amounts: np.ndarray[Any, Any],
    ) -> dict[str, dict[str, dict[str, int]]]:
        width = len(names)
        key = currency.astype(np.int64) * width + status.astype(np.int64)
        size = len(CURRENCIES) * width
        counts = np.bincount(key, minlength=size)
        sums = {}
        for field, values in amounts.items():
            acc = np.zeros(size, dtype=np.int64)
            np.add.at(acc, key, values.astype(np.int64))
            sums[field] = acc
        out: dict[str, dict[str, dict[str, int]]] = {}
        for k in np.flatnonzero(counts).tolist():
            group = {"count": int(counts[k])}
            group.update({field: int(acc[k]) for field, acc in sums.items()})
            out.setdefault(CURRENCIES[k // width], {})[names[k % width]] = group
        return out

    def totals(self) -> dict[str, Any]:
        """Counts and sums in minor units per resource, currency and status (ints, never floats)."""
        inv, ch, ref, cn, orders = self.invoices, self.charges, self.refunds, self.credit_notes, self.orders
        live_customers = self._alive(CUSTOMER, self.customers.n)
        live = self._alive(INVOICE, inv.n)  # deleted (draft) invoices are gone, with their lines
        live_lines = live[self.lines.invoice.v]
        status = self.current_invoice_status()[live]
        total = inv.total.v[live]
        paid = np.where(status == PAID, total, 0)
        line_cur = inv.currency.v[self.lines.invoice.v][live_lines]
        return {
            "customers": self._group(
                self.customers.currency.v[live_customers],
                np.zeros(int(live_customers.sum()), np.int8),
                ("all",),
            ),
            "invoices": self._group(
                inv.currency.v[live],
                status,
                INVOICE_STATUSES,
                total=total,
                amount_paid=paid,
                amount_remaining=total - paid,
                post_payment_credit_notes_amount=inv.cn_amount.v[live],
            ),
            "invoice_lines": self._group(
                line_cur,
                np.zeros(len(line_cur), np.int8),
                ("all",),
                amount=self.lines.amount.v[live_lines],
            ),
            "charges": self._group(
                ch.currency.v,
                np.zeros(ch.n, np.int8),
                ("succeeded",),
                amount=ch.amount.v,
                amount_refunded=ch.refunded.v,
            ),
            "refunds": self._group(
                ref.currency.v, np.zeros(ref.n, np.int8), ("succeeded",), amount=ref.amount.v
            ),
            "credit_notes": self._group(
                cn.currency.v, (cn.void_ev.v != NEVER).astype(np.int8), CN_STATUSES, total=cn.amount.v
            ),
            "orders": self._group(
                orders.currency.v, orders.state.v, ORDER_STATES, total_cents=orders.total.v
            ),
        }

    def counts(self) -> dict[str, int]:
        horizon = self.event_horizon()
        deleted_invoices = list(self.deleted[INVOICE])
        return {
            "customers": self.customers.n - len(self.deleted[CUSTOMER]),
            "invoices": self.invoices.n - len(deleted_invoices),
            "invoice_lines": self.lines.n - int(self.invoices.n_lines.v[deleted_invoices].sum()),
            "charges": self.charges.n,
            "refunds": self.refunds.n,
            "credit_notes": self.credit_notes.n,
            "events": self.events.n,
            "events_listable": int(np.count_nonzero(self.events.created.v >= horizon)),
            "orders": self.orders.n,
        }

    def truth(self, objects: bool = True) -> dict[str, Any]:
        """Ground truth. Objects (as pre-serialised JSON fragments) are newest first per resource;
        invoices carry every line under `all_lines`."""
        out: dict[str, Any] = {
            "seed": self.seed,
            "anchor": self.anchor,
            "counts": self.counts(),
            "totals": self.totals(),
        }
        if objects:
            objs: dict[str, Any] = {}
            for res in (CUSTOMER, INVOICE, CHARGE, REFUND, CREDIT_NOTE):
                order = self.index[res].order
                objs[RESOURCE_NAMES[res]] = [
                    orjson.Fragment(self.json(res, int(r)))
                    for r in order[::-1]
                    if not self.is_deleted(res, int(r))
                ]
            objs["invoice_lines"] = {
                self.ids.encode("in", i): [
                    orjson.Fragment(orjson.dumps(self.render_line(j)))
                    for j in range(
                        int(self.invoices.line_off[i]),
                        int(self.invoices.line_off[i] + self.invoices.n_lines[i]),
                    )
                ]
                for i in range(self.invoices.n)
                if not self.is_deleted(INVOICE, i)
            }
            objs["orders"] = [orjson.Fragment(self.json(ORDER, o)) for o in range(self.orders.n)]
            out["objects"] = objs
        return out
