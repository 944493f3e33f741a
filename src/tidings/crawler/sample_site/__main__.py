"""Command line: serve (or write) the sample property site.

``python -m tidings.crawler.sample_site --port 8765 [--host 127.0.0.1] [--price-version N]``
``python -m tidings.crawler.sample_site --price-version-file /tmp/pv``  (re-read on every request)
``python -m tidings.crawler.sample_site --write-static ./site [--price-version N]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tidings.crawler.sample_site.app import (
    PriceVersionSource,
    create_sample_site_app,
    price_version_from_file,
    write_static_site,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and serve the site with uvicorn, or write it as static files."""
    parser = argparse.ArgumentParser(
        prog="python -m tidings.crawler.sample_site", description="Serve the sample property site."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--price-version", type=int, default=0, help="price version to serve (default 0)")
    version.add_argument(
        "--price-version-file", metavar="PATH", help="read the price version from PATH on every request"
    )
    parser.add_argument("--write-static", metavar="DIR", help="write static files to DIR instead of serving")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)

    if args.write_static:
        if args.price_version_file:
            parser.error("--write-static takes --price-version, not --price-version-file")
        paths = write_static_site(args.write_static, price_version=args.price_version)
        print(f"wrote {len(paths)} files to {args.write_static}", file=sys.stderr)
        return 0

    import uvicorn

    source: PriceVersionSource = (
        price_version_from_file(args.price_version_file) if args.price_version_file else args.price_version
    )
    uvicorn.run(create_sample_site_app(source), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
