"""Whether the command line colours what it writes: `--color auto|always|never` and NO_COLOR.

`auto` (the default) colours a stream only when it is a terminal and the environment has no
non-empty `NO_COLOR` (https://no-color.org); `always` and `never` decide alone, so a
command-line flag overrides the environment, as no-color.org asks. Every place that writes
ANSI colour (`tail --format pretty`, the console log lines on stderr) asks `colour_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TextIO, get_args

__all__ = ["COLOUR_CHOICES", "ColourChoice", "colour_for"]

ColourChoice = Literal["auto", "always", "never"]
COLOUR_CHOICES: tuple[ColourChoice, ...] = get_args(ColourChoice)


def colour_for(choice: ColourChoice, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Tell whether to write ANSI colour to `stream` under `--color choice` and `environ`."""
    if choice == "always":
        return True
    if choice == "never" or environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
