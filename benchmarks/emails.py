"""Banking77 tickets wrapped as the e-mails a helpdesk really receives, for the cleaning
benchmark: each ticket becomes the newest message of an e-mail written in one of several
clients' styles, with what those clients and their users add around it.

- clients: Outlook desktop HTML (WordSection1, From:/Sent: header block), Outlook plain
  text ("-----Original Message-----" or a rule of underscores), Gmail HTML (gmail_quote,
  blockquote), Gmail plain text (wrapped at 78, "> " quotes), Apple Mail / iPhone
  ("On ... wrote:", "> " quotes), Thunderbird (wrapped at 72, "-- " signatures); each in an
  English, German or French locale (Von:/Gesendet:, "Am ... schrieb", De :/Envoyé :,
  "Le ... a écrit :")
- a greeting, a closing and a name block (some with title, company, phone), legal
  disclaimers in three languages, "Sent from my iPhone" lines, gateway banners
- the quoted earlier thread: the bank's replies and the customer's earlier tickets, which
  are OTHER Banking77 tickets of DIFFERENT intents (an encoder that reads the quotes is
  misled); a quarter of the e-mails carry three to five earlier messages, which takes them
  far past 256 tokens
- sometimes a forwarded e-mail below the ticket, and sometimes a forward with nothing
  written above it (the ticket is then the forwarded message's body)

    python benchmarks/emails.py data/banking77/test.csv /tmp/test_emails.csv [--seed 0]

writes the same columns (text, category) with text the e-mail and a column clean_text
holding the original ticket.
"""

from __future__ import annotations

import argparse
import csv
import html
import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["wrap_file", "wrap_ticket"]

