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
    d = get_display()
    names = [f for f in protocol_fields() if f not in ("id", "description")]
    ps = list(PROTOCOLS.values())

    def table(chunk):
        rows = [[f, *(_fmt(getattr(p, f)) for p in chunk)] for f in names]
        return ["setting", *(p.key for p in chunk)], [*rows, ["hash", *(p.content_hash for p in chunk)]]

    # as many protocols side by side as the width holds, in as many tables as it takes
    chunks: list[list] = []
    for p in ps:
        if chunks and d.fits(*table([*chunks[-1], p])):
            chunks[-1].append(p)
        else:
            chunks.append([p])
    for i, chunk in enumerate(chunks):
        title = "Protocols" + (f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else "")
        d.table(*table(chunk), title=title)
    for p in ps:
        d.prose(f"{p.key}: {p.description}", indent="    ")


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(map(str, v))
    return str(v)
