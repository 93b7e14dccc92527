"""Kubernetes resource quantities as Decimal (k8s.io/apimachinery/pkg/api/resource semantics)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from aim_engine.domain.errors import InputError

_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")

GIB = Decimal(2**30)
MIB = Decimal(2**20)


def parse_quantity(value: object, *, field: str = "quantity") -> Decimal:
    """Parse a Kubernetes quantity ("500m", "64Gi", "1e3", 4) into a Decimal in base units."""
    if type(value) is str:  # first: how the API server writes every quantity (an inventory parses thousands)
        parsed = _parse_text(value)
        if parsed is None:
            raise InputError(f"{field}: {value!r} is not a Kubernetes quantity (examples: '500m', '16', '64Gi')")
        return parsed
    if isinstance(value, bool):
        raise InputError(f"{field}: expected a quantity such as '64Gi' or '16', got boolean {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise InputError(f"{field}: expected a quantity such as '64Gi' or '16', got {type(value).__name__}")
    parsed = _parse_text(value)
    if parsed is None:
        raise InputError(f"{field}: {value!r} is not a Kubernetes quantity (examples: '500m', '16', '64Gi')")
    return parsed


@lru_cache(maxsize=4096)
def _parse_text(value: str) -> Decimal | None:
    """The quantity a string spells, None when it spells none. Cached: a cluster's pods and nodes
    repeat a handful of quantities thousands of times, and a Decimal is immutable."""
    if value.isdigit():
        return Decimal(int(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        base = Decimal(number)
        if exponent:
            return base * (Decimal(10) ** int(exponent[1:]))
        return base * _SUFFIX[suffix or ""]
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None


def format_gib(value: Decimal | float) -> str:
    """Bytes as GiB with one decimal, for messages."""
    return f"{Decimal(value) / GIB:.1f} GiB"
