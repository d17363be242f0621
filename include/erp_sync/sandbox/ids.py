"""Stripe-looking object ids that encode the object's row, so a cursor is resolved in O(1).

`in_1SAbCd0000004F` = prefix, `1S`, a 4-character tag derived from the seed (ids from another
seed are rejected as unknown) and the row in base62, zero-padded to 8 characters."""

from __future__ import annotations

import hashlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
ROW_WIDTH = 8


def b62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, r = divmod(value, 62)
        chars.append(ALPHABET[r])
    if value:
        raise ValueError("value too large for width")
    return "".join(reversed(chars))


def seed_tag(seed: int) -> str:
    digest = int.from_bytes(hashlib.sha256(f"sandbox-seed:{seed}".encode()).digest()[:8], "big")
    return "1S" + b62(digest % 62**4, 4)


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # 62**2 two-character digits


def b62_row(value: int) -> str:
    """`b62(value, 8)` in four table look-ups (ids are rendered millions of times)."""
    q, d0 = divmod(value, 3844)
    q, d1 = divmod(q, 3844)
    q, d2 = divmod(q, 3844)
    if q >= 3844:
        raise ValueError("value too large for width")
    return _PAIRS[q] + _PAIRS[d2] + _PAIRS[d1] + _PAIRS[d0]


class IdCodec:
    def __init__(self, seed: int) -> None:
        self.tag = seed_tag(seed)
        self._heads: dict[str, str] = {}

    def encode(self, prefix: str, row: int) -> str:
        head = self._heads.get(prefix)
        if head is None:
            head = self._heads[prefix] = f"{prefix}_{self.tag}"
        return head + b62_row(row)

    def decode(self, prefix: str, object_id: str) -> int | None:
        """The row an id names, or None when it is not one of ours for this prefix."""
        head = f"{prefix}_{self.tag}"
        if not object_id.startswith(head) or len(object_id) != len(head) + ROW_WIDTH:
            return None
        row = 0
        for c in object_id[len(head) :]:
            v = _VALUE.get(c)
            if v is None:
                return None
            row = row * 62 + v
        return row
