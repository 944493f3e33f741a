"""The browser fixtures, shared with tests/browser."""

from tests.browser.conftest import browser, new_page  # noqa: F401
