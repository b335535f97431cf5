"""Progress of long steps (index seed, a watch cycle, a remote compare, a backfill).

On a terminal: a tqdm bar on stderr. Log records written while it is shown go above it (through
the same redacting handler, by ``tqdm.write``), so a retry line never breaks the bar. Elsewhere (a
pipe, a container log): one INFO ``progress`` log record every ``PLAIN_INTERVAL_S`` with what is
done so far (also while one item takes long), and a last one at the end when any was written; a
quick step prints nothing.

    with progress("index seed", total=len(refs)) as bar:
        for ref in refs:
            ...
            bar.advance(note=ref.repo_id)
            bar.write(f"{ref.repo_id}: ok")      # a result line, above the bar on a terminal

tqdm is huggingface_hub's own progress library, so it adds nothing to the install.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from tqdm import tqdm

log = logging.getLogger("hubwatch.progress")

# Non-terminal progress lines: often enough that a long watch cycle is never silent for a minute
# (the complaint was 70 s without a line), rare enough to stay a few lines per cycle.
PLAIN_INTERVAL_S = 15.0


class _AboveBar:
    """A stream for logging handlers that writes above the live bars instead of through them."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    def __init__(self, what: str, total: int | None, stream: IO[str] | None = None, unit: str = "model",
                 interval_s: float = PLAIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 terminal: bool | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._last_note: str | None = None  # what the last advance() named
        self._clock, self._interval = clock, interval_s
        self._started = self._last_line = clock()
        self._lines = 0
        self._lock = threading.Lock()
        is_terminal = terminal if terminal is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = tqdm(total=total, desc=what, unit=unit, file=self.stream, leave=False, dynamic_ncols=True) \
            if is_terminal else None
        self._redirected: list[tuple[logging.StreamHandler, IO[str]]] = []
        self._stopped = threading.Event()
        if self._bar is None:
            # Lines come from advance() as items finish, and from this ticker while one item takes
            # long (a slow model must not leave a cycle silent either).
            threading.Thread(target=self._tick, name=f"progress {what}", daemon=True).start()
        else:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                    self._redirected.append((handler, handler.setStream(_AboveBar(self.stream))))

    def _tick(self) -> None:
        while not self._stopped.wait(self._interval):
            self._line_if_due()

    def _line_if_due(self) -> None:
        with self._lock:
            now = self._clock()
            if now - self._last_line >= self._interval:
                self._last_line = now
                self._plain_line()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        with self._lock:
            self.done += n
            self._last_note = note or self._last_note
            if self._bar is not None:
                if note:
                    self._bar.set_postfix_str(note, refresh=n == 0)  # update() below refreshes otherwise
                self._bar.update(n)
                return
        self._line_if_due()

    def write(self, line: str) -> None:
        """A line of output that belongs with the step (a per-item result): above the bar, or plain."""
        if self._bar is not None:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _plain_line(self) -> None:
        self._lines += 1
        extra = {"what": self.what, "done": self.done, "elapsed_s": round(self._clock() - self._started, 1)}
        if self.total is not None:
            extra["total"] = self.total
        if self._last_note:
            extra["last"] = self._last_note
        log.info("progress", extra=extra)

    def close(self) -> None:
        self._stopped.set()
        if self._bar is not None:
            self._bar.close()
            for handler, stream in self._redirected:
                handler.setStream(stream)
            self._redirected.clear()
        else:
            with self._lock:
                if self._lines:
                    self._plain_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(what: str, total: int | None, stream: IO[str] | None = None, unit: str = "model") -> Progress:
    """A bar on a terminal, periodic log lines elsewhere; use as a context manager."""
    return Progress(what, total, stream, unit)
