"""One path for a user's mistakes: every error the user can fix derives from `UserError`, and every entry point runs
under `reports_user_errors`, which prints it as one line on stderr (what, where, and the command that fixes it) and
exits with its code, without a traceback. `CATDOG_DEBUG=1` (or Hydra's own `HYDRA_FULL_ERROR=1`) re-raises it to
show one. Anything else is a bug and keeps its traceback. No catdog imports: every module may import this one."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

DEBUG_ENVS = ("CATDOG_DEBUG", "HYDRA_FULL_ERROR")


class UserError(Exception):
    """A mistake the user can fix. `kind` starts its line (`config error: ...`); `exit_code` is the command's."""

    kind = "error"
    exit_code = 1

    def line(self) -> str:
        return f"{self.kind}: {one_line(str(self))}"


def one_line(text: str) -> str:
    """`text` on one line: a line ending in `:` runs into the next, other lines are joined by `; `."""
    parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
    joined = parts[0] if parts else ""
    for part in parts[1:]:
        joined += (" " if joined.endswith(":") else "; ") + part
    return joined


def debugging() -> bool:
    """Whether the user asked to see the traceback of a reported mistake."""
    return any(os.environ.get(name) == "1" for name in DEBUG_ENVS)


def reports_user_errors(
    main: Callable[..., Any], *, on_refusal: Callable[[], None] | None = None
) -> Callable[..., Any]:
    """Wrap an entry point: a `UserError` prints its one line and exits with its code (after `on_refusal`, which
    removes what the refused command left behind); with a debug variable set it is re-raised instead."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            if on_refusal is not None:
                on_refusal()
            if debugging():
                raise
            print(exc.line(), file=sys.stderr, flush=True)
            sys.exit(exc.exit_code)

    return wrapper
