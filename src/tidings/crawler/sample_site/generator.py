"""Deterministic listing data for the sample property site.

The site has three locations and 60 listings (ids 1-60): Amsterdam (ids 1-25, prices in EUR written
the Dutch way, ``€ 1.250.000,-``), London (ids 26-45, ``£1,250,000``) and Boston (ids 46-60,
``$350,000``, areas in square feet). Location pages show :data:`PAGE_SIZE` listings per page, so
there are 3 + 2 + 2 = 7 listing pages.

Nothing here is random: every value derives from the listing id through SHA-256, so two calls (or two
machines, or two Python versions) produce identical data.

Twelve listings are deliberately malformed (see :data:`DEFECTS`); each :class:`Defect` has a designed
:class:`Outcome` -- parsed leniently, skipped with a logged reason, or unreachable (the detail page
is a 404). :meth:`Listing.expected` is the answer key: what a correct spider extracts.

``price_version`` changes the price of every 5th listing (ids 5, 10, ..., 60: :func:`price_changed_ids`)
by a compounding +5 % or -4 % per version; everything else is identical between versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from functools import cache

PAGE_SIZE = 10
"""Listings per location page."""

PRICE_CHANGE_EVERY = 5
"""Listings whose id is a multiple of this change price between price versions."""

SQFT_TO_M2 = Decimal("0.09290304")


class AreaUnit(StrEnum):
    """How a location writes floor areas."""

    M2 = "m²"
    SQ_M = "sq m"
    SQ_FT = "sq ft"


@dataclass(frozen=True, slots=True)
class Location:
    """A city of the sample site."""

    slug: str
    name: str
    currency: str
    listing_count: int
    neighbourhoods: tuple[str, ...]
    price_range: tuple[int, int]
    area_range: tuple[int, int]
    area_unit: AreaUnit

    @property
    def page_count(self) -> int:
        """Number of listing pages for this location."""
        return -(-self.listing_count // PAGE_SIZE)


LOCATIONS: tuple[Location, ...] = (
    Location(
        "amsterdam",
        "Amsterdam",
        "EUR",
        25,
        ("De Pijp", "Jordaan", "Oud-West", "Oost", "Noord"),
        (295_000, 1_650_000),
        (38, 190),
        AreaUnit.M2,
    ),
    Location(
        "london",
        "London",
        "GBP",
        20,
        ("Camden", "Hackney", "Islington", "Brixton", "Greenwich"),
        (375_000, 2_400_000),
        (32, 175),
        AreaUnit.SQ_M,
    ),
    Location(
        "boston",
        "Boston",
        "USD",
        15,
        ("Back Bay", "Beacon Hill", "South End", "Dorchester", "Charlestown"),
        (250_000, 1_900_000),
        (450, 3_400),
        AreaUnit.SQ_FT,
    ),
)


class Defect(StrEnum):
    """Ways a listing's detail page is deliberately broken."""

    MISSING_TITLE = "missing_title"  # no .title element at all
    BLANK_TITLE = "blank_title"  # .title present but only whitespace
    PRICE_ON_REQUEST = "price_on_request"  # .price says "Price on request"
    MISSING_PRICE = "missing_price"  # no .price element
    GARBAGE_PRICE = "garbage_price"  # letter O instead of a zero: "€ 1.2O5.000,-"
    PRICE_WITH_TEXT = "price_with_text"  # "Offers over £650,000"
    NO_CURRENCY = "no_currency"  # "1.250.000": a number without a currency marker
    GARBAGE_BEDROOMS = "garbage_bedrooms"  # "ask the agent"
    GARBAGE_AREA = "garbage_area"  # "-- m²"
    MISSING_LOCATION = "missing_location"  # no .location on the detail page (the card has one)
    MESSY_TITLE = "messy_title"  # title split by tags, newlines and runs of spaces
    BROKEN_DETAIL_PAGE = "broken_detail_page"  # listed on its location page, detail page is a 404


class Outcome(StrEnum):
    """What the spider is designed to do with a listing."""

    OK = "ok"  # well-formed: an item with every field
    LENIENT = "lenient"  # malformed but parsed leniently: an item, some fields None or repaired
    SKIPPED = "skipped"  # no item; the spider logs and reports the reason
    UNREACHABLE = "unreachable"  # no item; the detail request fails (HTTP 404), reported as an error


