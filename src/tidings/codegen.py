"""Generate the JavaScript close-code module (and its type declarations) from :mod:`tidings.close_codes`.

``python -m tidings.codegen`` writes ``web/client/close-codes.js`` and ``web/client/close-codes.d.ts``;
``python -m tidings.codegen --check`` exits 1 when they differ from what the table gives (``make generate`` and
the test suite run them). The JS logic mirrors :func:`tidings.close_codes.close_action` and
:func:`~tidings.close_codes.signs_out` line for line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tidings.close_codes import CLOSE_CODES, CLOSE_RANGES, CloseAction, CloseCodeInfo

__all__ = ["CLIENT_DIR", "generated_files", "main", "render_close_codes_dts", "render_close_codes_js"]

CLIENT_DIR = Path(__file__).parent / "web" / "client"
HEADER = "// GENERATED from src/tidings/close_codes.py by `python -m tidings.codegen`: do not edit (make generate).\n"
ACTIONS = " | ".join(f"'{a.value}'" for a in CloseAction)


def _row(info: CloseCodeInfo) -> dict[str, object]:
    row: dict[str, object] = {
        "code": int(info.code),
        "name": info.name,
        "action": info.action.value,
        "meaning": info.meaning,
        "sentByServer": info.sent_by_server,
        "signIn": info.sign_in,
        "signInReasons": list(info.sign_in_reasons),
        "reasonActions": {reason: action.value for reason, action in info.reason_actions},
    }
    return row


def render_close_codes_js() -> str:
    """The text of ``close-codes.js``."""
    codes = ",\n".join(f"  {info.name}: {int(code)}" for code, info in CLOSE_CODES.items())
    rows = ",\n".join(
        f"  {int(code)}: Object.freeze({json.dumps(_row(info), ensure_ascii=False)})"
        for code, info in CLOSE_CODES.items()
    )
    ranges = ",\n".join(
        "  Object.freeze("
        + json.dumps({"first": r.first, "last": r.last, "action": r.action.value, "meaning": r.meaning})
        + ")"
        for r in CLOSE_RANGES
    )
    return f"""{HEADER}/**
 * WebSocket close codes of the Tidings protocol and what a client does after each (docs/protocol.md).
 *
 * Actions: `'stop'` (normal closure: go offline quietly), `'reconnect'` (backoff, resubscribe, recover),
 * `'pause'` (reconnect after the longest backoff delay), `'refresh'` (the token expired: reconnect only with a
 * different token from a token function, else sign in again), `'terminal'` (go offline and report).
 * @module tidings-client/close-codes
 */

/** Close codes named by the protocol. */
export const CloseCode = Object.freeze({{
{codes},
}});

/** The close-code table: one row per named code. */
export const CLOSE_CODES = Object.freeze({{
{rows},
}});

/** Codes not listed one by one, by range. */
export const CLOSE_RANGES = Object.freeze([
{ranges},
]);

/**
 * The table row of `code`, else the range it falls in, else undefined.
 * @param {{number}} code
 */
export function closeInfo(code) {{
  if (Object.hasOwn(CLOSE_CODES, code)) return CLOSE_CODES[code];
  return CLOSE_RANGES.find((range) => range.first <= code && code <= range.last);
}}

/**
 * What to do after the server (or the network) closed the connection with `code` and `reason`.
 * Unknown codes reconnect.
 * @param {{number}} code
 * @param {{string}} [reason]
 * @returns {{{ACTIONS}}}
 */
export function closeAction(code, reason = '') {{
  const info = closeInfo(code);
  if (!info) return 'reconnect';
  if (info.reasonActions && Object.hasOwn(info.reasonActions, reason)) return info.reasonActions[reason];
  return info.action;
}}

/**
 * True when a close with `code` and `reason` means the user must sign in again.
 * @param {{number | undefined}} code
 * @param {{string}} [reason]
 */
export function signsOut(code, reason = '') {{
  if (code === undefined || code === null || !Object.hasOwn(CLOSE_CODES, code)) return false;
  const info = CLOSE_CODES[code];
  return info.signIn || info.signInReasons.some((match) => String(reason ?? '').startsWith(match));
}}
"""


def render_close_codes_dts() -> str:
    """The text of ``close-codes.d.ts``."""
    codes = "\n".join(f"  {info.name}: {int(code)};" for code, info in CLOSE_CODES.items())
    return f"""{HEADER}
/** What a client does after a close. */
export type CloseAction = {ACTIONS};

/** Close codes named by the protocol. */
export const CloseCode: Readonly<{{
{codes}
}}>;

/** One row of the close-code table. */
export interface CloseCodeInfo {{
  readonly code: number;
  readonly name: string;
  readonly action: CloseAction;
  readonly meaning: string;
  /** False for codes only a client sees (1006). */
  readonly sentByServer: boolean;
  /** The user must sign in again after this close (when it ends the client). */
  readonly signIn: boolean;
  /** Reasons of this code after which the user must sign in again. */
  readonly signInReasons: readonly string[];
  /** Close reasons that change the action. */
  readonly reasonActions: Readonly<Record<string, CloseAction>>;
}}

export interface CloseRange {{
  readonly first: number;
  readonly last: number;
  readonly action: CloseAction;
  readonly meaning: string;
}}

export const CLOSE_CODES: Readonly<Record<number, CloseCodeInfo>>;
export const CLOSE_RANGES: readonly CloseRange[];

/** The table row of `code`, else its range, else undefined. */
export function closeInfo(code: number): CloseCodeInfo | CloseRange | undefined;

/** What the client does after a close with `code` (and `reason`). */
export function closeAction(code: number, reason?: string): CloseAction;

/** True when a close with `code` / `reason` means the user must sign in again. */
export function signsOut(code: number | undefined, reason?: string): boolean;
"""


def generated_files() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    return {
        CLIENT_DIR / "close-codes.js": render_close_codes_js(),
        CLIENT_DIR / "close-codes.d.ts": render_close_codes_dts(),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with ``--check`` report the ones that drifted (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m tidings.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated_files().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path} (run `make generate`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(generated_files()[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
