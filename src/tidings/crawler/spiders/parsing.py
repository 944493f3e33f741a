"""Lenient parsers for listing fields (pure functions, no Scrapy).

Prices come in many shapes: ``€ 1.250.000,-``, ``EUR 475.000``, ``£1,250,000``, ``$ 350,000.00``,
``Offers over £650,000``, ``Price on request``. :func:`parse_price` returns the amount as a
:class:`~decimal.Decimal` with its currency, or None with a note saying why. Separator rules:

* both ``.`` and ``,`` present: the last one is the decimal separator;
* one kind present several times: thousands separators;
* one occurrence followed by exactly three digits: a thousands separator (``475.000`` is 475000);
  otherwise a decimal separator (``12,5`` is 12.5).

A number glued to letters (``1.2O5.000`` with a letter O) is garbage: the price is None rather than a
wrong guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

SQFT_TO_M2 = Decimal("0.09290304")

_NUMBER = re.compile(r"\d(?:[\d.,'\u00a0\u202f ]*\d)?")
_CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP", "$": "USD"}
_CURRENCY_CODES = re.compile(r"\b(EUR|GBP|USD|CHF|SEK|NOK|DKK|PLN|CAD|AUD)\b", re.IGNORECASE)
_ON_REQUEST = (
    "on request",
    "upon request",
    "on application",
    "poa",
    "p.o.a",
    "contact agent",
    "call for price",
)
_SQFT = re.compile(r"(sq\.?\s*ft|sqft|ft²|ft2|square\s+f(ee|oo)t)", re.IGNORECASE)
_BEDROOMS = re.compile(r"^\s*(\d{1,2})\s*(?:bed(?:room)?s?|br|rooms?|slaapkamers?)?\b", re.IGNORECASE)


def clean_text(parts: Iterable[str] | str | None) -> str:
    """Join text nodes and collapse all whitespace runs to single spaces."""
    if parts is None:
        return ""
    text = parts if isinstance(parts, str) else " ".join(parts)
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class ParsedPrice:
    """Result of :func:`parse_price`. ``note`` explains a None amount (or a lenient parse)."""

    amount: Decimal | None
    currency: str | None
    note: str | None = None


def _tokens(text: str) -> list[re.Match[str]]:
    return list(_NUMBER.finditer(text))


def _glued_to_letters(text: str, match: re.Match[str]) -> bool:
    before = text[match.start() - 1] if match.start() > 0 else " "
    after = text[match.end()] if match.end() < len(text) else " "
    return before.isalpha() or after.isalpha()


def parse_number(token: str) -> Decimal | None:
    """Parse one numeric token with thousands/decimal separators (see the module docstring)."""
    raw = re.sub(r"[\s'\u00a0\u202f]", "", token)
    dots, commas = raw.count("."), raw.count(",")
    if dots and commas:
        decimal_sep = "." if raw.rfind(".") > raw.rfind(",") else ","
        thousands_sep = "," if decimal_sep == "." else "."
        if raw.count(decimal_sep) > 1:
            return None
        raw = raw.replace(thousands_sep, "").replace(decimal_sep, ".")
    elif dots or commas:
        sep = "." if dots else ","
        if raw.count(sep) > 1 or len(raw) - raw.rfind(sep) - 1 == 3:
            raw = raw.replace(sep, "")
        else:
            raw = raw.replace(sep, ".")
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


def detect_currency(text: str) -> str | None:
    """ISO code of the first currency symbol or code in ``text``, or None."""
    for symbol, code in _CURRENCY_SYMBOLS.items():
        if symbol in text:
            return code
    match = _CURRENCY_CODES.search(text)
    return match.group(1).upper() if match else None


def parse_price(text: str | None) -> ParsedPrice:
    """Parse a displayed price leniently; the amount is None (with a note) when it cannot be trusted."""
    if text is None:
        return ParsedPrice(None, None, "no price element")
    norm = clean_text(text)
    if not norm:
        return ParsedPrice(None, None, "empty price")
    lower = norm.lower()
    if any(phrase in lower for phrase in _ON_REQUEST):
        return ParsedPrice(None, None, "price on request")
    tokens = _tokens(norm)
    if not tokens:
        return ParsedPrice(None, None, f"no number in price {norm!r}")
    if any(_glued_to_letters(norm, token) for token in tokens):
        return ParsedPrice(None, None, f"unparseable price {norm!r}")
    amount = parse_number(tokens[0].group())
    if amount is None:
        return ParsedPrice(None, None, f"unparseable price {norm!r}")
    currency = detect_currency(norm)
    note = None
    if currency is None:
        note = "no currency in price"
    elif re.search(r"[^\W\d_]{3,}", _CURRENCY_CODES.sub("", norm)):
        note = f"price parsed from text {norm!r}"
    return ParsedPrice(amount, currency, note)


def parse_bedrooms(text: str | None) -> int | None:
    """``"3 bedrooms"`` -> 3, ``"Studio"`` -> 0, anything unparseable -> None."""
    norm = clean_text(text)
    if not norm:
        return None
    if norm.lower().startswith("studio"):
        return 0
    match = _BEDROOMS.match(norm)
    return int(match.group(1)) if match else None


def parse_area_m2(text: str | None) -> float | None:
    """Floor area in m² from ``"85 m²"``, ``"85 sq m"``, ``"1,200 sq ft"``...; None if no number.

    Square feet are converted and rounded to 0.1 m². A number without a unit is taken as m².
    """
    norm = clean_text(text)
    tokens = _tokens(norm)
    if not tokens:
        return None
    value = parse_number(tokens[0].group())
    if value is None:
        return None
    if _SQFT.search(norm):
        value = (value * SQFT_TO_M2).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return float(value)
