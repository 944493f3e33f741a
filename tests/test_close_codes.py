"""The one close-code table: the server's codes, the clients' actions and the generated JavaScript agree."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tidings import codegen
from tidings.client import close_action as client_close_action
from tidings.close_codes import CLOSE_CODES, CloseAction, CloseCode, close_action, close_info, signs_out


def test_every_code_has_one_row() -> None:
    assert set(CLOSE_CODES) == set(CloseCode)
    assert all(row.meaning for row in CLOSE_CODES.values())


def test_token_expiry_is_one_code_everywhere() -> None:
    """The server closes an expired token with 4003; clients refresh the token or stop ("sign in again")."""
    assert CloseCode.TOKEN_EXPIRED == 4003
    assert close_action(4003) is CloseAction.REFRESH
    assert signs_out(4003, "Token expired")
    assert signs_out(1008, "Token expired") and signs_out(1008, "Invalid token")
    assert not signs_out(1008, "Origin not allowed")
    assert not signs_out(4500, "")


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1008, 1009, 1011, 1013, 4000, 4003, 4004, 4100, 4500, 4999, 3000])
def test_python_client_reads_the_table(code: int) -> None:
    assert client_close_action(code) == close_action(code).value


def test_ranges() -> None:
    assert close_action(4100) is CloseAction.RECONNECT
    assert close_action(4700) is CloseAction.TERMINAL
    assert close_info(3000) is None and close_action(3000) is CloseAction.RECONNECT


def test_generated_javascript_is_up_to_date() -> None:
    """`make generate` writes close-codes.js / .d.ts from the table; a hand edit or a new row fails here."""
    assert codegen.main(["--check"]) == 0, "run `make generate`"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_javascript_close_actions_match_python() -> None:
    """The generated JS module, run by node, answers like the Python table for every code and some reasons."""
    cases = [(code, reason) for code in [*map(int, CloseCode), 1005, 3000, 4100, 4500, 4999] for reason in ("", "x")]
    cases += [(1008, r) for r in ("Token expired", "Invalid token", "Origin not allowed", "Too many connections")]
    script = (
        "import { closeAction, signsOut } from './close-codes.js';"
        f"const cases = {json.dumps(cases)};"
        "console.log(JSON.stringify(cases.map(([c, r]) => [closeAction(c, r), signsOut(c, r)])));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=codegen.CLIENT_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    expected = [[close_action(c, r).value, signs_out(c, r)] for c, r in cases]
    assert json.loads(out) == expected
