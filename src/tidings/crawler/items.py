"""The scraped property record, shared by the spiders (child process) and the runner (parent).

:class:`PropertyItem` is a plain dataclass (Scrapy accepts dataclass items through itemadapter), so
this module imports neither Scrapy nor Twisted. It travels between processes as JSON:
:meth:`PropertyItem.to_json_dict` / :meth:`PropertyItem.from_json_dict` keep the price exact (a
decimal string) and the timestamp timezone-aware (ISO 8601).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PropertyItem", "is_http_url"]

MAX_URL_LENGTH = 2048


def _utcnow() -> datetime:
    return datetime.now(UTC)


def is_http_url(value: object) -> bool:
    """Whether ``value`` is an absolute ``http(s)://host/...`` URL: the only kind stored as a property's link
    (a crawled page's ``javascript:`` or ``data:`` canonical link would otherwise be shown to every user)."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        return False
    if value != value.strip() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


@dataclass(slots=True)
class PropertyItem:
    """One property listing as scraped.

    ``url`` identifies the listing (the platform upserts by it). ``price`` is None when the site shows
    no usable price (``Price on request``, missing, garbage); ``currency`` is then None too.
    ``price_text`` keeps the price exactly as displayed, for auditing lenient parses.
    """

    url: str
    title: str
    price: Decimal | None = None
    currency: str | None = None
    location: str | None = None
    bedrooms: int | None = None
    area_m2: float | None = None
    scraped_at: datetime = field(default_factory=_utcnow)
    price_text: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (price as a decimal string, scraped_at as ISO 8601)."""
        return {
            "url": self.url,
            "title": self.title,
            "price": None if self.price is None else str(self.price),
            "currency": self.currency,
            "location": self.location,
            "bedrooms": self.bedrooms,
            "area_m2": self.area_m2,
            "scraped_at": self.scraped_at.isoformat(),
            "price_text": self.price_text,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> PropertyItem:
        """Rebuild an item from :meth:`to_json_dict` output; raises ValueError on bad data."""
        try:
            url, title = data["url"], data["title"]
        except KeyError as exc:
            raise ValueError(f"property item without {exc.args[0]!r}") from None
        if not isinstance(url, str) or not url or not isinstance(title, str):
            raise ValueError("property item url and title must be strings")
        if not is_http_url(url):
            raise ValueError(f"property item url must be an http(s) URL, not {url[:100]!r}")
        try:
            price = None if data.get("price") is None else Decimal(str(data["price"]))
        except InvalidOperation:
            raise ValueError(f"bad price {data.get('price')!r}") from None
        scraped_raw = data.get("scraped_at")
        scraped_at = datetime.fromisoformat(scraped_raw) if isinstance(scraped_raw, str) else _utcnow()
        if scraped_at.tzinfo is None:
            scraped_at = scraped_at.replace(tzinfo=UTC)
        bedrooms = data.get("bedrooms")
        area = data.get("area_m2")
        return cls(
            url=url,
            title=title,
            price=price,
            currency=data.get("currency"),
            location=data.get("location"),
            bedrooms=None if bedrooms is None else int(bedrooms),
            area_m2=None if area is None else float(area),
            scraped_at=scraped_at,
            price_text=data.get("price_text"),
        )
