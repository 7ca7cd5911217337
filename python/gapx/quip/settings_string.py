"""QUIP's ``key=value`` strings (descriptor strings, ``init_args``, the command line)."""

from __future__ import annotations

import re

# key=value, key="quoted value", key={braced list}, key='quoted', or a bare word
_TOKEN = re.compile(
    r"""\s*(?P<key>[A-Za-z_][\w.]*)\s*(?:=\s*(?P<value>\{[^}]*\}|"[^"]*"|'[^']*'|[^\s{}"']+))?"""
)


def parse_settings(text: str, where: str) -> tuple[str, dict[str, str]]:
    """Split ``"soap cutoff=5 species_Z={14 6}"`` into its name and ``{key: raw value}``.

    Braces and quotes are removed from values; keys are lower-cased (QUIP's keys are case
    insensitive). Raises ValueError naming ``where`` for text that is not of this form or a key
    given twice."""
    text = text.strip()
    name, _, rest = text.partition(" ")
    if not name:
        raise ValueError(f"{where}: empty settings string")
    settings: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _TOKEN.match(rest, position)
        if match is None or match.end() == position:
            raise ValueError(f"{where}: cannot parse {rest[position:]!r} in {text!r}")
        key = match.group("key").lower()
        value = match.group("value")
        if value is None:
            value = "T"  # a bare flag
        elif value[0] in "{\"'":
            value = value[1:-1].strip()
        if key in settings:
            raise ValueError(f"{where}: {key!r} is given twice in {text!r}")
        settings[key] = value
        position = match.end()
        while position < len(rest) and rest[position].isspace():
            position += 1
    return name.lower(), settings
