"""Generate what is derived from the protocol's one source: the JS close-code module and docs/protocol.md's tables.

``python -m tidings.codegen`` writes ``web/client/close-codes.js`` and ``web/client/close-codes.d.ts`` (from
:mod:`tidings.close_codes`) and the generated sections of ``docs/protocol.md`` (from :mod:`tidings.messages` and
the close-code table, between ``<!-- generated:NAME -->`` and ``<!-- end:NAME -->`` markers);
``python -m tidings.codegen --check`` exits 1 when a file differs from what the sources give (``make generate``
and the test suite run them). The JS logic mirrors :func:`tidings.close_codes.close_action` and
:func:`~tidings.close_codes.signs_out` line for line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tidings.close_codes import CLOSE_CODES, CLOSE_RANGES, CloseAction, CloseCodeInfo
from tidings.messages import CLIENT_MESSAGES, SERVER_MESSAGES, ErrorCode

__all__ = ["CLIENT_DIR", "generated_files", "main", "render_close_codes_dts", "render_close_codes_js"]

CLIENT_DIR = Path(__file__).parent / "web" / "client"
#: docs/protocol.md of a source checkout (absent from an installed package: then it is not generated).
PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
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


def _type_of(prop: dict[str, Any]) -> str:
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "$ref" in prop:
        return "object" if not prop["$ref"].endswith("ErrorCode") else "error code"
    if "anyOf" in prop:
        kinds = [_type_of(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " \\| ".join(dict.fromkeys(kinds)) or "null"
    kind = prop.get("type")
    if kind == "array":
        return f"array of {_type_of(prop.get('items', {}))}"
    return str(kind or "any")


def _fields(model: type[BaseModel], mode: str) -> str:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    required = set(schema.get("required", ()))
    parts = []
    for name, prop in schema.get("properties", {}).items():
        if name == "type":
            continue
        optional = "" if name in required else "?"
        parts.append(f"`{name}{optional}`: {_type_of(prop)}")
    return ", ".join(parts) or "—"


def _doc_line(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split()).replace("``", "`").replace("|", "\\|")


def render_doc_sections() -> dict[str, str]:
    """The generated tables of docs/protocol.md, by section name."""
    from tidings.asyncapi import REPLIES

    client = ["| `type` | fields (`?`: optional) | replies (or `error`) | meaning |", "| --- | --- | --- | --- |"]
    for msg_type, model in CLIENT_MESSAGES.items():
        replies = ", ".join(f"`{r}`" for r in REPLIES.get(msg_type, ()))
        client.append(f"| `{msg_type}` | {_fields(model, 'validation')} | {replies} | {_doc_line(model)} |")
    server = ["| `type` | fields (`?`: may be absent) | meaning |", "| --- | --- | --- |"]
    for msg_type, smodel in SERVER_MESSAGES.items():
        server.append(f"| `{msg_type}` | {_fields(smodel, 'serialization')} | {_doc_line(smodel)} |")
    codes = ["| code | name | client does | meaning |", "| --- | --- | --- | --- |"]
    for code, info in CLOSE_CODES.items():
        action = info.action.value + (", sign in again" if info.sign_in else "")
        if info.sign_in_reasons:
            action += f" (sign in again after: {', '.join(info.sign_in_reasons)})"
        codes.append(f"| {int(code)} | `{info.name}` | {action} | {info.meaning} |")
    for rng in CLOSE_RANGES:
        codes.append(f"| {rng.first}-{rng.last} | | {rng.action.value} | {rng.meaning} |")
    errors = ", ".join(f"`{c.value}`" for c in ErrorCode)
    return {
        "client-messages": "\n".join(client),
        "server-messages": "\n".join(server),
        "close-codes": "\n".join(codes),
        "error-codes": f"Error codes: {errors}.",
    }


def _replacer(body: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return match.group(1) + body + "\n" + match.group(2)

    return replace


def render_protocol_doc(text: str) -> str:
    """``text`` (docs/protocol.md) with every generated section replaced by its current content."""
    for name, body in render_doc_sections().items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/protocol.md has no <!-- generated:{name} --> section")
        text = pattern.sub(_replacer(body), text)
    return text


def generated_files() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    files = {
        CLIENT_DIR / "close-codes.js": render_close_codes_js(),
        CLIENT_DIR / "close-codes.d.ts": render_close_codes_dts(),
    }
    if PROTOCOL_DOC.exists():
        files[PROTOCOL_DOC] = render_protocol_doc(PROTOCOL_DOC.read_text())
    return files


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
