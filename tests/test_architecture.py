"""The import rules of docs/architecture.md: the hub core imports no extra (users, Redis, platform) at import time.

Checked twice: statically (every module's top-level imports, ``TYPE_CHECKING`` blocks excluded; imports inside
functions are the lazy "only when used" kind) and at run time (a host app with its own ``authenticate`` loads
none of them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tidings"

#: Parts outside the hub core, each with the extra that brings its dependencies.
EXTRAS = {
    "tidings.users": "users",
    "tidings.db": "users",
    "tidings.migrations": "users",
    "tidings.broker.redis": "redis",  # and every tidings.broker.redis_* module
    "tidings.broker.keys": "redis",
    "tidings.publisher": "redis",
    "tidings.crawler": "platform",
    "tidings.app": "platform",
    "tidings.cli": "platform",
    "tidings.__main__": "platform",
    "tidings.web.routes": "platform",
    "tidings.durable_history": "platform",
}
#: Third-party packages of the extras (the core's are FastAPI, uvicorn, websockets, orjson, PyJWT, pydantic...).
EXTRA_PACKAGES = {
    "sqlalchemy": "users",
    "alembic": "users",
    "aiosqlite": "users",
    "asyncpg": "users",
    "pwdlib": "users",
    "argon2": "users",
    "multipart": "users",
    "redis": "redis",
    "celery": "platform",
    "kombu": "platform",
    "scrapy": "platform",
    "twisted": "platform",
    "httpx": "platform",
    "wsproto": "test",
}
#: What each extra may import besides the core: users may not import Redis or the platform, and so on.
ALLOWED = {"core": set(), "users": {"users"}, "redis": {"redis"}, "platform": {"users", "redis", "platform"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(name: str) -> str:
    """The extra a ``tidings`` module or a third-party package belongs to ('core' for the hub)."""
    if name.startswith("tidings"):
        for prefix, extra in EXTRAS.items():
            if (
                name == prefix
                or name.startswith(prefix + ".")
                or (name.startswith("tidings.broker.redis_")
                and prefix == "tidings.broker.redis")
            ):
                return extra
        return "core"
    return EXTRA_PACKAGES.get(name.split(".")[0], "core")


def top_level_imports(tree: ast.Module, module: str) -> set[str]:
    """Modules imported when ``module`` is imported (not under ``if TYPE_CHECKING:``, not inside functions)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".")[: -node.level] if module.count(".") >= node.level else []
                    base = ".".join([*package, base]) if base else ".".join(package)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if base.startswith("tidings"))
            elif isinstance(node, ast.If):
                test = node.test
                if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try | ast.With):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in SRC.rglob("*.py") if "migrations/versions" not in p.as_posix())


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_module_imports_follow_the_layers(module: str, path: Path) -> None:
    mine = part_of(module)
    allowed = {"core", mine, *ALLOWED.get(mine, set())}
    if mine == "test":
        return
    bad = sorted(
        name for name in top_level_imports(ast.parse(path.read_text()), module) if part_of(name) not in allowed
    )
    assert not bad, f"{module} ({mine}) imports {bad} at import time; see docs/architecture.md"


def test_a_host_app_with_its_own_authenticate_loads_no_extra(tmp_path: Path) -> None:
    """Build and start the hub with a host ``authenticate``: nothing of users, Redis or the platform is loaded,
    no file is written, nothing is printed."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from fastapi import FastAPI
        from tidings import Namespace, Tidings, UserInfo

        async def authenticate(conn):
            return UserInfo(id="u-1", username="ann")

        hub = Tidings(authenticate=authenticate)
        hub.namespace("orders", Namespace())
        app = FastAPI(lifespan=hub.lifespan)
        app.include_router(hub.router)

        async def main():
            async with hub.run():
                await hub.publish("orders:1", {"n": 1})

        asyncio.run(main())
        roots = {name.split(".")[0] for name in sys.modules}
        loaded = sorted(
            name for name in sys.modules
            if name.startswith(("tidings.crawler", "tidings.users", "tidings.db", "tidings.broker.redis",
                                "tidings.publisher", "tidings.migrations"))
        )
        loaded += sorted(roots & {"sqlalchemy", "alembic", "pwdlib", "argon2", "redis", "celery", "scrapy",
                                  "aiosqlite", "asyncpg", "multipart", "httpx"})
        print(",".join(loaded))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "", f"loaded without being used (or printed): {out.stdout.strip()}"
    assert out.stderr.strip() == "", out.stderr
    assert list(tmp_path.iterdir()) == []