FIRST = {
    "en": ["Sarah", "James", "Emily", "Michael", "Olivia", "Daniel", "Chloe", "Tom", "Priya", "Liam", "Grace", "Sam"],
    "de": ["Anna", "Lukas", "Katrin", "Jonas", "Sabine", "Felix", "Julia", "Stefan", "Lena", "Markus"],
    "fr": ["Julie", "Nicolas", "Camille", "Antoine", "Sophie", "Julien", "Claire", "Mathieu", "Léa", "Pierre"],
}
LAST = {
    "en": ["Thompson", "Walker", "Patel", "Hughes", "O'Brien", "Clarke", "Evans", "Bennett", "Reid", "Khan"],
    "de": ["Müller", "Schmidt", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Schäfer", "Koch", "Krüger"],
    "fr": ["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Rousseau", "Fournier", "Mercier"],
}
COMPANY = {
    "en": ["Northwind Traders Ltd", "Blue Harbour Consulting", "Acme Logistics plc", "Greenfield Estates"],
    "de": ["Schmidt & Partner GmbH", "Nordlicht Logistik AG", "Weber Bau GmbH & Co. KG", "Alpen Software GmbH"],
    "fr": ["Dubois Conseil SARL", "Atelier Lumière SAS", "Transports Girard", "Groupe Mercier SA"],
}
TITLE = {
    "en": ["Finance Manager", "Office Manager", "Senior Accountant", "Operations Lead", "Director"],
    "de": ["Buchhaltung", "Geschäftsführer", "Teamleiterin Einkauf", "Projektleiter"],
    "fr": ["Responsable administratif", "Comptable", "Directrice des opérations", "Gérant"],
}
CITY = {
    "en": ["London EC2A 4NE", "Manchester M1 2AB", "Bristol BS1 5TR"],
    "de": ["10115 Berlin", "80331 München", "20095 Hamburg"],
    "fr": ["75008 Paris", "69002 Lyon", "33000 Bordeaux"],
}
PHONE = {"en": "+44 20 7946 {:04d}", "de": "+49 30 {:07d}", "fr": "+33 1 42 {:02d} {:02d} 10"}

GREETING = {
    "en": ["Hi,", "Hello,", "Hi team,", "Hello team,", "Dear Sir or Madam,", "Hi there,", "Good morning,", "Dear Support,",
           "Hello Support Team,", "Hi all,"],
    "de": ["Hallo,", "Guten Tag,", "Sehr geehrte Damen und Herren,", "Hallo zusammen,", "Liebes Support-Team,"],
    "fr": ["Bonjour,", "Madame, Monsieur,", "Bonjour à tous,", "Bonsoir,"],
}  # fmt: skip
CLOSING = {
    "en": ["Best regards,", "Kind regards,", "Regards,", "Thanks,", "Thank you,", "Many thanks,", "Cheers,", "Best,",
           "Thanks in advance,", "Sincerely,", "Thanks!", "Thank you in advance.", "Warm regards,"],
    "de": ["Mit freundlichen Grüßen", "Viele Grüße", "Beste Grüße", "Danke und viele Grüße", "MfG", "Freundliche Grüße"],
    "fr": ["Cordialement,", "Bien cordialement,", "Bien à vous,", "Merci d'avance,", "Salutations,",
           "Merci et bonne journée,"],
}  # fmt: skip
# Less common closings, for one e-mail in twenty.
RARE_CLOSING = {
    "en": ["Have a great day,", "Speak soon,", "Thanks heaps,", "Much appreciated,", "Talk soon,", "Ta,"],
    "de": ["Schöne Grüße aus {city}", "Bis bald", "Herzlichst", "Einen schönen Tag noch,"],
    "fr": ["Bonne fin de journée,", "Bises,", "Merci encore et bonne soirée,", "À plus,"],
}
# A line some people put between the request and the closing.
PRE_CLOSING = {
    "en": [
        "Thanks in advance for your help.",
        "Looking forward to hearing from you.",
        "Any help would be appreciated.",
    ],
    "de": ["Vielen Dank für Ihre Hilfe.", "Ich freue mich auf Ihre Rückmeldung."],
    "fr": ["Merci pour votre aide.", "Dans l'attente de votre réponse."],
}
DISCLAIMER = {
    "en": [
        "This e-mail and any attachments are confidential and may be privileged. If you are not the intended recipient, "
        "please notify the sender immediately and delete this e-mail. Any unauthorised use, disclosure or copying is "
        "strictly prohibited. {company} is registered in England and Wales under company number 0{num}.",
        "CONFIDENTIALITY NOTICE: The information contained in this message is confidential and intended solely for the "
        "use of the addressee. If you have received this message in error, please contact the sender and destroy all "
        "copies.",
        "DISCLAIMER: This email is intended only for the person or entity to which it is addressed and may contain "
        "confidential material. Emails are not secure and cannot be guaranteed to be error free.",
        "This message contains information which may be confidential and privileged. Unless you are the addressee (or "
        "authorized to receive for the addressee), you may not use, copy or disclose to anyone the message or any "
        "information contained in the message.",
    ],
    "de": [
        "Diese E-Mail enthält vertrauliche und/oder rechtlich geschützte Informationen. Wenn Sie nicht der richtige "
        "Adressat sind oder diese E-Mail irrtümlich erhalten haben, informieren Sie bitte sofort den Absender und "
        "vernichten Sie diese E-Mail. Das unerlaubte Kopieren sowie die unbefugte Weitergabe dieser Mail ist nicht "
        "gestattet.\n{company}, Sitz: {city}, Registergericht: Amtsgericht, HRB {num}",
        "Vertraulichkeitshinweis: Diese Nachricht ist ausschließlich für den bezeichneten Adressaten bestimmt.",
    ],
    "fr": [
        "Ce message et toutes les pièces jointes sont confidentiels et établis à l'intention exclusive de ses "
        "destinataires. Toute utilisation ou diffusion non autorisée est interdite. Si vous avez reçu ce message par "
        "erreur, merci de le détruire et d'en avertir immédiatement l'expéditeur.",
        "Avis de confidentialité : ce courriel peut contenir des informations confidentielles. {company}, SIRET {num}.",
    ],
}
ENVIRONMENT = {
    "en": "Please consider the environment before printing this e-mail.",
    "de": "Bitte denken Sie an die Umwelt, bevor Sie diese E-Mail ausdrucken.",
    "fr": "Pensez à l'environnement avant d'imprimer ce message.",
}
SENT_FROM = {
    "en": ["Sent from my iPhone", "Sent from my iPad", "Sent from my Galaxy", "Get Outlook for iOS",
           "Get Outlook for Android", "Sent from Mail for Windows"],
    "de": ["Von meinem iPhone gesendet", "Gesendet von meinem iPad", "Von meinem Samsung Galaxy Smartphone gesendet."],
    "fr": ["Envoyé de mon iPhone", "Envoyé de mon iPad", "Envoyé depuis mon smartphone Samsung Galaxy."],
}  # fmt: skip
BANNER = [
    "CAUTION: This email originated from outside of the organization. Do not click links or open attachments unless "
    "you recognize the sender and know the content is safe.",
    "[EXTERNAL]",
    "You don't often get email from {email}. Learn why this is important",
]
AGENT_REPLY = {
    "en": [
        "Thank you for contacting us. We have looked into your request and updated your account accordingly.",
        "Thanks for getting in touch. Could you please confirm the last four digits of your card so we can look into this?",
        "We are sorry for the inconvenience. Your case has been passed to the responsible team, who will reply within two "
        "working days.",
        "Thank you for your patience. The issue has now been resolved on our side; please let us know if anything else comes up.",
    ],
    "de": [
        "vielen Dank für Ihre Nachricht. Wir haben Ihr Anliegen an die zuständige Fachabteilung weitergeleitet.",
        "danke für Ihre Geduld. Das Problem wurde inzwischen behoben.",
    ],
    "fr": [
        "Merci de nous avoir contactés. Votre demande a été transmise au service concerné.",
        "Nous vous remercions de votre patience. Le problème est désormais résolu.",
    ],
}  # fmt: skip
AGENT_QUOTE = {
    "en": 'Regarding your question "{q}":',
    "de": "Zu Ihrer Frage „{q}“:",
    "fr": "Concernant votre question « {q} » :",
}
SUBJECT = ["Card issue", "Question about my account", "Help needed", "Payment problem", "Urgent", "Transfer",
           "My account", "Query", "Problem with the app", "Top-up"]  # fmt: skip
RE = {"en": "RE: ", "de": "AW: ", "fr": "RE : "}
FWD = {"en": "Fwd: ", "de": "WG: ", "fr": "TR : "}
SUPPORT = ("Customer Support", "support@bank.example")

WEEKDAY = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
}
MONTH = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
           "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November",
           "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre",
           "décembre"],
}  # fmt: skip
GMAIL_DAY = {
    "en": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    "de": ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."],
    "fr": ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."],
}


