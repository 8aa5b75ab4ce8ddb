"""The console of ``pipeline.py run-local``: one line per task, the progress lines, the raw log in a file.

kfp.local writes everything to ``sys.stdout``: its own messages through the root logger
(it puts a handler on ``sys.stdout`` around each task) and every line of each task's
subprocess (stdout and stderr merged, each line indented by four spaces), which begins
with the task's whole executor-input JSON, about 130 lines. :class:`RunConsole` stands in
for ``sys.stdout`` while the pipeline runs (``contextlib.redirect_stdout``): every byte
goes to the log file; the console gets, per task, a start line and a finish line (status,
wall seconds, key figures) and the project's own log lines in between (``rest.*`` loggers:
progress with rates, what each step found). When a task fails, the last lines of its
stream (the traceback) are shown too. ``verbose`` passes the raw stream through instead.

The project's lines are told apart by the logger name that :func:`rest_kfp.runtime.setup_logging`
puts into each task's log format; the task start/finish by :func:`rest_kfp.runtime.step`'s
``LABEL: start`` / ``LABEL: done in S s; key=value ...`` lines and kfp.local's
``Executing task`` / ``finished with status`` messages.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own messages: "09:54:39.793 - INFO - Executing task 'validate-op'"
_KFP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} - (?P<level>[A-Z]+) - (?P<msg>.*)$")
# A task's log line in rest_kfp.runtime's format: "09:54:39 INFO rest.step: validate: start (...)"
_OWN = re.compile(r"^(?P<time>\d\d:\d\d:\d\d) (?P<level>[A-Z]+) (?P<logger>rest(?:\.[\w.]+)?): (?P<msg>.*)$")
_START = re.compile(r"^(?P<label>\S+): start\b")
_DONE = re.compile(r"^(?P<label>\S+): done in (?P<wall>[\d.]+) s(?:; (?P<figures>.*))?$")
TAIL_LINES = 20  # enough for the end of a traceback; the log has all of it


@dataclass
class _Task:
    """What one kfp.local worker thread is running (kfp runs ParallelFor iterations in threads)."""

    name: str = ""
    started: float = 0.0
    label: str = ""
    announced: bool = False
    done: tuple[float, str] | None = None
    streaming: bool = False
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class RunConsole(io.TextIOBase):
    """A text stream for kfp.local's output: raw to ``log``, condensed (or raw, ``verbose``) to ``console``."""

    def __init__(self, console: TextIO, log: TextIO, verbose: bool = False, log_path: str = ""):
        super().__init__()
        self.console, self.log, self.verbose, self.log_path = console, log, verbose, log_path
        self._lock = threading.RLock()
        self._partial: dict[int, str] = {}
        self._tasks: dict[int, _Task] = {}
        self.failed: list[str] = []   # labels of the tasks that failed, in order
        self._skipped: list[str] = []

    # -- the stream interface ---------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # no colours or progress-bar redraws meant for a terminal
        return False

    @property
    def encoding(self):
        return "utf-8"

    def write(self, text: str) -> int:
        with self._lock:
            self.log.write(text)
            if self.verbose:
                self.console.write(text)
            # Lines are assembled per thread: parallel tasks' prints would interleave mid-line.
            # Verbose or not, they are followed, so that the failed tasks are known.
            key = threading.get_ident()
            buf = self._partial.get(key, "") + text
            *lines, rest = buf.split("\n")
            self._partial[key] = rest
            for line in lines:
                self._line(key, line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            self.console.flush()

    def close_lines(self) -> None:
        """Handle what is left without a newline (at the end of the run)."""
        with self._lock:
            for key, rest in list(self._partial.items()):
                if rest:
                    self._line(key, rest)
            self._partial.clear()
            self._report_skipped()
            self.flush()

    # -- condensing -------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if not self.verbose:  # verbose: the raw stream is on the console already
            self.console.write(text + "\n")
            self.console.flush()

    @contextlib.contextmanager
    def capturing_logs(self):
        """Send the root logger's records here, in kfp.local's format, while the pipeline runs.

        kfp.local logs some of its messages (a task skipped because an upstream one failed,
        the workspace cleaned up) outside its own per-task handler, to whatever the root
        logger has; they belong in this stream, not on stderr in between the task lines.
        """
        root = logging.getLogger()
        saved, level = root.handlers[:], root.level
        handler = logging.StreamHandler(self)
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d - %(levelname)s - %(message)s", "%H:%M:%S"))
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        try:
            yield self
        finally:
            root.handlers = saved
            root.setLevel(level)

    def _line(self, key: int, raw: str) -> None:
        line = _ANSI.sub("", raw).rstrip("\r")
        task = self._tasks.setdefault(key, _Task())
        m = _KFP.match(line)
        if m:
            self._kfp(key, task, m["msg"])
            return
        if not task.streaming:
            return  # the rest of a kfp message: a task's outputs, horizontal rules
        text = line[4:] if line.startswith("    ") else line
        if text.strip():
            task.tail.append(text)
        m = _OWN.match(text.strip())
        if not m:
            return  # library chatter, the executor input, progress bars: in the log file only
        msg = m["msg"]
        if m["logger"] == "rest.step" or m["logger"] == "rest_kfp.runtime":
            start, done = _START.match(msg), _DONE.match(msg)
            if start:
                task.label = start["label"]
                self._announce(task, m["time"])
                return
            if done:
                task.done = (float(done["wall"]), done["figures"] or "")
                return
        level = "" if m["level"] == "INFO" else f"{m['level']} "
        self._say(f"           {level}{msg}")

    def _announce(self, task: _Task, clock: str | None = None) -> None:
        if not task.announced:
            task.announced = True
            self._say(f"{clock or time.strftime('%H:%M:%S')}  {'start':<6}  {task.label or task.name}")

    def _kfp(self, key: int, task: _Task, msg: str) -> None:
        m = re.match(r"Executing task '(?P<name>[^']+)'", msg)
        if m:
            self._report_skipped()
            self._tasks[key] = _Task(name=m["name"], started=time.time())
            return
        if msg.startswith("Streamed logs"):
            task.streaming = True
            return
        m = re.match(r"Task '(?P<name>[^']+)' finished with status (?P<status>\w+)", msg)
        if m:
            self._finish(task, m["status"])
            return
        m = re.match(r"Task (?P<name>\S+) cache hit", msg)
        if m:
            self._say(f"{time.strftime('%H:%M:%S')}  {'cached':<6}  Task {m['name']} cache hit: not run again")
            return
        m = re.match(r"Skipping task (?P<name>\S+): upstream", msg)
        if m:
            self._skipped.append(m["name"])  # one line for all of them, at the next event
            return
        self._report_skipped()
        m = re.match(r"Pipeline '(?P<name>[^']+)' finished with status (?P<status>\w+)", msg)
        if m:
            self._say(f"{time.strftime('%H:%M:%S')}  pipeline {m['name']}: {m['status']}")

    def _report_skipped(self) -> None:
        if self._skipped:
            names, self._skipped = self._skipped, []
            self._say(f"{time.strftime('%H:%M:%S')}  {'skip':<6}  {len(names)} tasks, as a task they need failed: "
                      f"{', '.join(names)}")

    def _finish(self, task: _Task, status: str) -> None:
        self._announce(task, time.strftime("%H:%M:%S", time.localtime(task.started or time.time())))
        name = task.label or task.name
        ok = status == "SUCCESS"
        clock = time.strftime("%H:%M:%S")
        if ok and task.done:
            # The step's own words ("LABEL: done in S s; key=value"): what scripts that read
            # run-local's output (bench/pipeline.py) look for.
            wall, figures = task.done
            self._say(f"{clock}  {'ok':<6}  {name}: done in {wall:.1f} s" + (f"; {figures}" if figures else ""))
        else:
            self._say(f"{clock}  {'ok' if ok else 'FAILED':<6}  {name}: {status} after {time.time() - task.started:.1f} s")
        if not ok:
            self.failed.append(name)
            self._say(f"           last lines of {name} (the whole stream is in {self.log_path or 'the log'}):")
            for text in task.tail:
                self._say(f"           | {text}")
        task.streaming = False
