"""The spider's lenient field parsers and the item's JSON round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tidings.crawler.items import PropertyItem
from tidings.crawler.spiders.parsing import parse_area_m2, parse_bedrooms, parse_price


@pytest.mark.parametrize(
    "text, amount, currency",
    [
        ("€ 1.250.000,-", Decimal(1_250_000), "EUR"),
        ("€ 475.000", Decimal(475_000), "EUR"),
        ("EUR 1.185.000", Decimal(1_185_000), "EUR"),
        ("$350,000", Decimal(350_000), "USD"),
        ("$ 1,110,000.00", Decimal("1110000.00"), "USD"),
        ("USD 690,000", Decimal(690_000), "USD"),
        ("£ 2,365,000", Decimal(2_365_000), "GBP"),
        ("Offers over £650,000", Decimal(650_000), "GBP"),
        ("1.265.000", Decimal(1_265_000), None),
        ("€ 1.250,50", Decimal("1250.50"), "EUR"),
        ("Price on request", None, None),
        ("€ 1.2O5.000,-", None, None),
        ("", None, None),
        (None, None, None),
        ("call us", None, None),
    ],
)
def test_parse_price(text: str | None, amount: Decimal | None, currency: str | None) -> None:
    parsed = parse_price(text)
    assert parsed.amount == amount
    if amount is not None:
        assert parsed.currency == currency
    else:
        assert parsed.note


@pytest.mark.parametrize(
    "text, expected",
    [("3 bedrooms", 3), ("1 bedroom", 1), ("Studio", 0), ("ask the agent", None), ("", None), (None, None)],
)
def test_parse_bedrooms(text: str | None, expected: int | None) -> None:
    assert parse_bedrooms(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("85 m²", 85.0), ("85 sq m", 85.0), ("1,200 sq ft", 111.5), ("-- m²", None), ("", None), ("70", 70.0)],
)
def test_parse_area(text: str | None, expected: float | None) -> None:
    assert parse_area_m2(text) == expected


def test_item_json_round_trip_keeps_decimal_and_timezone() -> None:
    item = PropertyItem(
        url="http://x/listing/1.html",
        title="T",
        price=Decimal("1250000.50"),
        currency="EUR",
        bedrooms=2,
        area_m2=85.5,
        scraped_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    back = PropertyItem.from_json_dict(item.to_json_dict())
    assert back == item
    with pytest.raises(ValueError):
        PropertyItem.from_json_dict({"title": "no url"})
