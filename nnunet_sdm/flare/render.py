"""The submission's files as package data (``templates/``), read with :mod:`importlib.resources` and filled
in by name: a placeholder is ``@@NAME@@``. Every placeholder must be given and every value used, so a
template and its caller cannot drift apart silently."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["render", "template_text"]

_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")


def template_text(name: str) -> str:
    """The text of ``templates/<name>``."""
    return (resources.files("nnunet_sdm.flare") / "templates" / name).read_text()


def render(name: str, **values: object) -> str:
    """``templates/<name>`` with every ``@@KEY@@`` replaced by ``values[KEY]``."""
    text = template_text(name)
    wanted = set(_PLACEHOLDER.findall(text))
    missing, unused = wanted - set(values), set(values) - wanted
    if missing or unused:
        raise KeyError(f"template {name}: missing values {sorted(missing)}, unused values {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
