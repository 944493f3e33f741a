"""Property crawling for Tidings.

Sub-modules:

* :mod:`tidings.crawler.sample_site` -- a deterministic sample property-listings website (ASGI app,
  static-site writer and ``python -m tidings.crawler.sample_site`` server) used for demos and tests;
* :mod:`tidings.crawler.spiders` -- Scrapy spiders (``listings``) and their lenient field parsers;
* :mod:`tidings.crawler.items` -- :class:`~tidings.crawler.items.PropertyItem`, the scraped record;
* :mod:`tidings.crawler.runner` -- :func:`~tidings.crawler.runner.run_crawl` and
  :func:`~tidings.crawler.runner.arun_crawl`, which run a crawl in a child process and stream items
  back to the caller;
* :mod:`tidings.crawler.crawl_process` -- the child-process entry point and its JSON-lines reporter.

Importing this package (or :mod:`~tidings.crawler.runner` / :mod:`~tidings.crawler.items`) does not
import Scrapy or Twisted: only the child process does.
"""
