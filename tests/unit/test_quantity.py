from decimal import Decimal

import pytest

from aim_engine.domain.errors import InputError
from aim_engine.domain.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", Decimal(8)),
        ("500m", Decimal("0.5")),
        ("64Gi", Decimal(64 * 2**30)),
        ("1e3", Decimal(1000)),
        ("1.5G", Decimal("1.5e9")),
        (4, Decimal(4)),
        ("128Mi", Decimal(128 * 2**20)),
        (".5", Decimal("0.5")),
    ],
)
def test_parses_kubernetes_quantities(text: object, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "1.2.3", "4 GB", "Gi", "10Xi", True, None, [1]])
def test_rejects_what_kubernetes_rejects(bad: object) -> None:
    with pytest.raises(InputError, match="quantity"):
        parse_quantity(bad, field="limits.memory")
