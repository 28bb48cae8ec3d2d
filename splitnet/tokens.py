"""Bearer tokens for the command lines: read from a file or the environment, never argv.

    --token-file FILE ─┐
    $SPLITNET_TOKEN   ─┴─► read_token() ─► the token (or None: no authentication)
    edge: a file of NAME TOKEN lines ─► read_token_table() ─► one token per device, whose
                                        name keys that device's share of the edge
    --token TOKEN     ───► refused: every local user can read argv in `ps`

A token travels in call metadata, so over plaintext it is as public as the link:
``plaintext_token_problem`` refuses that on any address but loopback unless the user says
``--insecure`` on purpose.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Any

TOKEN_ENV = "SPLITNET_TOKEN"


class TokenError(ValueError):
    """A token that cannot be used as given."""


def add_token_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--token-file`` and ``--insecure``, plus a ``--token`` that explains itself."""
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the bearer token {what} (or set ${TOKEN_ENV}); "
                             "one line, surrounding whitespace ignored")
    parser.add_argument("--token", action=_RefuseInArgv, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--insecure", action="store_true",
                        help="allow a token over plaintext on a non-loopback address "
                             "(anyone on the path can read it; prefer TLS)")


class _RefuseInArgv(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(f"--token puts the secret where every local user can read it (ps, "
                     f"/proc/PID/cmdline); use --token-file FILE or set ${TOKEN_ENV}")


def read_token(token_file: Path | None) -> str | None:
    """The token from ``token_file``, else from ``$SPLITNET_TOKEN``, else None."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            raise TokenError(f"cannot read the token file {token_file}: "
                             f"{error.strerror or error}") from None
        if not token:
            raise TokenError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def read_token_table(token_file: Path | None) -> tuple[str | None, dict[str, str]]:
    """The edge's tokens: one shared token (a file of one line, or ``$SPLITNET_TOKEN``), or
    one token per device (lines ``NAME TOKEN``; blank lines and ``#`` comments ignored).
    Returns (shared token or None, {token: device name})."""
    if token_file is None:
        return read_token(None), {}
    text = read_token(token_file) or ""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) == 1 and len(lines[0].split()) == 1:
        return lines[0], {}
    table: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != 2:
            raise TokenError(f"{token_file} line {number}: expected 'NAME TOKEN' (one token "
                             "per device) or a file holding one token only")
        name, token = fields
        if token in table:
            raise TokenError(f"{token_file}: the token of {name!r} is also {table[token]!r}'s")
        table[token] = name
    return None, table


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, possibly in brackets) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(target: str) -> str:
    """The host of ``host:port``, ``[v6]:port`` or ``dns:///host:port``."""
    if target.startswith("dns:"):
        target = target.split("///", 1)[-1] if "///" in target else target[4:]
    return target.rpartition(":")[0] or target


def plaintext_token_problem(hosts: list[str], token: str | None, tls: bool,
                            insecure: bool) -> str | None:
    """Why sending ``token`` to ``hosts`` without TLS is refused, or None if it is fine."""
    if token is None or tls or insecure:
        return None
    exposed = [h for h in hosts if not is_loopback(h)]
    if not exposed:
        return None
    return (f"a token over plaintext to {', '.join(exposed)} can be read by anyone on the "
            "path: use TLS (--tls-cert/--tls-key on the server, --tls-ca on the device), "
            "or pass --insecure if that is really what you want")
