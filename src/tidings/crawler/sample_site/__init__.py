"""A deterministic sample property-listings website for crawling demos and tests.

* :mod:`~tidings.crawler.sample_site.generator` -- the listing data (60 listings in 3 locations, 12 of
  them deliberately malformed, 12 whose price changes with ``price_version``) and its answer key;
* :mod:`~tidings.crawler.sample_site.pages` -- HTML rendering with relative links;
* :mod:`~tidings.crawler.sample_site.app` -- :func:`create_sample_site_app` (ASGI, mountable under a
  prefix) and :func:`write_static_site`.

Serve it with ``python -m tidings.crawler.sample_site --port 8765 [--price-version N]``.
"""

from tidings.crawler.sample_site.app import create_sample_site_app, price_version_from_file, write_static_site
from tidings.crawler.sample_site.generator import (
    LOCATIONS,
    PAGE_SIZE,
    Defect,
    Listing,
    Outcome,
    generate_listings,
    price_changed_ids,
    summary,
)

__all__ = [
    "LOCATIONS",
    "PAGE_SIZE",
    "Defect",
    "Listing",
    "Outcome",
    "create_sample_site_app",
    "generate_listings",
    "price_changed_ids",
    "price_version_from_file",
    "summary",
    "write_static_site",
]
