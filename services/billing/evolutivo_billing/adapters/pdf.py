"""Renders a bill's document view, and a dunning letter's, to PDF with fpdf2.

Deterministic: the PDF's creation date is the bill's issue time (the notice's time) and its file id is derived from
the content, so the same view renders to the same bytes. Text uses the PDF core fonts (Helvetica)
in the Windows-1252 encoding, which covers the Latin alphabets and the euro sign; a character
outside it is printed as its closest unaccented form, else as "?" (docs/billing.md, "Documents")."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from fpdf import FPDF, FontFace
from fpdf.enums import Align, TableBordersLayout, XPos, YPos

from evolutivo_billing.domain.documents import BillDocumentView, Seller
from evolutivo_billing.domain.notices import LetterView, letter_paragraphs

_ENCODING = "windows-1252"
_FONT = "Helvetica"
_GREY = (110, 110, 110)


# Letters without a decomposition to a base letter.
_PLAIN = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "Ŀ": "L", "ŀ": "l"})


def printable(text: str) -> str:
    """`text` with each character the core fonts cannot print replaced (see the module doc)."""
    out = []
    for char in text.translate(_PLAIN):
        try:
            char.encode(_ENCODING)
            out.append(char)
            continue
        except UnicodeEncodeError:
            pass
        plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        try:
            plain.encode(_ENCODING)
            out.append(plain or "?")
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)


class _Document(FPDF):
    def __init__(self, title: str, subject: str, author: str, created: datetime) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.title_text = title
        self.core_fonts_encoding = _ENCODING
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=18)
        self.set_creation_date(created)
        self.set_title(printable(title))
        self.set_author(printable(author))
        self.set_subject(printable(subject))
        self.set_creator("Evolutivo billing")
        self.alias_nb_pages()

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.set_text_color(*_GREY)
        self.cell(0, 5, printable(f"{self.title_text}  -  page {self.page_no()}/{{nb}}"), align=Align.C)
        self.set_text_color(0, 0, 0)

    def text_line(self, text: str, size: float = 10, style: str = "", height: float = 5) -> None:
        self.set_font(_FONT, style=style, size=size)
        self.multi_cell(0, height, printable(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def table_of(
        self,
        headings: Sequence[str],
        rows: Sequence[Sequence[str]],
        widths: Sequence[float],
        align: Sequence[str],
    ) -> None:
        self.set_font(_FONT, size=9)
        with self.table(
            col_widths=tuple(widths),
            text_align=tuple(align),
            borders_layout=TableBordersLayout.HORIZONTAL_LINES,
            headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
            line_height=5,
            width=self.epw,
        ) as table:
            heading = table.row()
            for text in headings:
                heading.cell(printable(text))
            for values in rows:
                row = table.row()
                for text in values:
                    row.cell(printable(text))


def _heading(pdf: _Document, seller: Seller, title: str, facts: Sequence[tuple[str, str]]) -> None:
    """Seller on the left, the document's title and identity on the right."""
    top = pdf.get_y()
    pdf.set_font(_FONT, style="B", size=14)
    pdf.multi_cell(100, 7, printable(seller.name or " "), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=9)
    for line in (*seller.address_lines, *([f"Tax id {seller.tax_id}"] if seller.tax_id else []), seller.email):
        if line:
            pdf.multi_cell(100, 4.5, printable(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    seller_bottom = pdf.get_y()
    pdf.set_xy(120, top)
    pdf.set_font(_FONT, style="B", size=18)
    pdf.cell(75, 9, printable(title), align=Align.R, new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=9)
    for label, value in facts:
        pdf.set_x(120)
        pdf.cell(75, 5, printable(f"{label}: {value}"), align=Align.R, new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_y(max(seller_bottom, pdf.get_y()) + 8)


def _addressee(pdf: _Document, label: str, name: str, lines: Sequence[str]) -> None:
    pdf.set_text_color(*_GREY)
    pdf.text_line(label, size=8)
    pdf.set_text_color(0, 0, 0)
    pdf.text_line(name, size=11, style="B")
    for line in lines:
        pdf.text_line(line, size=9, height=4.5)
    pdf.ln(6)


def render(view: BillDocumentView) -> bytes:
    """The bill's PDF."""
    pdf = _Document(
        f"Invoice {view.bill_number}",
        f"Invoice {view.bill_number} for {view.customer_name}",
        view.seller.name,
        view.created,
    )
    pdf.add_page()
    seller = view.seller
    _heading(
        pdf,
        seller,
        "INVOICE",
        (
            ("Number", view.bill_number),
            ("Issue date", view.issue_date),
            ("Due date", view.due_date),
            ("Period", view.period),
        ),
    )
    _addressee(pdf, "BILL TO", view.customer_name, view.customer_lines)

    # The lines.
    pdf.table_of(
        ("#", "Description", "Period", "Quantity", "Unit price", "Tax", "Amount"),
        [
            (
                str(line.number),
                line.description,
                line.period,
                line.quantity,
                line.unit_price,
                line.tax_code,
                line.amount,
            )
            for line in view.lines
        ]
        or [("", "No charges in this period", "", "", "", "", "")],
        (8, 48, 44, 18, 18, 16, 28),
        ("RIGHT", "LEFT", "LEFT", "RIGHT", "RIGHT", "LEFT", "RIGHT"),
    )
    pdf.ln(5)

    # Taxes per tax code.
    if view.taxes:
        pdf.table_of(
            ("Tax code", "Rate", "Taxable amount", "Tax"),
            [(t.tax_code, t.rate, t.taxable_amount, t.tax_amount) for t in view.taxes],
            (50, 30, 50, 50),
            ("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        )
        pdf.ln(5)

    # Totals, right-aligned.
    for label, value in view.totals:
        bold = label in ("Total", "Amount due")
        pdf.set_font(_FONT, style="B" if bold else "", size=10)
        pdf.set_x(95)
        pdf.cell(55, 6, printable(label), align=Align.R)
        pdf.cell(45, 6, printable(value), align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)

    # How to pay.
    pdf.text_line(f"Please pay {view.amount_due} by {view.due_date}.", size=10, style="B")
    pdf.text_line(f"Payment reference: {view.payment_reference}", size=9, height=4.5)
    for line in seller.payment_instructions:
        pdf.text_line(line, size=9, height=4.5)
    return bytes(pdf.output())


def render_letter(view: LetterView) -> bytes:
    """A dunning letter's PDF: laid out like a bill, with the overdue bills in place of the lines."""
    pdf = _Document(view.title, f"{view.title} for {view.customer_name}", view.seller.name, view.created)
    pdf.add_page()
    seller = view.seller
    _heading(
        pdf,
        seller,
        view.title.upper(),
        (("Date", view.letter_date), ("Reference", view.payment_reference), ("Days past due", str(view.days_past_due))),
    )
    _addressee(pdf, "TO", view.customer_name, view.customer_lines)
    pdf.text_line(f"Dear {view.customer_name},", size=10)
    pdf.ln(2)
    pdf.text_line(view.opening, size=10)
    pdf.ln(4)

    pdf.table_of(
        ("Invoice", "Issue date", "Due date", "Days overdue", "Total", "Unpaid"),
        list(view.bills) or [("", "", "", "", "", "")],
        (36, 26, 26, 24, 34, 34),
        ("LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
    )
    pdf.ln(5)
    for label, value in view.totals:
        pdf.set_font(_FONT, style="B" if label == "Overdue amount" else "", size=10)
        pdf.set_x(95)
        pdf.cell(55, 6, printable(label), align=Align.R)
        pdf.cell(45, 6, printable(value), align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)

    for paragraph in letter_paragraphs(view):
        pdf.text_line(paragraph, size=10)
        pdf.ln(2)
    pdf.ln(2)
    if seller.payment_instructions:
        pdf.text_line("How to pay", size=10, style="B")
        for line in seller.payment_instructions:
            pdf.text_line(line, size=9, height=4.5)
        pdf.text_line(f"Reference: {view.payment_reference}", size=9, height=4.5)
        pdf.ln(4)
    pdf.text_line("Yours sincerely,", size=10)
    pdf.text_line(seller.name or " ", size=10, style="B")
    return bytes(pdf.output())
