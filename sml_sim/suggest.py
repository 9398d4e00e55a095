"""The nearest valid name to a mistyped one, for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(word, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return close[0] if close else None


def did_you_mean(word, options: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the nearest option, or "" when none is near."""
    close = nearest(word, options)
    return f" (did you mean {close!r}?)" if close else ""
