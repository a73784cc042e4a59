"""Usage files for `evolutivo usage import`, and the checkpoint that makes an import resumable.

CSV: a header row; the columns event_id, account_id, event_type, event_time (ISO 8601), quantity
and service_id fill the event, every other non-empty column becomes a property. JSON lines: one
UsageEvent per line as protobuf JSON (`{"event_id": ..., "event_time": "2031-03-01T09:00:00Z",
"properties": {...}}`). Blank lines are skipped.

The checkpoint (default FILE.checkpoint) records the file and the last line the services
confirmed. A rerun starts after it; resending the batch that was in flight when the import stopped
is harmless because charging is idempotent on event_id.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from evolutivo.charging.v1 import usage_pb2
from google.protobuf import json_format

from evolutivo_cli.errors import CliError

FileFormat = Literal["csv", "jsonl"]
EVENT_COLUMNS = ("event_id", "account_id", "event_type", "event_time", "quantity", "service_id")


@dataclass(frozen=True)
class Line:
    #: 1-based line of the file the event ends on (CSV: with its header).
    number: int
    event: usage_pb2.UsageEvent


def detect_format(path: Path, given: str | None = None) -> FileFormat:
    if given:
        if given not in ("csv", "jsonl"):
            raise CliError(f"--format: {given!r} is not csv or jsonl")
        return "csv" if given == "csv" else "jsonl"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            if raw.strip():
                return "jsonl" if raw.lstrip().startswith("{") else "csv"
    return "jsonl"


def count_events(path: Path, fmt: FileFormat) -> int:
    """Non-blank lines, less the CSV header: the progress bar's total."""
    with open(path, encoding="utf-8") as fh:
        lines = sum(1 for raw in fh if raw.strip())
    return max(lines - 1, 0) if fmt == "csv" else lines


def _event(data: dict[str, Any], number: int, path: Path) -> usage_pb2.UsageEvent:
    event = usage_pb2.UsageEvent()
    try:
        json_format.ParseDict(data, event)
    except json_format.ParseError as exc:
        raise CliError(f"{path}:{number}: {exc}") from None
    if not event.event_id:
        # Without an id a retry or a resumed import could charge the event twice.
        raise CliError(f"{path}:{number}: event_id is required (imports are idempotent on it)")
    return event


def read_events(path: Path, fmt: FileFormat, after_line: int = 0) -> Iterator[Line]:
    """The file's events, from the first one after ``after_line``."""
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if number <= after_line or not raw.strip():
                    continue
                try:
                    data = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise CliError(f"{path}:{number}: not JSON: {exc.msg}") from None
                if not isinstance(data, dict):
                    raise CliError(f"{path}:{number}: expected a JSON object")
                yield Line(number, _event(data, number, path))
        return
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "event_id" not in reader.fieldnames:
            raise CliError(
                f"{path}: the CSV header must name the columns, event_id among them ({', '.join(EVENT_COLUMNS)})"
            )
        for row in reader:
            number = reader.line_num
            if number <= after_line or not any((value or "").strip() for value in row.values()):
                continue
            if None in row:
                raise CliError(f"{path}:{number}: more values than header columns")
            fields: dict[str, Any] = {k: v for k, v in row.items() if k in EVENT_COLUMNS and v}
            properties = {k: v for k, v in row.items() if k and k not in EVENT_COLUMNS and v}
            if properties:
                fields["properties"] = properties
            yield Line(number, _event(fields, number, path))


@dataclass
class Tally:
    sent: int = 0
    rated: int = 0
    unrated: int = 0
    rejected: int = 0
    #: Refused with an error (invalid event, or the same id with another payload).
    refused: int = 0
    charges: int = 0

    def add(self, result: usage_pb2.UsageResult) -> None:
        self.sent += 1
        if result.HasField("error") and result.error.code:
            self.refused += 1
        elif result.status == usage_pb2.USAGE_STATUS_RATED:
            self.rated += 1
        elif result.status == usage_pb2.USAGE_STATUS_REJECTED:
            self.rejected += 1
        else:
            self.unrated += 1
        self.charges += len(result.charges)

    def line(self) -> str:
        return f"rated {self.rated} · unrated {self.unrated} · rejected {self.rejected} · refused {self.refused}"


@dataclass
class Checkpoint:
    """Where an import of ``file`` stands: ``line`` is the last line confirmed by the services."""

    path: Path
    file: str
    line: int = 0
    complete: bool = False
    tally: Tally = field(default_factory=Tally)

    @classmethod
    def default_path(cls, file: Path) -> Path:
        return file.with_name(file.name + ".checkpoint")

    @classmethod
    def load(cls, path: Path, file: Path) -> Checkpoint:
        """The checkpoint at ``path``, or a fresh one; refuses one written for another file."""
        target = str(file.resolve())
        if not path.exists():
            return cls(path, target)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            saved = cls(
                path, data["file"], int(data["line"]), bool(data.get("complete")), Tally(**data.get("tally", {}))
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"checkpoint {path} is unreadable ({exc}); remove it or pass --restart") from None
        if saved.file != target:
            raise CliError(
                f"checkpoint {path} is for {saved.file}, not {target}; pass --restart or another --checkpoint"
            )
        return saved

    def save(self) -> None:
        # Written beside and renamed: a crash mid-write never leaves a torn checkpoint.
        data = {"file": self.file, "line": self.line, "complete": self.complete, "tally": asdict(self.tally)}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
