"""The writer's durable journal: append-only segment files of checksummed records.

Record layout: `[u32 length][u32 crc32][payload]`, little-endian; payload is `db.ops.encode`.
Segments are named by the first sequence number they hold, so they sort in order. A separate
`committed` file holds the highest sequence number known to be in the database; it is written
without fsync because losing it only means replaying ops that are already there, and every op is
idempotent. All methods are blocking: the writer calls them from its own single I/O thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
SEGMENT_GLOB = "seg-*.log"


class JournalLocked(RuntimeError):
    """Another process holds this journal directory."""


@dataclass
class ReplayReport:
    """What start-up found in the journal."""

    records: int = 0
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # one line per damaged segment
    last_seq: int = 0


def _segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:020d}.log"


def scan(path: Path) -> tuple[list[bytes], int]:
    """The valid records of one segment and the byte offset where validity ends."""
    data = path.read_bytes()
    records: list[bytes] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD or end > len(data):
            break
        payload = data[pos + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        records.append(payload)
        pos = end
    return records, pos


class Journal:
    """Segmented append-only journal with explicit fsync and trimming of committed segments."""

    def __init__(self, directory: str | Path, segment_bytes: int):
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock_file: BinaryIO | None = None
        self._active: BinaryIO | None = None
        self._active_path: Path | None = None
        self._active_size = 0
        # (path, last seq it holds) of segments closed for writing, oldest first.
        self._closed: list[tuple[Path, int]] = []
        self._active_last_seq = 0
        self._bytes = 0

    @property
    def bytes_on_disk(self) -> int:
        return self._bytes

    def open(self, seq_of: Callable[[bytes], int]) -> ReplayReport:
        """Lock the directory, read every segment, and start a fresh active segment.

        `seq_of(payload) -> int` extracts a record's sequence number (the journal does not parse
        payloads itself). Records above the committed mark come back as `pending`, in order.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "lock", "ab")  # noqa: SIM115 - held for the lifetime
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise JournalLocked(f"journal {self.dir} is in use by another process") from None
        committed = self.read_committed()
        report = ReplayReport(last_seq=committed)
        for path in sorted(self.dir.glob(SEGMENT_GLOB)):
            records, valid_end = scan(path)
            size = path.stat().st_size
            if valid_end < size:
                report.corrupt.append(self._quarantine_tail(path, valid_end, size))
            last = 0
            for payload in records:
                seq = seq_of(payload)
                last = max(last, seq)
                report.records += 1
                if seq > committed:
                    report.pending.append((seq, payload))
            report.last_seq = max(report.last_seq, last)
            if path.stat().st_size == 0:
                path.unlink()
                continue
            self._closed.append((path, last))
            self._bytes += path.stat().st_size
        report.pending.sort(key=lambda item: item[0])
        self._start_segment(report.last_seq + 1)
        return report

    def _quarantine_tail(self, path: Path, valid_end: int, size: int) -> str:
        """Move the bytes after the last valid record aside, so they are kept, not replayed."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        with open(path, "rb") as src, open(aside, "wb") as dst:
            src.seek(valid_end)
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        with open(path, "r+b") as f:
            f.truncate(valid_end)
            os.fsync(f.fileno())
        msg = (
            f"{path.name}: {size - valid_end} bytes after offset {valid_end} are not valid "
            f"records; kept in {aside.name}, not replayed"
        )
        log.error("journal corrupt tail: %s", msg)
        return msg

    def _start_segment(self, first_seq: int) -> None:
        path = self.dir / _segment_name(first_seq)
        self._active = open(path, "ab")  # noqa: SIM115 - closed on rotation or close()
        self._active_path = path
        self._active_size = self._active.tell()
        self._active_last_seq = first_seq - 1
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, records: list[tuple[int, bytes]]) -> None:
        """Write records and fsync once (group commit); rotate after a full segment."""
        assert self._active is not None, "journal is not open"
        buf = bytearray()
        for _seq, payload in records:
            buf += HEADER.pack(len(payload), zlib.crc32(payload))
            buf += payload
        self._active.write(buf)
        self._active.flush()
        os.fsync(self._active.fileno())
        self._active_size += len(buf)
        self._bytes += len(buf)
        self._active_last_seq = records[-1][0]
        if self._active_size >= self.segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self._active is not None and self._active_path is not None
        self._active.close()
        self._closed.append((self._active_path, self._active_last_seq))
        self._start_segment(self._active_last_seq + 1)

    def mark_committed(self, seq: int) -> None:
        """Record the committed mark and delete segments holding nothing above it."""
        tmp = self.dir / "committed.tmp"
        tmp.write_text(str(seq))
        os.replace(tmp, self.dir / "committed")
        # An active segment fully committed is rotated away once it holds a little data,
        # so a restart replays at most that little.
        if self._active_size >= min(64 * 1024, self.segment_bytes // 4) and (
            self._active_last_seq <= seq
        ):
            self._rotate()
        while self._closed and self._closed[0][1] <= seq:
            path, _ = self._closed.pop(0)
            with contextlib.suppress(FileNotFoundError):
                self._bytes -= path.stat().st_size
                path.unlink()

    def read_committed(self) -> int:
        try:
            return int((self.dir / "committed").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
            if self._active_path is not None and self._active_size == 0:
                with contextlib.suppress(FileNotFoundError):
                    self._active_path.unlink()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
