"""E-mail cleaning: the newest message's own text out of real clients' e-mails."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from knnclass.cleaning import CLEAN_MODES, clean_text, clean_texts
from knnclass.errors import InputError

EMAILS = Path(__file__).resolve().parents[1] / "data" / "emails"


def _email(name: str) -> str:
    return (EMAILS / name).read_text(encoding="utf-8")


# (fixture, what the encoder should see, parts that must be gone)
CASES = [
    (
        "outlook_reply.html",  # Outlook desktop: WordSection1, border-top header block, no quote marks
        "The card payment I made at the supermarket yesterday was charged twice on my account. "
        "Can you please reverse the duplicate charge of £42.10?",
        ["Hello", "Kind regards", "Sarah", "Northwind", "confidential", "From:", "top-up", "Customer Support"],
    ),
    (
        "gmail_reply.html",  # Gmail: "-- " signature, gmail_quote with the attribution and a blockquote
        "I tried to withdraw cash at an ATM in Lisbon this morning and the machine kept my card. What should I do now?",
        ["Hi team", "Thanks", "Miguel", "+351", "wrote:", "dispatched"],
    ),
    (
        "apple_mail.txt",  # Apple Mail / iPhone: "Sent from my iPhone", quoted attribution, "> " lines
        "I was charged a fee for a transfer to my friend in Germany but I thought transfers within the EU were free. "
        "Why was I charged?",
        ["Hello", "Thank you", "Anna", "Sent from", "wrote:", "EUR 250"],
    ),
    (
        "thunderbird.txt",  # Thunderbird: "-- " signature block, "On ... wrote:" with "> " quotes
        "my virtual card does not work for online purchases, every payment gets declined. Can you check what is wrong?",
        ["Hi", "Peter", "Example Systems", "wrote:", "has been created"],
    ),
    (
        "german_outlook.txt",  # German Outlook plain text: Ursprüngliche Nachricht, Von:/Gesendet:
        "ich habe meine PIN vergessen und kann meine Karte nicht mehr benutzen. Wie kann ich eine neue PIN bekommen?",
        ["Sehr geehrte", "Mit freundlichen", "Klaus", "Partner", "vertrauliche", "iPhone", "Von:", "eröffnet"],
    ),
    (
        "german_outlook.html",  # German Outlook HTML with a gateway banner and entities
        "meine Überweisung vom 28.02. an meinen Vermieter ist immer noch nicht angekommen. "
        "Können Sie bitte prüfen, was passiert ist?",
        ["ACHTUNG", "Guten Tag", "Viele Grüße", "Lena", "GmbH", "vertrauliche", "Von:", "entsperrt"],
    ),
    (
        "french_gmail.html",  # French Gmail: "Le ... a écrit :", "Envoyé de mon iPhone", a French disclaimer
        "Je n'ai toujours pas reçu ma nouvelle carte, commandée il y a deux semaines. Pouvez-vous vérifier où elle se "
        "trouve ?",
        ["Bonjour", "Cordialement", "Julie", "Envoyé", "a écrit", "expédiée", "confidentiels"],
    ),
    (
        "forwarded_only.html",  # a Gmail forward with nothing written above it: the forwarded body, no headers
        "The merchant told me they refunded my purchase a week ago but I still cannot see the refund on my statement.",
        ["Forwarded", "From:", "Subject:", "Hi,", "Best regards", "Tom"],
    ),
    (
        "html_table.html",  # HTML table and list: one line per row and item
        "These two transactions on my statement were not made by me:\n"
        "Date Merchant Amount\n"
        "01/03/2026 ONLINE STORE LTD €89.99\n"
        "02/03/2026 GAME SHOP €24.50\n"
        "What I need:\n"
        "- block my card\n"
        "- dispute both payments",
        ["Hello", "Regards", "Lena"],
    ),
]


@pytest.mark.parametrize(("name", "want", "gone"), CASES, ids=[c[0] for c in CASES])
def test_each_client_gives_the_newest_request_alone(name: str, want: str, gone: list[str]) -> None:
    got = clean_text(_email(name))
    assert got == want
    for part in gone:
        assert part not in got, part


def test_mojibake_and_entities_are_repaired() -> None:
    text = "Hi there,\n\nIâ€™m trying to top up with Apple Pay but it says â€œpayment failedâ€\x9d every time.\n\nCheers,\nDan"
    assert clean_text(text) == "I’m trying to top up with Apple Pay but it says “payment failed” every time."
    assert clean_text("cafÃ© bill charged twice") == "café bill charged twice"  # the one-line fast path too
    assert clean_text("Tom &amp; Jerry&#39;s card\nis blocked") == "Tom & Jerry's card\nis blocked"
    assert clean_text("AT&T bill & card") == "AT&T bill & card"  # no entity: left alone


def test_outlook_plain_text_reply_and_separator_rule() -> None:
    text = (
        "Please cancel my standing order to J Smith.\n\n"
        "Regards,\nMark\n\n"
        "________________________________\n"
        "From: Bank Support <support@bank.example>\n"
        "Sent: 02 March 2026 16:05\n"
        "To: Mark <mark@example.com>\n"
        "Subject: RE: standing order\n\n"
        "Dear Mark, which standing order do you mean?"
    )
    assert clean_text(text) == "Please cancel my standing order to J Smith."


def test_french_outlook_and_german_gmail_headers() -> None:
    fr = (
        "Bonjour,\n\nMa carte a été avalée par le distributeur.\n\nBien cordialement,\nSophie\n\n"
        "De : Service Client <support@bank.example>\nEnvoyé : lundi 2 mars 2026 16:05\n"
        "À : Sophie <s@example.fr>\nObjet : RE : carte\n\nBonjour Sophie, votre carte est en route."
    )
    assert clean_text(fr) == "Ma carte a été avalée par le distributeur."
    de = (
        "Hallo,\n\nwie ändere ich meine Adresse?\n\nLG\nJonas\n\n"
        "Am Di., 3. März 2026 um 10:12 Uhr schrieb Kundenservice <support@bank.example>:\n"
        "> Hallo Jonas,\n> Ihre Karte ist unterwegs."
    )
    assert clean_text(de) == "wie ändere ich meine Adresse?"


def test_a_wrapped_attribution_line_still_opens_the_quote() -> None:
    text = (
        "Where is my refund?\n\n"
        "Le mar. 3 mars 2026 à 10:12, Service Client <support@bank.example> a\n"
        "écrit :\n> Bonjour, votre remboursement est en cours."
    )
    assert clean_text(text) == "Where is my refund?"


def test_signatures_and_disclaimers() -> None:
    body = "My card was declined at the petrol station."
    for tail in [
        "-- \nAnna Weber\nAcme GmbH",  # the "-- " delimiter
        "Thanks,\nAnna",
        "Best regards, Anna",
        "Thanks in advance for your help.\n\nKind regards\nAnna Weber\nFinance | Acme Ltd\nT: +44 20 7946 0000",
        "Mit freundlichen Grüßen\nAnna Weber",
        "Cordialement,\nAnna",
        "Anna Weber\nAcme GmbH\nTel.: +49 30 1234567",  # a name block without a closing
        "Anna",  # a first name alone
        "Sent from my iPhone",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "This e-mail and any attachments are confidential and may be privileged.",
        "CONFIDENTIALITY NOTICE: this message is for the addressee only.",
        "Diese E-Mail enthält vertrauliche Informationen.",
    ]:
        assert clean_text(f"Hi team,\n\n{body}\n\n{tail}") == body, tail


def test_text_that_looks_like_a_closing_inside_the_request_stays() -> None:
    text = "Thanks, but my card still has not arrived.\nIt has been two weeks, what can I do?"
    assert clean_text(text) == text
    assert clean_text("Hi, my card was stolen.\nPlease block it.") == "Hi, my card was stolen.\nPlease block it."


@pytest.mark.parametrize(
    "text",
    [
        "Sent from my iPhone",
        "Thanks,\nAnna",
        "Hello,",
        "> On Tue, 3 Mar 2026 at 10:12, Bob <b@x.com> wrote:\n> my card is lost",
        "-- \nAnna Weber",
        "CONFIDENTIALITY NOTICE: this message is confidential.",
        "<p>&nbsp;</p><br>",
        "<img src='logo.png'>",
        "From: Bob <b@x.com>\nSent: Monday\nTo: support\nSubject: card",
    ],
)
def test_a_non_blank_text_never_cleans_to_nothing(text: str) -> None:
    assert clean_text(text).strip()


def test_quote_only_text_falls_back_to_the_quoted_words() -> None:
    assert clean_text("> my card is lost\n> please help") == "my card is lost\nplease help"


def test_white_space_is_normalised() -> None:
    assert clean_text("  my   card\tis\u00a0lost ") == "my card is lost"
    assert clean_text("line one  \r\n\r\n\r\n\n   line   two\n") == "line one\n\nline two"
    assert clean_text("") == "" and clean_text(" \n\t ") == ""


def test_none_is_the_identity() -> None:
    for text in ["", "  spaced  ", _email("gmail_reply.html"), _email("german_outlook.txt")]:
        assert clean_text(text, mode="none") is text
    texts = ["a  b", "<p>x</p>"]
    assert clean_texts(texts, mode="none") == texts


def test_clean_texts_is_clean_text_of_each() -> None:
    texts = [_email(name) for name, _, _ in CASES] + ["plain  ticket", ""]
    assert clean_texts(texts) == [clean_text(t) for t in texts]
    assert clean_texts(texts, mode="email") == clean_texts(texts)


def test_unknown_mode_lists_the_modes() -> None:
    assert CLEAN_MODES == ("email", "none")
    with pytest.raises(InputError, match="email, none"):
        clean_text("x", mode="html")
    with pytest.raises(InputError, match="email, none"):
        clean_texts(["x"], mode="")


def test_banking77_tickets_come_through_whole(data_dir: Path) -> None:
    """The one-line fast path and the full path agree, and change nothing but white space."""
    texts = [r["text"] for r in csv.DictReader((data_dir / "test.csv").open(encoding="utf-8"))]
    fast = clean_texts(texts)
    assert fast == [" ".join(t.split()) for t in texts]
    assert clean_texts([t + "\n\n" for t in texts]) == fast
