"""`cxrbench protocols`: every built-in protocol with every setting."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (id@vN -> settings, with their hash).")
def protocols(as_json: bool) -> None:
    """List the built-in protocols with every setting and their content hash.

    \b
    Example:
      cxrbench protocols
    """
    from cxrbench.console import get_display
    from cxrbench.protocols import PROTOCOLS, protocol_fields

    if as_json:
        click.echo(json.dumps({p.key: {**p.to_dict(), "hash": p.content_hash} for p in PROTOCOLS.values()}, indent=2))
        return
    names = [f for f in protocol_fields() if f not in ("id", "description")]
    ps = list(PROTOCOLS.values())
    rows = [[f, *(_fmt(getattr(p, f)) for p in ps)] for f in names]
    rows.append(["hash", *(p.content_hash for p in ps)])
    get_display().table(["setting", *(p.key for p in ps)], rows, title="Protocols")
    for p in ps:
        get_display().text(f"{p.key}: {p.description}")


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(map(str, v))
    return str(v)
