"""Shared behaviour of the command-line entry points: clear messages, exit code 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from retina.errors import RetinaError


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run `main(argv)`; a `RetinaError` prints `error: <message>` to stderr and returns 2.

    Ctrl-C returns 130 with one line instead of a traceback.
    """
    try:
        return int(main(argv) or 0)
    except RetinaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
