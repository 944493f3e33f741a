"""Scrapy spiders of Tidings (``SPIDER_MODULES = ["tidings.crawler.spiders"]``).

* ``listings`` -- :class:`~tidings.crawler.spiders.listings.ListingsSpider`, property listings with the
  sample site's markup.

Field parsers live in :mod:`~tidings.crawler.spiders.parsing` (pure functions, no Scrapy).
"""
