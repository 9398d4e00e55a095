"""The nearest valid name to a mistyped one, for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def _bare(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def nearest(word, options: Iterable[str]) -> str | None:
    """The option spelt like ``word`` but for case, _ and - (usercol for user_col, SML_S for sml-s),
    else the closest by difflib's ratio, if any is near."""
    options = list(options)
    same = [o for o in options if _bare(o) == _bare(str(word))]
    if same:
        return same[0]
    close = difflib.get_close_matches(str(word), options, n=1)
    return close[0] if close else None


def did_you_mean(word, options: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the nearest option, or "" when none is near."""
    close = nearest(word, options)
    return f" (did you mean {close!r}?)" if close else ""