DEFECT_OUTCOMES: dict[Defect, Outcome] = {
    Defect.MISSING_TITLE: Outcome.SKIPPED,
    Defect.BLANK_TITLE: Outcome.SKIPPED,
    Defect.PRICE_ON_REQUEST: Outcome.LENIENT,
    Defect.MISSING_PRICE: Outcome.LENIENT,
    Defect.GARBAGE_PRICE: Outcome.LENIENT,
    Defect.PRICE_WITH_TEXT: Outcome.LENIENT,
    Defect.NO_CURRENCY: Outcome.LENIENT,
    Defect.GARBAGE_BEDROOMS: Outcome.LENIENT,
    Defect.GARBAGE_AREA: Outcome.LENIENT,
    Defect.MISSING_LOCATION: Outcome.LENIENT,
    Defect.MESSY_TITLE: Outcome.LENIENT,
    Defect.BROKEN_DETAIL_PAGE: Outcome.UNREACHABLE,
}

SKIP_REASON_MISSING_TITLE = "missing title"
"""The reason the spider gives for skipping a listing without a title."""

# No defect sits on a multiple of PRICE_CHANGE_EVERY, so every price change is observable.
DEFECTS: dict[int, Defect] = {
    3: Defect.MISSING_TITLE,
    7: Defect.PRICE_ON_REQUEST,
    12: Defect.GARBAGE_PRICE,
    18: Defect.NO_CURRENCY,
    24: Defect.GARBAGE_AREA,
    28: Defect.BLANK_TITLE,
    33: Defect.MISSING_PRICE,
    37: Defect.PRICE_WITH_TEXT,
    41: Defect.MISSING_LOCATION,
    47: Defect.GARBAGE_BEDROOMS,
    53: Defect.BROKEN_DETAIL_PAGE,
    58: Defect.MESSY_TITLE,
}

_ADJECTIVES = ("Bright", "Spacious", "Charming", "Renovated", "Quiet", "Modern", "Cosy", "Elegant", "Sunny")
_KINDS = ("apartment", "townhouse", "loft", "maisonette", "house", "flat")
_EUR_FORMS = ("€ {n},-", "€ {n}", "EUR {n}")
_GBP_FORMS = ("£{n}", "£ {n}", "GBP {n}")
_USD_FORMS = ("${n}", "USD {n}", "$ {n}.00")


