"""The `evolutivo` console script, run as a user runs it (a subprocess), against the five services:
accounts created and listed as JSON, a usage file imported in two runs (the second resumes from
the checkpoint and sends only the rest), bills, and the guided demo, which moves this module's
own stack's clock by about two months (so it runs last)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack

pytestmark = pytest.mark.e2e

EVOLUTIVO = shutil.which("evolutivo", path=str(Path(sys.executable).parent)) or "evolutivo"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Billing closes cycles and runs collections twice a second, so the demo's waits are short.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_COLLECTIONS_CHECK_SECONDS": "0.5",
            },
        ) as running:
            yield running


def cli(stack: Stack, *args: str, cwd: Path | None = None, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOLUTIVO_")}
    env.update({f"EVOLUTIVO_{service.upper()}_ADDRESS": address for service, address in stack.addresses.items()})
    env["EVOLUTIVO_CONFIG"] = str(Path(cwd or ".") / "no-config.toml")
    # As after `make up`: the CLI finds the stack's development credentials (CA, client
    # certificate, token) in its data folder, with no configuration.
    env["EVOLUTIVO_DATA_DIR"] = str(stack.data_dir)
    env["COLUMNS"] = "200"
    done = subprocess.run([EVOLUTIVO, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if check is not None:
        assert done.returncode == check, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_accounts_create_and_list_as_json_and_errors_exit_with_their_code(stack: Stack, tmp_path: Path) -> None:
    name = f"Acme {uuid.uuid4().hex[:6]}"
    created = as_json(
        cli(stack, "accounts", "create", "--name", name, "--tz", "Europe/Rome", "-o", "json", cwd=tmp_path)
    )
    assert (created["display_name"], created["time_zone"], created["status"]) == (
        name,
        "Europe/Rome",
        "ACCOUNT_STATUS_ACTIVE",
    )

    listed = as_json(cli(stack, "-o", "json", "accounts", "list", "--query", name, cwd=tmp_path))
    assert [a["account_id"] for a in listed["accounts"]] == [created["account_id"]]

    table = cli(stack, "accounts", "list", "--query", name, cwd=tmp_path).stdout
    assert created["account_id"] in table and name in table

    refused = cli(stack, "accounts", "create", "--name", "Bad", "--currency", "EURO", cwd=tmp_path, check=3)
    assert "account.currency_code" in refused.stderr
    missing = cli(stack, "accounts", "get", str(uuid.uuid4()), "-o", "json", cwd=tmp_path, check=2)
    assert json.loads(missing.stderr)["error"]["code"] == "NOT_FOUND"


def test_usage_import_resumes_from_its_checkpoint_and_the_bills_follow(stack: Stack, tmp_path: Path) -> None:
    code = f"api_{uuid.uuid4().hex[:8]}"
    cli(stack, "offers", "create", "--code", code, "--usage", "api.call=0.10", "--activate", "-o", "json", cwd=tmp_path)
    account = as_json(cli(stack, "accounts", "create", "--name", f"Importer {code}", "-o", "json", cwd=tmp_path))
    account_id = account["account_id"]
    cli(stack, "purchases", "create", account_id, code, "-o", "json", cwd=tmp_path)

    # Charging learns the account and the purchase over NATS: probe until an event is rated.
    deadline = time.monotonic() + 60
    while True:
        probe = as_json(cli(stack, "usage", "record", account_id, "api.call", "-o", "json", cwd=tmp_path))
        if probe["status"] == "USAGE_STATUS_RATED":
            break
        assert time.monotonic() < deadline, f"charging never rated the account's usage: {probe}"
        time.sleep(0.5)

    # Event times inside the purchase, and in the past for charging.
    (purchase,) = as_json(cli(stack, "purchases", "list", account_id, "-o", "json", cwd=tmp_path))["purchases"]
    start = datetime.fromisoformat(purchase["start_time"].replace("Z", "+00:00")) + timedelta(milliseconds=10)
    file = tmp_path / "usage.csv"
    ids = [f"cli-e2e-{uuid.uuid4().hex}" for _ in range(7)]
    with open(file, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_id", "account_id", "event_type", "event_time", "quantity", "region"])
        for index, event_id in enumerate(ids):
            moment = (start + timedelta(milliseconds=10 * index)).isoformat().replace("+00:00", "Z")
            writer.writerow([event_id, account_id, "api.call", moment, "2", "eu"])

    first = as_json(
        cli(stack, "usage", "import", str(file), "--batch-size", "2", "--max-events", "4", "-o", "json", cwd=tmp_path)
    )
    assert (first["sent"], first["rated"], first["complete"], first["last_line"]) == (4, 4, False, 5)
    second = as_json(cli(stack, "usage", "import", str(file), "--batch-size", "2", "-o", "json", cwd=tmp_path))
    assert (second["resumed_after_line"], second["sent"], second["rated"], second["complete"]) == (5, 7, 7, True)
    again = cli(stack, "usage", "import", str(file), "-o", "json", cwd=tmp_path)
    assert as_json(again)["sent"] == 7 and "imported already" in again.stderr

    charges = as_json(cli(stack, "usage", "charges", account_id, "-n", "1000", "-o", "json", cwd=tmp_path))["charges"]
    imported = [c for c in charges if c.get("event_id") in ids]
    assert sorted(c["event_id"] for c in imported) == sorted(ids), "each event charged once"
    assert all(c["amount"] == {"currency_code": "EUR", "nanos": 200_000_000} for c in imported), "2 x 0.10"

    # Billing receives the charges over NATS; then bill now issues them.
    def unbilled() -> int:
        found = as_json(cli(stack, "bills", "unbilled", account_id, "-n", "1000", "-o", "json", cwd=tmp_path))
        return len(found.get("items", []))

    deadline = time.monotonic() + 60
    while unbilled() < len(ids) + 1:
        assert time.monotonic() < deadline, "billing never received the charges"
        time.sleep(0.5)
    bill = as_json(cli(stack, "bills", "now", account_id, "-o", "json", cwd=tmp_path))
    assert bill["status"] == "BILL_STATUS_ISSUED"
    listed = as_json(cli(stack, "bills", "list", account_id, "-o", "json", cwd=tmp_path))
    assert [b["bill_id"] for b in listed["bills"]] == [bill["bill_id"]]
    shown = cli(stack, "bills", "get", bill["bill_id"], "--pdf", str(tmp_path), cwd=tmp_path)
    assert bill["bill_number"] in shown.stdout and "api_call" in shown.stdout
    pdf = tmp_path / f"{bill['bill_number']}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")

    note = as_json(
        cli(
            stack,
            "bills",
            "credit-note",
            bill["bill_id"],
            "--line",
            "1=0.20",
            "--reason",
            "goodwill",
            "-o",
            "json",
            cwd=tmp_path,
        )
    )
    assert (note["bill_id"], note["total"]) == (bill["bill_id"], {"currency_code": "EUR", "nanos": 200_000_000})
    notes = as_json(cli(stack, "bills", "credit-notes", account_id, "-o", "json", cwd=tmp_path))["credit_notes"]
    assert [n["credit_note_id"] for n in notes] == [note["credit_note_id"]]

    # The bill run: the clock moves past the account's cycle end; its cycle closes and is billed.
    run = as_json(cli(stack, "bills", "run", "--account", account_id, "-o", "json", cwd=tmp_path))
    assert (run["due"], run["closed"], run["remaining"]) == (1, 1, [])
    assert len(as_json(cli(stack, "bills", "list", account_id, "-o", "json", cwd=tmp_path))["bills"]) == 2
    history = as_json(cli(stack, "balances", "history", account_id, "-o", "json", cwd=tmp_path))
    # Walked back from the balance now, the first point is the oldest entry alone: the ledger adds up.
    oldest = history["entries"][-1]["amount"]
    first = Decimal(oldest.get("units", "0")) + Decimal(oldest.get("nanos", 0)) / Decimal(10**9)
    assert Decimal(history["points"][0]["balance"]) == first
    assert len(history["points"]) == len(history["entries"])


def test_the_demo_plays_the_lifecycle(stack: Stack, tmp_path: Path) -> None:
    done = cli(stack, "demo", "-o", "json", cwd=tmp_path)
    summary = json.loads(done.stdout)
    assert [c["time_zone"] for c in summary["customers"]] == ["Europe/Rome", "America/New_York", "Asia/Kolkata"]
    assert all(c["bill_ids"] for c in summary["customers"])
    for step in ("pays on time", "paid", "overdue", "dunning", "suspended", "Where to look next"):
        assert step in done.stderr, step
    kolkata = summary["customers"][2]["account_id"]
    cases = as_json(cli(stack, "collections", "list", "--account", kolkata, "-o", "json", cwd=tmp_path))
    actions = as_json(
        cli(stack, "collections", "get", cases["collections_cases"][0]["case_id"], "-o", "json", cwd=tmp_path)
    )["actions"]
    assert [a["state"] for a in actions[:3]] == ["COLLECTIONS_ACTION_STATE_DONE"] * 3
    aging = as_json(cli(stack, "collections", "aging", "-o", "json", cwd=tmp_path))
    assert [t["currency_code"] for t in aging["totals"]] == ["EUR"]
    rerun = json.loads(cli(stack, "demo", "-o", "json", cwd=tmp_path).stdout)
    assert rerun["run"] != summary["run"]