@dataclass
class Person:
    first: str
    last: str
    email: str
    company: str
    title: str
    phone: str
    city: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class Message:
    """One message of the thread: who wrote it, when, and its text lines."""

    sender: tuple[str, str]  # (name, address)
    to: tuple[str, str]
    when: datetime
    subject: str
    lines: list[str]


def _person(lang: str, rng: random.Random) -> Person:
    first, last = rng.choice(FIRST[lang]), rng.choice(LAST[lang])
    plain = (first + "." + last).lower().replace("'", "")
    for a, b in (("ü", "ue"), ("ä", "ae"), ("ö", "oe"), ("é", "e"), ("è", "e")):
        plain = plain.replace(a, b)
    company = rng.choice(COMPANY[lang])
    domain = rng.choice(
        ["gmail.com", "outlook.com", "web.de", "orange.fr", "yahoo.co.uk", company.split()[0].lower() + ".example"]
    )
    n = rng.randrange(10000)
    phone = PHONE[lang].format(n % 100, n // 100) if lang == "fr" else PHONE[lang].format(n)
    return Person(first, last, f"{plain}@{domain}", company, rng.choice(TITLE[lang]), phone, rng.choice(CITY[lang]))


def _signature(p: Person, lang: str, rng: random.Random, mobile: bool) -> list[str]:
    """Closing, name block, maybe a disclaimer: the lines below the request."""
    out: list[str] = []
    r = rng.random()
    if rng.random() < 0.12:
        out += [rng.choice(PRE_CLOSING[lang]), ""]
    if mobile:
        if r < 0.6:
            out += [rng.choice(CLOSING[lang]), p.first]
        elif r < 0.8:
            out += [p.first]
        return out
    closing = rng.choice(CLOSING[lang])
    if rng.random() < 0.05:
        closing = rng.choice(RARE_CLOSING[lang]).format(city=p.city.split()[-1])
    if r < 0.10:  # closing and name on one line
        out += [f"{closing.rstrip('.!')} {p.first}"]
    elif r < 0.18:  # just a first name
        out += [p.first]
    elif r < 0.25:  # a "-- " signature block and nothing else
        out += ["-- ", p.name, p.title, p.company]
        return out
    elif r < 0.29:  # a name block with no closing above it
        out += [p.name, p.title, p.company, f"Tel.: {p.phone}"]
    else:
        out += [closing, rng.choice([p.first, p.name, p.name])]
        block = rng.random()
        if block < 0.35:
            out += (
                [f"{p.title} | {p.company}", f"T: {p.phone}"]
                if lang == "en"
                else [p.title, p.company, f"Tel.: {p.phone}"]
            )
        elif block < 0.55:
            out += ["", "-- ", p.name, p.company, p.city, p.phone]
        elif block < 0.65:
            out += [p.company, f"{p.phone} | www.{p.company.split()[0].lower()}.example"]
        elif block < 0.7:  # Outlook's plain-text stand-in for a logo
            out += [
                p.company,
                f"[cid:image00{rng.randrange(1, 4)}.png@01DA{rng.randrange(16**4):04X}.{rng.randrange(16**8):08X}]",
            ]
    if rng.random() < 0.35:
        text = rng.choice(DISCLAIMER[lang]).format(company=p.company, city=p.city, num=rng.randrange(100000, 999999))
        out += ["", *text.split("\n")]
        if rng.random() < 0.2:
            out += ["", ENVIRONMENT[lang]]
    return out


def _customer_message(ticket: str, p: Person, lang: str, rng: random.Random, mobile: bool) -> list[str]:
    lines: list[str] = []
    hello = rng.choice(GREETING[lang])
    r = rng.random()
    if r < 0.02:  # the greeting on the ticket's line
        lines += [f"{hello} {ticket}", ""]
    elif r < 0.03:  # a thank-you on the ticket's line
        lines += [f"{ticket} {rng.choice(['Thanks!', 'Thank you.', 'Thx'])}", ""]
    else:
        lines += [hello, ""] if r < 0.8 else []
        lines += [ticket, ""]
    lines += _signature(p, lang, rng, mobile)
    if mobile and rng.random() < 0.85:
        lines += ["", rng.choice(SENT_FROM[lang])]
    return lines


def _agent_message(p: Person, lang: str, question: str | None, rng: random.Random) -> list[str]:
    hello = {"en": f"Dear {p.first},", "de": f"Hallo {p.first} {p.last},", "fr": f"Bonjour {p.first},"}[lang]
    lines = [hello, ""]
    if question:
        lines += [AGENT_QUOTE[lang].format(q=question), ""]
    lines += [rng.choice(AGENT_REPLY[lang]), ""]
    lines += [{"en": "Kind regards,", "de": "Mit freundlichen Grüßen", "fr": "Cordialement,"}[lang], SUPPORT[0]]
    lines += ["Example Bank plc | support@bank.example | 0800 123 4567"]
    return lines


# --- dates and headers, per client and locale -------------------------------------------


def _outlook_date(d: datetime, lang: str) -> str:
    day, month = WEEKDAY[lang][d.weekday()], MONTH[lang][d.month - 1]
    if lang == "en":
        hour = d.strftime("%I:%M %p").lstrip("0")
        return f"{day}, {month} {d.day}, {d.year} {hour}"
    if lang == "de":
        return f"{day}, {d.day}. {month} {d.year} {d:%H:%M}"
    return f"{day} {d.day} {month} {d.year} {d:%H:%M}"


def _outlook_header(m: Message, lang: str, rng: random.Random) -> list[str]:
    keys = {"en": ("From:", "Sent:", "To:", "Cc:", "Subject:"), "de": ("Von:", "Gesendet:", "An:", "Cc:", "Betreff:"),
            "fr": ("De :", "Envoyé :", "À :", "Cc :", "Objet :")}[lang]  # fmt: skip
    out = [
        f"{keys[0]} {m.sender[0]} <{m.sender[1]}>",
        f"{keys[1]} {_outlook_date(m.when, lang)}",
        f"{keys[2]} {m.to[0]} <{m.to[1]}>",
    ]
    if rng.random() < 0.2:
        out.append(f"{keys[3]} accounts@{m.to[1].split('@')[1]}")
    out.append(f"{keys[4]} {m.subject}")
    return out


def _wrote_line(m: Message, lang: str, style: str) -> str:
    d, (name, addr) = m.when, m.sender
    month = MONTH[lang][d.month - 1]
    if style == "gmail":
        day = GMAIL_DAY[lang][d.weekday()]
        if lang == "en":
            return f"On {day}, {d.day} {month[:3]} {d.year} at {d:%H:%M}, {name} <{addr}> wrote:"
        if lang == "de":
            return f"Am {day}, {d.day}. {month} {d.year} um {d:%H:%M} Uhr schrieb {name} <{addr}>:"
        return f"Le {day} {d.day} {month} {d.year} à {d:%H:%M}, {name} <{addr}> a écrit :"
    if style == "apple":
        if lang == "en":
            return f"On {d.day} {month[:3]} {d.year}, at {d:%H:%M}, {name} <{addr}> wrote:"
        if lang == "de":
            return f"Am {d:%d.%m.%Y} um {d:%H:%M} schrieb {name} <{addr}>:"
        return f"Le {d.day} {month} {d.year} à {d:%H:%M}, {name} <{addr}> a écrit :"
    # thunderbird
    if lang == "en":
        return f"On {d:%d/%m/%Y %H:%M}, {name} wrote:"
    if lang == "de":
        return f"Am {d:%d.%m.%y} um {d:%H:%M} schrieb {name}:"
    return f"Le {d:%d/%m/%Y} à {d:%H:%M}, {name} a écrit :"


def _forward_header(m: Message, lang: str, style: str) -> list[str]:
    d, (name, addr) = m.when, m.sender
    if style == "gmail":
        sep = {"en": "---------- Forwarded message ---------", "de": "---------- Weitergeleitete Nachricht ---------",
               "fr": "---------- Forwarded message ---------"}[lang]  # fmt: skip
        frm = {"en": "From:", "de": "Von:", "fr": "De :"}[lang]
        day = GMAIL_DAY[lang][d.weekday()]
        return [sep, f"{frm} {name} <{addr}>", f"Date: {day}, {d.day} {MONTH[lang][d.month - 1]} {d.year} at {d:%H:%M}",
                f"Subject: {m.subject}", f"To: <{m.to[1]}>"]  # fmt: skip
    if style == "apple":
        sep = {"en": "Begin forwarded message:", "de": "Anfang der weitergeleiteten Nachricht:",
               "fr": "Début du message réexpédié :"}[lang]  # fmt: skip
        keys = {"en": ("From", "Subject", "Date", "To"), "de": ("Von", "Betreff", "Datum", "An"),
                "fr": ("De", "Objet", "Date", "À")}[lang]  # fmt: skip
        return [sep, "", f"{keys[0]}: {name} <{addr}>", f"{keys[1]}: {m.subject}",
                f"{keys[2]}: {d.day} {MONTH[lang][d.month - 1]} {d.year} at {d:%H:%M:%S} CET", f"{keys[3]}: {m.to[1]}"]  # fmt: skip
    # thunderbird
    sep = {"en": "-------- Forwarded Message --------", "de": "-------- Weitergeleitete Nachricht --------",
           "fr": "-------- Message transféré --------"}[lang]  # fmt: skip
    keys = {"en": ("Subject:", "Date:", "From:", "To:"), "de": ("Betreff:", "Datum:", "Von:", "An:"),
            "fr": ("Sujet :", "Date :", "De :", "Pour :")}[lang]  # fmt: skip
    return [sep, f"{keys[0]} \t{m.subject}", f"{keys[1]} \t{d:%a, %d %b %Y %H:%M:%S} +0100",
            f"{keys[2]} \t{name} <{addr}>", f"{keys[3]} \t{m.to[1]}"]  # fmt: skip


# --- renderers: newest message first, then the older ones -------------------------------


def _wrap(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        out += (
            textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) if len(line) > width else [line]
        )
    return out


def _quote(lines: list[str]) -> list[str]:
    return [">" if not line else "> " + line if not line.startswith(">") else ">" + line for line in lines]


def _plain_quoted(thread: list[Message], lang: str, style: str, width: int | None, rng: random.Random) -> list[str]:
    """Apple / Gmail-plain / Thunderbird: each reply quotes the one before it ("> "), under
    an "On ... wrote:" line; Gmail and Thunderbird wrap what they send."""

    def text(i: int) -> list[str]:
        own = _wrap(thread[i].lines, width) if width else list(thread[i].lines)
        if i + 1 == len(thread):
            return own
        wrote = _wrote_line(thread[i + 1], lang, style)
        wrote_lines = _wrap([wrote], width) if width and style == "gmail" else [wrote]
        older = text(i + 1)
        if style == "apple" and rng.random() < 0.5:  # iOS Mail quotes the attribution too
            return [*own, "", *_quote([*wrote_lines, "", *older])]
        return [*own, "", *wrote_lines, *_quote(older)]

    return text(0)


def _plain_outlook(thread: list[Message], lang: str, rng: random.Random) -> list[str]:
    """Outlook plain text: older messages unquoted below a separator and a header block."""
    out = list(thread[0].lines)
    original = {
        "en": "-----Original Message-----",
        "de": "-----Ursprüngliche Nachricht-----",
        "fr": "-----Message d'origine-----",
    }
    sep = rng.choice([original[lang], "_" * 32])
    for m in thread[1:]:
        out += ["", sep, *_outlook_header(m, lang, rng), "", *m.lines]
    return out


def _esc(line: str) -> str:
    return html.escape(line, quote=False)


def _outlook_html(thread: list[Message], lang: str, rng: random.Random) -> str:
    def paras(lines: list[str]) -> list[str]:
        return [
            f'<p class="MsoNormal">{_esc(line) if line.strip() else "<o:p>&nbsp;</o:p>"}<o:p></o:p></p>'
            for line in lines
        ]

    parts = [
        '<html xmlns:o="urn:schemas-microsoft-com:office:office" xmlns="http://www.w3.org/TR/REC-html40">',
        '<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">',
        "<style><!--\np.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;font-size:11.0pt;"
        'font-family:"Calibri",sans-serif;}\ndiv.WordSection1\n\t{page:WordSection1;}\n--></style>',
        '<!--[if gte mso 9]><xml><o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]-->',
        '</head><body lang="EN-GB" link="#0563C1" vlink="#954F72" style="word-wrap:break-word">',
        '<div class="WordSection1">',
        *paras(thread[0].lines),
    ]
    for m in thread[1:]:
        head = _outlook_header(m, lang, rng)
        cells = []
        for line in head:
            key, _, value = line.partition(":")
            cells.append(f"<b>{_esc(key)}:</b>{_esc(value)}")
        header = "<br>\n".join(cells)
        parts += [
            '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>',
            '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">',
            f'<p class="MsoNormal">{header}<o:p></o:p></p>',
            "</div>",
            *paras(m.lines),
        ]
    parts += ["</div>", "</body>", "</html>"]
    return "\n".join(parts)


def _gmail_html(thread: list[Message], lang: str, rng: random.Random, forward: Message | None) -> str:
    def divs(lines: list[str]) -> str:
        out = []
        for line in lines:
            if line == "-- ":
                out.append('<span class="gmail_signature_prefix">-- </span><br>')
            else:
                out.append(f"<div>{_esc(line)}</div>" if line.strip() else "<div><br></div>")
        return "".join(out)

    def quoted(i: int) -> str:
        m = thread[i]
        inner = divs(m.lines) + (quoted(i + 1) if i + 1 < len(thread) else "")
        return (
            f'<br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
            f"{_esc(_wrote_line(m, lang, 'gmail'))}<br></div>"
            '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
            f'rgb(204,204,204);padding-left:1ex"><div dir="ltr">{inner}</div></blockquote></div>'
        )

    body = f'<div dir="ltr">{divs(thread[0].lines)}</div>'
    if forward is not None:
        head = "<br>".join(_esc(line) for line in _forward_header(forward, lang, "gmail"))
        body += (
            f'<br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">{head}<br></div><br><br>'
            f'<div dir="ltr">{divs(forward.lines)}</div></div>'
        )
    elif len(thread) > 1:
        body += quoted(1)
    return body


def wrap_ticket(text: str, others: Sequence[str], rng: random.Random) -> str:
    """`text` as the newest message of an e-mail; `others` (other tickets, other intents)
    fill the quoted earlier thread or a forwarded message. Deterministic given `rng`'s state."""
    lang = rng.choices(["en", "de", "fr"], weights=[0.6, 0.25, 0.15])[0]
    client = rng.choice(["outlook_html", "outlook_plain", "gmail_html", "gmail_plain", "apple", "thunderbird"])
    mobile = (client == "apple" and rng.random() < 0.7) or (
        client in ("outlook_html", "gmail_html") and rng.random() < 0.1
    )
    me = _person(lang, rng)
    subject = rng.choice(SUBJECT)
    depth = rng.choices([0, 1, 2, 3, 4, 5], weights=[0.25, 0.3, 0.2, 0.1, 0.08, 0.07])[0]
    depth = min(depth, 2 * len(others))
    forward_kind = rng.choices(["none", "below", "only"], weights=[0.85, 0.09, 0.06])[0]
    if client not in ("gmail_html", "gmail_plain", "apple", "thunderbird"):
        forward_kind = "none"
    now = datetime(2026, 1, 5, 9, 0) + timedelta(minutes=rng.randrange(60 * 24 * 300))
    me_addr, bank = (me.name, me.email), SUPPORT

    # the thread, newest first: alternately the bank's reply and the customer's earlier ticket
    pool = list(others)
    thread: list[Message] = []
    when = now
    for i in range(depth):
        when -= timedelta(minutes=rng.randrange(30, 60 * 72))
        if i % 2 == 0:  # the bank's reply, sometimes restating the customer's earlier question
            q = pool[0] if pool and rng.random() < 0.5 else None
            thread.append(Message(bank, me_addr, when, RE[lang] + subject, _agent_message(me, lang, q, rng)))
        else:
            older = pool.pop(0) if pool else rng.choice(list(others))
            thread.append(Message(me_addr, bank, when, subject, _customer_message(older, me, lang, rng, mobile)))
    newest_ticket = text
    forward: Message | None = None
    if forward_kind != "none" and others:
        when = now - timedelta(days=rng.randrange(1, 20))
        if forward_kind == "only":  # the ticket is the forwarded e-mail's body; nothing above it
            forward = Message(me_addr, bank, when, subject, _customer_message(text, me, lang, rng, False))
        else:  # the ticket, then an earlier unanswered e-mail forwarded below it
            forward = Message(me_addr, bank, when, subject, _customer_message(others[0], me, lang, rng, False))
        thread = []

    if forward_kind == "only":
        r = rng.random()
        newest_lines = ["", ""] if r < 0.55 else ["", *_signature(me, lang, rng, True)]
        if r > 0.75:  # a note above the forward
            note = {"en": ["FYI", "Please see below.", "See below - still no answer."], "de": ["Siehe unten.", "Zur Info"],
                    "fr": ["Voir ci-dessous.", "Pour info"]}[lang]  # fmt: skip
            newest_lines = [rng.choice(note), *newest_lines]
    else:
        newest_lines = _customer_message(newest_ticket, me, lang, rng, mobile)
    if rng.random() < 0.1:  # the helpdesk's mail gateway marks mail from outside
        newest_lines = [rng.choice(BANNER).format(email=me.email), "", *newest_lines]
    newest = Message(me_addr, bank, now, (RE[lang] if thread else "") + subject, newest_lines)
    full = [newest, *thread]

    if client == "outlook_html":
        return _outlook_html(full, lang, rng)
    if client == "outlook_plain":
        return "\n".join(_plain_outlook(full, lang, rng))
    if client == "gmail_html":
        return _gmail_html(full, lang, rng, forward)
    style = {"gmail_plain": "gmail", "apple": "apple", "thunderbird": "thunderbird"}[client]
    width = {"gmail": 78, "apple": None, "thunderbird": 72}[style]
    lines = _plain_quoted(full, lang, style, width, rng)
    if forward is not None:
        fwd = [*_forward_header(forward, lang, style), "", *forward.lines]
        lines = [*lines, "", *(_wrap(fwd, width) if width else fwd)]
    return "\n".join(lines)


def wrap_file(src: Path, dst: Path, seed: int = 0, fraction: float = 1.0) -> int:
    """Write `src` (CSV: text, category) to `dst` with `fraction` of the tickets wrapped as
    e-mails (the rest as they are) and a column clean_text holding each original text.
    Quoted threads use tickets of other categories from the same file. Returns the rows written."""
    with Path(src).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    by_cat: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_cat.setdefault(r["category"], []).append(i)
    cats = sorted(by_cat)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category", "clean_text"])
        w.writeheader()
        for r in rows:
            text = r["text"]
            if rng.random() < fraction:
                others = []
                for cat in rng.sample([c for c in cats if c != r["category"]], 3):
                    others.append(rows[rng.choice(by_cat[cat])]["text"])
                text = wrap_ticket(r["text"], others, rng)
            w.writerow({"text": text, "category": r["category"], "clean_text": r["text"]})
    return len(rows)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("src", type=Path, help="CSV with text, category (e.g. data/banking77/test.csv)")
    ap.add_argument("dst", type=Path, help="CSV to write: text (the e-mail), category, clean_text (the ticket)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the tickets wrapped (default all)")
    args = ap.parse_args(argv)
    n = wrap_file(args.src, args.dst, seed=args.seed, fraction=args.fraction)
    out(f"{n} rows -> {args.dst}")


if __name__ == "__main__":
    main()
