"""The rule every data job follows (docs/DESIGN.md, "Data jobs: failures and exit codes").

A data job works through items (characters, views, files).  It

- processes every item that can be processed;
- records each failure with its reason: one line on stderr as it happens and, when the job has
  one, a line in its ``failures.jsonl`` (``{"id", "error", "job", "time"}``);
- prints a summary at the end: ``<job>: N done, S skipped, F failed`` plus the first failures;
- exits 0 when nothing failed, ``EXIT_FAILED`` (1) when at least one item failed (everything
  else is done and a re-run retries the failed items), and ``EXIT_USAGE`` (2) when it cannot start:
  a bad option, a missing input, nothing to process, an unwritable output
  (``error: <file>: <problem>``, nothing written);
- never leaves a result half-written: every file goes through ``training.errors.atomic_write``,
  and a failed item leaves no partial outputs.

``JobReport`` does the bookkeeping and the summary; ``data_job_main`` is the entry-point decorator
(``cli_main`` plus the exit code of the report the job returns).
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

from training.errors import UserError

EXIT_OK = 0
EXIT_FAILED = 1      # some items failed, the rest is done
EXIT_USAGE = 2       # the job could not start (training.errors.cli_main)


def _write(msg: str) -> None:
    """One line on stderr without breaking a tqdm bar that may be running."""
    try:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    except ImportError:
        print(msg, file=sys.stderr)


class JobReport:
    """Counts, failures and warnings of one run of a data job.

    ``failures_file``: append-only record of the failures (one JSON line each; a torn last line
    from a killed run is skipped by readers).  ``echo``: print failures and warnings as they happen.
    """

    def __init__(self, job: str, failures_file: str | Path | None = None, echo: bool = True,
                 done_word: str = "done"):
        self.job, self.echo, self.done_word = job, echo, done_word
        self.failures_file = Path(failures_file) if failures_file else None
        self.n_done = self.n_skipped = 0
        self.failures: list[tuple[str, str]] = []      # (item, reason)
        self.warnings: list[tuple[str, str]] = []      # (item, message): done, but worth a look
        self.notes: list[str] = []                     # extra summary lines
        self.result: dict = {}                         # what the job returns besides the counts

    def __getitem__(self, key):
        return self.result[key]

    # ---------------------------------------------------------- bookkeeping

    def done(self, n: int = 1) -> None:
        self.n_done += n

    def skipped(self, n: int = 1) -> None:
        self.n_skipped += n

    def failed(self, item, reason: str, record: bool = True) -> None:
        item, reason = str(item), str(reason)
        self.failures.append((item, reason))
        if self.echo:
            _write(f"failed: {item}: {reason}" if not reason.startswith(item) else f"failed: {reason}")
        if record and self.failures_file is not None:
            self.record(item, reason)

    def warn(self, item, message: str) -> None:
        self.warnings.append((str(item), str(message)))
        if self.echo:
            _write(f"warning: {item}: {message}")

    def record(self, item: str, reason: str) -> None:
        line = json.dumps({"id": item, "error": reason, "job": self.job,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            self.failures_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.failures_file, "a") as f:     # one short line per write: appends stay whole
                f.write(line + "\n")
        except OSError as e:
            _write(f"warning: {self.failures_file}: cannot record the failure ({e.strerror or e})")

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failures else EXIT_OK

    # ---------------------------------------------------------- summary

    def summary(self, show: int = 10) -> str:
        parts = [f"{self.n_done} {self.done_word}", f"{self.n_skipped} skipped", f"{self.n_failed} failed"]
        if self.warnings:
            parts.append(f"{len({w[0] for w in self.warnings})} with warnings")
        lines = [f"{self.job}: " + ", ".join(parts)]
        for item, reason in self.failures[:show]:
            lines.append(f"  failed: {reason}" if reason.startswith(item) else f"  failed: {item}: {reason}")
        if self.n_failed > show:
            lines.append(f"  ... {self.n_failed - show} more failures")
        for item, msg in self.warnings[:show]:
            lines.append(f"  warning: {item}: {msg}")
        if len(self.warnings) > show:
            lines.append(f"  ... {len(self.warnings) - show} more warnings")
        lines += [f"  {n}" for n in self.notes]
        if self.failures and self.failures_file is not None:
            lines.append(f"  failures recorded in {self.failures_file}")
        if self.failures:
            lines.append(f"  exit code {EXIT_FAILED}: fix the inputs above and re-run (finished items are kept)")
        return "\n".join(lines)

    def finish(self, log=None) -> "JobReport":
        """Print the summary (stderr by default); returns self."""
        text = self.summary()
        if log is None:
            print(text, file=sys.stderr, flush=True)
        else:
            log(text)
        return self

    def to_json(self) -> dict:
        return {"job": self.job, "done": self.n_done, "skipped": self.n_skipped,
                "failed": [{"id": i, "error": r} for i, r in self.failures],
                "warnings": [{"id": i, "warning": m} for i, m in self.warnings]}


def data_job_main(fn):
    """Entry point of a data job: ``fn`` returns its ``JobReport`` (already finished) or None.
    UserError -> one line and exit 2 (``cli_main``); failed items -> exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        code = result.exit_code if isinstance(result, JobReport) else EXIT_OK
        if code:
            sys.exit(code)
        return result
    return wrapper
