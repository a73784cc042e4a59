"""evolutivo_cli output and input: money, enums, charts, the bill run's arithmetic, usage files and
their checkpoint, `-o` anywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from evolutivo.balance.v1 import ledger_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo_cli.app import lift_output_flags
from evolutivo_cli.charts import bars, sparkline
from evolutivo_cli.commands.balances import history_points
from evolutivo_cli.commands.bills import OpenCycle, due_cycles, next_billing_day
from evolutivo_cli.errors import CliError
from evolutivo_cli.parsing import duration, instant
from evolutivo_cli.render import amount, decimal, enum, enum_value, money, to_money
from evolutivo_cli.usage_file import Checkpoint, Tally, count_events, detect_format, read_events
from rich.console import Console


@pytest.mark.parametrize(
    ("value", "currency", "shown"),
    [
        (Decimal("1234.5"), "EUR", "1,234.50 EUR"),
        (Decimal("-0.01"), "USD", "-0.01 USD"),
        (Decimal("0.0004"), "EUR", "0.0004 EUR"),
        (Decimal("1500"), "JPY", "1,500 JPY"),
        (Decimal("1.234"), "KWD", "1.234 KWD"),
    ],
)
def test_amounts_show_the_currency_decimals_and_never_lose_precision(value: Decimal, currency: str, shown: str) -> None:
    assert amount(value, currency) == shown


def test_money_round_trips_exactly() -> None:
    for value in (Decimal("0"), Decimal("-12.345678901"), Decimal("99999999.99")):
        assert decimal(to_money(value, "EUR")) == value
    assert money(to_money(Decimal("-7.5"), "EUR")) == "-7.50 EUR"
    with pytest.raises(ValueError, match="9 decimals"):
        to_money(Decimal("0.0000000001"), "EUR")


def test_enums_show_short_names_and_accept_them() -> None:
    account = account_pb2.Account(status=account_pb2.ACCOUNT_STATUS_SUSPENDED)
    assert enum(account, "status") == "suspended"
    assert enum(account, "type") == ""
    descriptor = account_pb2.AccountStatus.DESCRIPTOR
    assert enum_value(descriptor, "closed") == account_pb2.ACCOUNT_STATUS_CLOSED
    assert enum_value(descriptor, "ACCOUNT_STATUS_ACTIVE") == account_pb2.ACCOUNT_STATUS_ACTIVE
    with pytest.raises(ValueError, match="active, suspended, closed"):
        enum_value(descriptor, "unspecified")


def test_sparkline_spans_low_to_high_and_resamples() -> None:
    assert sparkline([Decimal(0), Decimal(5), Decimal(10)]) == "▁▅█"
    assert sparkline([Decimal(3)] * 4) == "▅▅▅▅"
    assert sparkline([]) == ""
    long = [Decimal(i) for i in range(200)]
    line = sparkline(long, width=20)
    assert len(line) == 20 and line[0] == "▁" and line[-1] == "█"


def test_history_points_walk_back_from_the_balance_now() -> None:
    def entry(day: int, value: str) -> ledger_pb2.LedgerEntry:
        e = ledger_pb2.LedgerEntry(amount=to_money(Decimal(value), "EUR"))
        e.effective_time.FromDatetime(datetime(2031, 1, day, tzinfo=UTC))
        return e

    # Newest first, as ListLedgerEntries returns them: +100 charge, +21 tax, -121 payment.
    entries = [entry(20, "-121"), entry(10, "21"), entry(5, "100")]
    points = history_points(Decimal(0), entries)
    assert [value for _, value in points] == [Decimal(100), Decimal(121), Decimal(0)]
    assert [when.day for when, _ in points] == [5, 10, 20]


def test_aging_bars_scale_to_the_largest_bucket() -> None:
    console = Console(width=100, record=True)
    console.print(bars([("current", Decimal(100)), ("1-30", Decimal(50)), ("90+", Decimal(0))], "EUR", width=20))
    lines = console.export_text().splitlines()
    assert lines[0].count("█") == 20 and "100.00 EUR" in lines[0]
    assert lines[1].count("█") == 10
    assert lines[2].count("█") == 0 and "0.00 EUR" in lines[2]


def test_a_bill_run_closes_the_cycles_ended_a_delay_before_the_target() -> None:
    start = datetime(2031, 3, 1, tzinfo=UTC)
    cycles = [
        OpenCycle("rome", "c1", start - timedelta(hours=1)),  # Europe/Rome midnight
        OpenCycle("new_york", "c2", start + timedelta(hours=5)),  # America/New_York midnight
        OpenCycle("kolkata", "c3", start - timedelta(hours=5, minutes=30)),
        OpenCycle("later", "c4", start + timedelta(days=14)),
    ]
    last = next_billing_day(cycles)
    assert last == start + timedelta(hours=5)
    delay = timedelta(hours=1)
    assert {c.account_id for c in due_cycles(cycles, last + delay, delay)} == {"rome", "new_york", "kolkata"}
    assert {c.account_id for c in due_cycles(cycles, last, delay)} == {"rome", "kolkata"}
    assert next_billing_day([]) is None


@pytest.mark.parametrize(
    ("args", "lifted"),
    [
        (["accounts", "list", "-o", "json"], ["-o", "json", "accounts", "list"]),
        (["accounts", "list", "--output=json"], ["--output=json", "accounts", "list"]),
        (["-ojson", "bills", "get", "x"], ["-ojson", "bills", "get", "x"]),
        (["usage", "record", "a", "--", "-o", "json"], ["usage", "record", "a", "--", "-o", "json"]),
    ],
)
def test_output_flag_may_come_anywhere(args: list[str], lifted: list[str]) -> None:
    assert lift_output_flags(args) == lifted


def test_durations_and_instants() -> None:
    assert duration("1w2d") == timedelta(days=9)
    assert duration("36h") == timedelta(hours=36)
    assert duration("1d12h30m") == timedelta(days=1, hours=12, minutes=30)
    assert instant("2031-03-01") == datetime(2031, 3, 1, tzinfo=UTC)
    assert instant("2031-03-01T10:00:00+02:00") == datetime(2031, 3, 1, 8, tzinfo=UTC)
    for bad in ("7", "d7", "1x", "0s"):
        with pytest.raises(CliError):
            duration(bad)
    with pytest.raises(CliError, match="ISO 8601"):
        instant("tomorrow")


def test_csv_usage_columns_fill_the_event_and_the_rest_are_properties(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        "event_id,account_id,event_type,event_time,quantity,region\n"
        "e1,acc,api.call,2031-03-01T10:00:00Z,3,eu\n"
        "\n"
        "e2,acc,api.call,2031-03-01T11:00:00Z,,\n",
        encoding="utf-8",
    )
    assert detect_format(path) == "csv"
    assert count_events(path, "csv") == 2
    lines = list(read_events(path, "csv"))
    assert [(line.number, line.event.event_id) for line in lines] == [(2, "e1"), (4, "e2")]
    first = lines[0].event
    assert (first.account_id, first.quantity, dict(first.properties)) == ("acc", "3", {"region": "eu"})
    assert first.event_time.ToDatetime(tzinfo=UTC) == datetime(2031, 3, 1, 10, tzinfo=UTC)
    assert dict(lines[1].event.properties) == {}
    assert [line.event.event_id for line in read_events(path, "csv", after_line=2)] == ["e2"]


def test_json_lines_usage_and_its_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "usage.data"
    events = [
        {"event_id": "e1", "account_id": "a", "event_type": "api.call", "event_time": "2031-03-01T10:00:00Z"},
        {"eventId": "e2", "accountId": "a", "eventType": "sms.sent", "properties": {"country": "IT"}},
    ]
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n", encoding="utf-8")
    assert detect_format(path) == "jsonl"
    assert [line.event.event_id for line in read_events(path, "jsonl")] == ["e1", "e2"]

    path.write_text(json.dumps(events[0]) + "\n" + json.dumps({"account_id": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(CliError, match=r"usage.data:2: event_id is required"):
        list(read_events(path, "jsonl"))
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(CliError, match=r":1: not JSON"):
        list(read_events(path, "jsonl"))
    path.write_text('{"event_id": "e", "quantity": 3.5e}\n', encoding="utf-8")
    with pytest.raises(CliError, match=r":1:"):
        list(read_events(path, "jsonl"))


def test_checkpoint_is_kept_per_file_and_survives_a_reload(tmp_path: Path) -> None:
    data = tmp_path / "usage.jsonl"
    data.write_text("", encoding="utf-8")
    path = Checkpoint.default_path(data)
    assert path == tmp_path / "usage.jsonl.checkpoint"
    fresh = Checkpoint.load(path, data)
    assert (fresh.line, fresh.complete) == (0, False)
    fresh.line = 42
    fresh.tally = Tally(sent=40, rated=39, unrated=1)
    fresh.save()
    again = Checkpoint.load(path, data)
    assert (again.line, again.tally.sent, again.tally.unrated) == (42, 40, 1)

    other = tmp_path / "other.jsonl"
    other.write_text("", encoding="utf-8")
    with pytest.raises(CliError, match="is for"):
        Checkpoint.load(path, other)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(CliError, match="unreadable"):
        Checkpoint.load(path, data)