def _h(listing_id: int, salt: str) -> int:
    digest = hashlib.sha256(f"tidings-sample:{listing_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _group(n: int, sep: str) -> str:
    return f"{n:,}".replace(",", sep)


@dataclass(frozen=True, slots=True)
class ExpectedItem:
    """What a correct spider extracts from a listing's detail page (the answer key)."""

    title: str
    price: Decimal | None
    currency: str | None
    location: str | None
    bedrooms: int | None
    area_m2: float | None


@dataclass(frozen=True, slots=True)
class Listing:
    """One property listing of the sample site."""

    id: int
    location: Location
    neighbourhood: str
    base_price: Decimal
    bedrooms: int
    area: int  # in location.area_unit
    adjective: str
    kind: str
    defect: Defect | None

    # --- identity -------------------------------------------------------------------------------
    @property
    def detail_path(self) -> str:
        """Path of the detail page, relative to the site root."""
        return f"listing/{self.id}.html"

    @property
    def outcome(self) -> Outcome:
        """The designed spider outcome for this listing."""
        return Outcome.OK if self.defect is None else DEFECT_OUTCOMES[self.defect]

    @property
    def price_changes(self) -> bool:
        """Whether this listing's price depends on the price version."""
        return self.id % PRICE_CHANGE_EVERY == 0

    # --- clean values ---------------------------------------------------------------------------
    @property
    def title(self) -> str:
        """The listing's clean title (what a spider should extract when there is one)."""
        rooms = "studio" if self.bedrooms == 0 else f"{self.bedrooms}-bedroom {self.kind}"
        return f"{self.adjective} {rooms} in {self.neighbourhood}"

    @property
    def location_text(self) -> str:
        """Location as displayed: ``"<neighbourhood>, <city>"``."""
        return f"{self.neighbourhood}, {self.location.name}"

    def price(self, price_version: int = 0) -> Decimal:
        """Asking price for the given price version (whole currency units)."""
        if not self.price_changes or price_version == 0:
            return self.base_price
        factor = Decimal("1.05") if (self.id // PRICE_CHANGE_EVERY) % 2 else Decimal("0.96")
        raw = self.base_price * factor**price_version
        return (raw / 1000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * 1000

    @property
    def area_m2(self) -> float:
        """Floor area in square metres (square feet converted, rounded to 0.1)."""
        if self.location.area_unit is AreaUnit.SQ_FT:
            return float((self.area * SQFT_TO_M2).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN))
        return float(self.area)

    # --- what the pages show --------------------------------------------------------------------
    def title_html(self) -> str | None:
        """Inner HTML of the detail page's ``.title`` element; None when the element is missing."""
        if self.defect is Defect.MISSING_TITLE:
            return None
        if self.defect is Defect.BLANK_TITLE:
            return "  \n  "
        if self.defect is Defect.MESSY_TITLE:
            words = self.title.split(" ")
            first, middle, last = words[0], " ".join(words[1:-2]), " ".join(words[-2:])
            return f"\n    <em>{first}</em>\n\n   {middle.replace(' ', '   ')}   <b>{last}</b>  "
        return self.title

    def price_text(self, price_version: int = 0) -> str | None:
        """Text of the ``.price`` element; None when the element is missing."""
        amount = int(self.price(price_version))
        if self.defect is Defect.MISSING_PRICE:
            return None
        if self.defect is Defect.PRICE_ON_REQUEST:
            return "Price on request"
        if self.defect is Defect.GARBAGE_PRICE:
            return "€ " + _group(amount, ".").replace("0", "O", 1) + ",-"
        if self.defect is Defect.NO_CURRENCY:
            return _group(amount, ".")
        if self.defect is Defect.PRICE_WITH_TEXT:
            return f"Offers over £{_group(amount, ',')}"
        currency = self.location.currency
        if currency == "EUR":
            return _EUR_FORMS[self.id % 3].format(n=_group(amount, "."))
        if currency == "GBP":
            return _GBP_FORMS[self.id % 3].format(n=_group(amount, ","))
        return _USD_FORMS[self.id % 3].format(n=_group(amount, ","))

    def bedrooms_text(self) -> str:
        """Text of the ``.bedrooms`` element."""
        if self.defect is Defect.GARBAGE_BEDROOMS:
            return "ask the agent"
        if self.bedrooms == 0:
            return "Studio"
        return f"{self.bedrooms} bedroom{'s' if self.bedrooms != 1 else ''}"

    def area_text(self) -> str:
        """Text of the ``.area`` element."""
        unit = self.location.area_unit
        if self.defect is Defect.GARBAGE_AREA:
            return f"-- {unit}"
        return f"{_group(self.area, ',')} {unit}"

    @property
    def shows_location(self) -> bool:
        """Whether the detail page has a ``.location`` element."""
        return self.defect is not Defect.MISSING_LOCATION

    @property
    def has_detail_page(self) -> bool:
        """Whether the detail page exists (False: the site answers 404)."""
        return self.defect is not Defect.BROKEN_DETAIL_PAGE

    # --- answer key -----------------------------------------------------------------------------
    def expected(self, price_version: int = 0) -> ExpectedItem | None:
        """What a correct spider yields for this listing; None when it yields no item."""
        if self.outcome in (Outcome.SKIPPED, Outcome.UNREACHABLE):
            return None
        price: Decimal | None = self.price(price_version)
        currency: str | None = self.location.currency
        if self.defect in (Defect.PRICE_ON_REQUEST, Defect.MISSING_PRICE, Defect.GARBAGE_PRICE):
            price, currency = None, None
        elif self.defect is Defect.NO_CURRENCY:
            currency = None
        elif self.defect is Defect.PRICE_WITH_TEXT:
            currency = "GBP"
        return ExpectedItem(
            title=self.title,
            price=price,
            currency=currency,
            # MISSING_LOCATION: the spider falls back to the location shown on the listing card.
            location=self.location_text,
            bedrooms=None if self.defect is Defect.GARBAGE_BEDROOMS else self.bedrooms,
            area_m2=None if self.defect is Defect.GARBAGE_AREA else self.area_m2,
        )

    @property
    def skip_reason(self) -> str | None:
        """The reason the spider gives when skipping this listing, if it does."""
        if self.outcome is Outcome.SKIPPED:
            return SKIP_REASON_MISSING_TITLE
        return None


def _make_listing(listing_id: int, location: Location) -> Listing:
    lo, hi = location.price_range
    steps = (hi - lo) // 5_000
    price = lo + (_h(listing_id, "price") % (steps + 1)) * 5_000
    area_lo, area_hi = location.area_range
    area = area_lo + _h(listing_id, "area") % (area_hi - area_lo + 1)
    if location.area_unit is AreaUnit.SQ_FT:
        area = area // 10 * 10
    return Listing(
        id=listing_id,
        location=location,
        neighbourhood=location.neighbourhoods[_h(listing_id, "hood") % len(location.neighbourhoods)],
        base_price=Decimal(price),
        bedrooms=_h(listing_id, "beds") % 6,
        area=area,
        adjective=_ADJECTIVES[_h(listing_id, "adj") % len(_ADJECTIVES)],
        kind=_KINDS[_h(listing_id, "kind") % len(_KINDS)],
        defect=DEFECTS.get(listing_id),
    )


@cache
def generate_listings() -> tuple[Listing, ...]:
    """All 60 listings, ordered by id (ids are 1-based and contiguous)."""
    listings: list[Listing] = []
    for location in LOCATIONS:
        for _ in range(location.listing_count):
            listings.append(_make_listing(len(listings) + 1, location))
    return tuple(listings)


def get_location(slug: str) -> Location | None:
    """The location with this slug, or None."""
    return next((loc for loc in LOCATIONS if loc.slug == slug), None)


def get_listing(listing_id: int) -> Listing | None:
    """The listing with this id, or None."""
    listings = generate_listings()
    return listings[listing_id - 1] if 1 <= listing_id <= len(listings) else None


def listings_for(location: Location) -> tuple[Listing, ...]:
    """The listings of one location, ordered by id."""
    return tuple(item for item in generate_listings() if item.location.slug == location.slug)


def listing_page(location: Location, page: int) -> tuple[Listing, ...] | None:
    """Listings on page ``page`` (1-based) of a location; None when the page does not exist."""
    if not 1 <= page <= location.page_count:
        return None
    start = (page - 1) * PAGE_SIZE
    return listings_for(location)[start : start + PAGE_SIZE]


def iter_pages() -> Iterator[tuple[Location, int]]:
    """Every (location, page number) pair of the site."""
    for location in LOCATIONS:
        for page in range(1, location.page_count + 1):
            yield location, page


def price_changed_ids(price_version: int, base_version: int = 0) -> frozenset[int]:
    """Ids of the listings whose price differs between two price versions."""
    return frozenset(item.id for item in generate_listings() if item.price(price_version) != item.price(base_version))


@dataclass(frozen=True, slots=True)
class SiteSummary:
    """Counts describing the generated site."""

    total: int
    well_formed: int
    malformed: int
    lenient: int
    skipped: int
    unreachable: int
    items_expected: int
    price_changing: int
    pages: int


def summary() -> SiteSummary:
    """Counts of listings by outcome (the numbers the tests assert)."""
    listings = generate_listings()

    def count(outcome: Outcome) -> int:
        return sum(1 for item in listings if item.outcome is outcome)

    return SiteSummary(
        total=len(listings),
        well_formed=count(Outcome.OK),
        malformed=sum(1 for item in listings if item.defect is not None),
        lenient=count(Outcome.LENIENT),
        skipped=count(Outcome.SKIPPED),
        unreachable=count(Outcome.UNREACHABLE),
        items_expected=count(Outcome.OK) + count(Outcome.LENIENT),
        price_changing=sum(1 for item in listings if item.price_changes),
        pages=sum(loc.page_count for loc in LOCATIONS),
    )
