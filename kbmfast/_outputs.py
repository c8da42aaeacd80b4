"""What every ``kbmfast`` command does with its files, its standard output and its signals.

- :func:`check_distinct`: no output may be the same file as an input or as another output
  (same device and inode when the file exists, the same directory entry when it does not).
- :class:`OutputFile`: a file written whole or not at all: a temporary file in the target's
  directory (unpredictable name, ``O_EXCL``, the mode it will keep: 0600 for keys), then fsync
  and a rename over the target. A failed or interrupted run leaves the old file as it was.
- :class:`Stdout`: standard output whose reader may go away (``| head``): a closed pipe turns
  it off quietly instead of raising.
- :class:`Interrupts`: SIGINT and SIGTERM raise :class:`Interrupted` (a clean exit, temporary
  files removed), or, inside :meth:`Interrupts.deferred`, are only noted, so that a command
  stops at its next batch boundary with everything it wrote describing the same prefix.

Exit statuses of an interrupted command: 130 (SIGINT), 143 (SIGTERM), 141 (standard output
closed by its reader), as a shell reports a process killed by those signals.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import IO, Any, BinaryIO

#: The type argparse gives add_subparsers() (no public alias); every command's ``add_*`` takes one.
Subparsers = argparse._SubParsersAction

EXIT_SIGPIPE = 128 + signal.SIGPIPE  # 141
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class CliError(Exception):
    """An ordinary error of a command: one line for stderr (without the command's name) and the
    exit status to return. The entry point prints it; no traceback."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived outside a deferred section (a BaseException, like
    KeyboardInterrupt, so that ``except Exception`` does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        """The exit status: 128 + the signal's number."""
        return 128 + self.signum


def os_error_text(e: OSError, what: str | None = None) -> str:
    """``PATH: cause`` for an OSError, e.g. ``nodir/a.pcap: No such file or directory``."""
    name = what or e.filename
    cause = e.strerror or str(e)
    return f"{name}: {cause}" if name is not None else cause


# ---------------------------------------------------------------------------------------------
# Files


def _identity(path: str) -> tuple[object, ...]:
    """What names the file: its (device, inode) when it exists (symlinks followed), else the
    (device, inode) of its directory and its name (after resolving symlinks, as OutputFile
    writes there), else its resolved path."""
    try:
        st = os.stat(path)
        return "inode", st.st_dev, st.st_ino
    except OSError:
        pass
    parent, name = os.path.split(os.path.realpath(path))
    try:
        st = os.stat(parent)
    except OSError:
        return "path", os.path.realpath(path)
    return "entry", st.st_dev, st.st_ino, name


def check_distinct(inputs: Sequence[tuple[str, str | None]], outputs: Sequence[tuple[str, str | None]]) -> None:
    """Refuse (CliError, status 2) an output that is the same file as an input or another output.

    Each item is ``(what, path)``, e.g. ``("--acks-out", "a.pcap")``; a None path is left out.
    Standard output as ``-`` is not a file here.
    """
    seen: dict[tuple[object, ...], tuple[str, str, bool]] = {}
    for what, path in inputs:
        if path is not None and path != "-":
            seen.setdefault(_identity(path), (what, path, True))
    for what, path in outputs:
        if path is None or path == "-":
            continue
        key = _identity(path)
        if key in seen:
            other_what, other, is_input = seen[key]
            kind = "an input" if is_input else "another output"
            raise CliError(f"{what} {path} is the same file as {other_what} {other} ({kind}); refusing to overwrite it")
        seen[key] = (what, path, False)


def check_stdout_distinct(inputs: Sequence[tuple[str, str | None]]) -> None:
    """Refuse a standard output redirected (``>>``) to one of the inputs."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return
    if not stat.S_ISREG(st.st_mode):
        return
    for what, path in inputs:
        if path is None or path == "-":
            continue
        with contextlib.suppress(OSError):
            other = os.stat(path)
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise CliError(f"standard output is the same file as {what} {path}; refusing to write into it")


def refuse_existing(outputs: Sequence[tuple[str, str | None]], force: bool) -> None:
    """Refuse (CliError, status 2) an existing regular file as an output unless ``force``."""
    if force:
        return
    for what, path in outputs:
        if path is None or path == "-":
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            raise CliError(f"{what} {path} exists; not overwriting it (use --force)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class OutputFile:
    """A file written whole or not at all.

    Opens a temporary file in the target's directory at once (so a missing directory or a
    directory that cannot be written is reported before any work): ``.NAME.XXXXXXXX.tmp``,
    created with ``O_EXCL`` and an unpredictable name, mode 0600 when ``private`` (keys), else
    0666 less the umask. :meth:`commit` flushes, fsyncs and renames it over the target (a
    symlink's target, so the link stays); :meth:`discard` removes it. An existing target that is
    not a regular file (a FIFO, /dev/null, a terminal) is written in place instead.

    OSError (the path and the cause) when the file cannot be created.
    """

    def __init__(self, path: str, *, private: bool = False) -> None:
        self.path = path
        self.tmp: str | None = None
        self.committed = False
        try:
            self._open(private)
        except OSError as e:  # name the path as given, not the temporary file or the resolved one
            cause = e.strerror or str(e)
            if isinstance(e, FileNotFoundError):
                cause += " (its directory does not exist)"
            elif isinstance(e, NotADirectoryError):
                cause += " (a part of the path is a file)"
            raise type(e)(e.errno, cause, path) from None

    def _open(self, private: bool) -> None:
        self.target = os.path.realpath(self.path)
        try:
            st: os.stat_result | None = os.stat(self.target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            self.stream: BinaryIO = open(self.target, "wb")
            return
        directory, name = os.path.split(self.target)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
        try:
            os.fchmod(fd, 0o600 if private else 0o666 & ~_umask())
            self.stream = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def commit(self) -> None:
        """Put the file in place: flush, fsync, rename over the target, fsync the directory."""
        stream = self.stream
        if self.tmp is None:
            stream.close()
            self.committed = True
            return
        try:
            stream.flush()
            os.fsync(stream.fileno())
            stream.close()
            os.replace(self.tmp, self.target)
        except BaseException:
            self.discard()
            raise
        self.tmp = None
        self.committed = True
        with contextlib.suppress(OSError):
            fd = os.open(os.path.dirname(self.target) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        """Remove the temporary file (the target stays as it was); idempotent."""
        with contextlib.suppress(OSError):
            self.stream.close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


@contextlib.contextmanager
def output_files(paths: Sequence[tuple[str, bool]], interrupts: Interrupts | None = None) -> Iterator[list[OutputFile]]:
    """Several :class:`OutputFile` (``(path, private)`` each), committed together when the block
    ends normally (signals held off meanwhile, so either all are renamed or none), discarded
    when it raises."""
    files: list[OutputFile] = []
    try:
        for path, private in paths:
            files.append(OutputFile(path, private=private))
        yield files
    except BaseException:
        for f in files:
            f.discard()
        raise
    with interrupts.deferred() if interrupts is not None else contextlib.nullcontext():
        try:
            for f in files:
                f.commit()
        except BaseException:
            for f in files:
                f.discard()
            raise


# ---------------------------------------------------------------------------------------------
# Standard output


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null after its reader went away, so that the flush at
    exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, sys.stdout.fileno())
        finally:
            os.close(fd)


def write_all(binary: Any, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to a binary stream.

    Standard output's binary layer is a raw FileIO under ``python -u`` or PYTHONUNBUFFERED, whose
    ``write`` is one write(2): a signal arriving while it waits on a full pipe makes it return
    the bytes written so far, and on a non-blocking descriptor it may write nothing (None). Both
    are taken up here, so that a signal never cuts a batch's lines short.
    """
    view = memoryview(data).cast("B")
    while view:
        try:
            n = binary.write(view)
        except BlockingIOError as e:  # a buffered stream on a non-blocking descriptor
            n = e.characters_written
            _wait_writable(binary)
        if n is None:  # a raw stream on a non-blocking descriptor: nothing written
            _wait_writable(binary)
            continue
        view = view[n:]


def flush_all(stream: IO[Any]) -> None:
    """Flush ``stream``, waiting while a non-blocking descriptor is full (the data not yet
    written stays in the buffer: flushing again goes on from there)."""
    while True:
        try:
            stream.flush()
            return
        except BlockingIOError:
            _wait_writable(stream)


def _wait_writable(stream: Any) -> None:
    select.select([], [stream.fileno()], [])


class Stdout:
    """Standard output for a command's lines; ``closed`` once its reader went away (EPIPE).

    Writes after that are dropped: the command notices ``closed`` at its next batch boundary.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.closed = False

    def write(self, data: str | bytes | memoryview) -> bool:
        """Write text or bytes; False when standard output is closed."""
        if self.closed:
            return False
        try:
            binary = getattr(self.stream, "buffer", None)
            if binary is None:
                self.stream.write(data if isinstance(data, str) else bytes(data).decode())
            else:  # text too, encoded here: a TextIOWrapper over a raw stream drops short writes
                if isinstance(data, str):
                    data = data.encode(getattr(self.stream, "encoding", None) or "utf-8")
                flush_all(self.stream)
                write_all(binary, data)
        except BrokenPipeError:
            self.closed = True
            silence_stdout()
        return not self.closed

    def flush(self) -> bool:
        """Flush; False when standard output is closed."""
        if not self.closed:
            try:
                flush_all(self.stream)
            except BrokenPipeError:
                self.closed = True
                silence_stdout()
        return not self.closed


# ---------------------------------------------------------------------------------------------
# Signals


class Interrupts:
    """SIGINT and SIGTERM during one command (installed by the entry point, main thread only).

    Outside :meth:`deferred` a signal raises :class:`Interrupted` in the main thread; inside, it
    only sets :attr:`signum`, which the command polls at its batch boundaries. Children forked
    meanwhile should call :func:`child_defaults`.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.handled = False  # the command stopped for the signal itself (no Interrupted raised)
        self.depth = 0
        self.pid = os.getpid()
        self._old: dict[int, Any] = {}

    def install(self) -> bool:
        """Take over SIGINT and SIGTERM (only from the main thread); True if done."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self.pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        """Give SIGINT and SIGTERM back their previous handlers."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a forked child before child_defaults(): what that sets
            if signum == signal.SIGTERM:
                os._exit(128 + signum)
            return
        first = self.signum is None
        if first:
            self.signum = signum
        if self.depth == 0 and first:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section in which a signal is only noted (poll :attr:`signum`). When the section
        ends normally after a signal that the command did not mark :attr:`handled`,
        :class:`Interrupted` is raised then."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.signum is not None and not self.handled:
            raise Interrupted(self.signum)

    @property
    def name(self) -> str:
        """The signal's name (SIGINT, SIGTERM)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def status(self) -> int:
        """The exit status for the signal received: 128 + its number."""
        return 128 + self.signum if self.signum is not None else 0


#: The entry point's Interrupts (a fresh one per ``cli.main`` call).
current = Interrupts()


def child_defaults() -> None:
    """In a forked child: the default SIGTERM (so the parent can stop it) and SIGINT ignored
    (a terminal's Ctrl-C goes to the whole process group; the parent decides and stops it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
