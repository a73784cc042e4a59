"""Run by the Tryton virtualenv's Python (not the project's): sets up a company in a Tryton database
whose modules trytond-admin has activated, and prints what the tests need as JSON.

The company (EUR), fiscal years around today, the minimal chart of accounts, three taxes (21%, 10%, 0%) and the
invoice sequences, built with proteus through trytond's own test tools (the way Tryton's scenarios
set a database up)."""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal

from proteus import Model, config
from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, create_tax, get_accounts
from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
from trytond.modules.company.tests.tools import create_company, get_company


def main(database: str) -> None:
    config.set_trytond(database=database)
    create_company(currency="EUR")
    company = get_company()
    this_year = datetime.date.today().year
    # Fiscal years from last year to four years ahead: tests move the suite's clock forward.
    for year in range(this_year - 1, this_year + 5):
        fiscalyear = set_fiscalyear_invoice_sequences(
            create_fiscalyear(company, (datetime.date(year, 1, 1), datetime.date(year, 12, 31)))
        )
        fiscalyear.click("create_period")
    create_chart(company)
    accounts = get_accounts(company)
    taxes = {}
    # "exempt" (0%) as billing taxes late fees: a bill with a late fee names it among its taxes.
    for code, rate in (("standard", Decimal("0.21")), ("reduced", Decimal("0.10")), ("exempt", Decimal(0))):
        tax = create_tax(rate, company)
        tax.name = tax.description = f"VAT {code}"
        tax.save()
        taxes[code] = tax.id
    journal = Model.get("account.journal")
    journals = {
        role: journal.find([("code", "=", code)], limit=1)[0].id
        for role, code in (("revenue", "REV"), ("cash", "CASH"), ("general", "MISC"))
    }
    json.dump(
        {
            "company": company.id,
            "accounts": {role: account.id for role, account in accounts.items()},
            "taxes": taxes,
            "journals": journals,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1])
