"""Progress display that suits where the output goes.

On a terminal: tqdm bars (the CLI wraps commands in :func:`logging_redirect`, so log lines print
above the bars instead of tearing them). Anywhere else (``nohup … > train.log``, CI, a cluster
job): no bars at all — the training loop logs periodic lines instead (see
:class:`dmireid.engine.hooks.ProgressHook`), so a log file holds no carriage returns or escapes.
"""

from __future__ import annotations

import contextlib
import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    """True when stderr is a terminal (bars render there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar over ``iterable`` when ``enabled`` and stderr is a terminal; otherwise a silent one."""
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


def logging_redirect():
    """Route logging through tqdm.write while bars are shown (a no-op when not on a terminal)."""
    if not interactive():
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()
