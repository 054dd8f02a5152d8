"""Where the running demo writes: a live view on a terminal, one line per change anywhere else.

Writing never raises. ``make demo | tee demo.log`` and a Ctrl-C kill tee with
the demo: the pipe's reader is gone, and the next write fails with EPIPE. The
demo then still has every child to stop, so a failed write only marks the
output closed (``closed``, and ``on_closed`` is called: the demo stops), and
later writes go nowhere. (rich's own answer to a broken pipe is
``SystemExit(1)`` from inside ``print``, which skipped the stop: ``_Console``
overrides it.) ``reader_gone`` notices a pipe whose reader left before anything
was written (the demo stops on it, rather than at its next line).
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.live import Live


class _Console(Console):
    def __init__(self, output: Output, stream: IO[str]) -> None:
        super().__init__(file=stream)
        self._output = output

    def on_broken_pipe(self) -> None:
        self.quiet = True
        self._output._close()  # not rich's SystemExit: the demo has its children to stop first


class Output:
    def __init__(self, stream: IO[str] | None = None, on_closed: Callable[[], None] = lambda: None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.console: Console = _Console(self, self.stream)
        self.live_view = self.console.is_terminal  # else: plain lines, one per change
        self.on_closed = on_closed
        self.closed = False
        self._live: Live | None = None

    # ---------------------------------------------------------------- writing

    def line(self, text: str, style: str | None = None, stamp: bool = False) -> None:
        """One line (or a block of lines) as given: never wrapped, never read as markup."""
        if stamp and not self.live_view:
            text = time.strftime("%H:%M:%S ") + text
        self._guard(lambda: self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True))

    def view(self, renderable: RenderableType) -> None:
        """Replace the live view (a terminal only)."""
        if not self.live_view:
            return
        if self._live is None:
            live = Live(renderable, console=self.console, auto_refresh=False)
            if self._guard(live.start):
                self._live = live
                self._guard(lambda: live.refresh())
            return
        live = self._live
        self._guard(lambda: live.update(renderable, refresh=True))

    def end_view(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            self._guard(live.stop)

    def error(self, text: str) -> None:
        """One line on stderr (a refusal, a bad config): never raises either."""
        try:
            print(text, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    # ---------------------------------------------------------------- a closed stdout

    def reader_gone(self) -> bool:
        """True once the output is a pipe or socket whose other end has closed (or a write failed)."""
        if self.closed:
            return True
        try:
            fd = self.stream.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError):
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported: the reader's end closed
        if any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            self._close()
            return True
        return False

    def _guard(self, write: Callable[[], Any]) -> bool:
        if self.closed:
            return False
        try:
            write()
            self.stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, EIO from a closed terminal, a closed file
            self._close()
            return False
        return True

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._live = None
        try:
            # What is still buffered would fail again at exit ("Exception ignored ... BrokenPipeError"):
            # from now on the descriptor writes to /dev/null, and so does stderr when it is the same pipe
            # (`2>&1 | tee`: a warning logged while stopping must not fail either).
            fd = self.stream.fileno()
            same = [fd] + ([2] if fd != 2 and _same_file(fd, 2) else [])
            devnull = os.open(os.devnull, os.O_WRONLY)
            for target in same:
                os.dup2(devnull, target)
            os.close(devnull)
        except (OSError, ValueError):
            pass
        self.on_closed()


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


__all__ = ["Output"]
