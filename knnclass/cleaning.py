"""Ticket text cleaning: what the encoder should see of an e-mail.

Mode "email" keeps the newest message's own text: HTML becomes plain text, broken
unicode is repaired (ftfy), and the quoted or forwarded history, the signature, the
legal disclaimer and "Sent from my iPhone" lines go, as does a greeting line on its own
("Hi team,"). The places where an older message starts come from mail-parser-reply's
header patterns (many languages, Outlook and Apple/Gmail styles) plus a few separator
lines it does not know (Gmail's "Forwarded message", Outlook's "Original Message" in
German and French...). Mode "none" leaves the text alone.

Plain one-line text, the bulk of what gets indexed, takes a fast path: white space
normalised, ftfy only where the text is not ASCII.
"""

from __future__ import annotations

import functools
import html as html_module
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import InputError

__all__ = ["CLEAN_MODES", "DEFAULT_CLEAN_MODE", "clean_text", "clean_texts"]

CLEAN_MODES: tuple[str, ...] = ("email", "none")
DEFAULT_CLEAN_MODE = "email"

# Languages whose reply headers ("On ... wrote:", "From: ... Sent: ...") mail-parser-reply
# looks for; each one adds alternatives to a single regex.
_LANGUAGES = ("en", "de", "fr", "es", "it", "nl")

# UTF-8 read as Windows-1252 or Latin-1: a lead byte's character (Â..ô) followed by a
# continuation byte's (\x80-\xbf, or what Windows-1252 puts there: € ‚ ƒ „ … ™ ...), or a
# stray C1 control. ftfy's own check (ftfy.badness.is_bad) is one large regex: ~25 µs for
# a short text, ~0.6 ms for an e-mail; this one takes well under 1 µs.
_MOJIBAKE = re.compile(
    "[\xc2-\xf4][\x80-\xbf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a"
    "\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]|[\x80-\x9f]"
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z]{2,8}\d{0,2});")
_HTML = re.compile(
    r"<(?:!doctype|!--|/?(?:html|head|body|div|p|br|span|table|tr|td|ul|ol|li|blockquote|font|b|i|u|a|strong"
    r"|em|h[1-6]|img|meta|style|hr|pre|o:p)(?:\s[^<>]*)?/?>)",
    re.IGNORECASE,
)
# Lines that open an older message and that mail-parser-reply's headers do not cover.
_SEPARATOR = re.compile(
    r"(?:>\s?)*(?:"
    r"-{3,}\s*(?:forwarded message|original message|original-nachricht|ursprüngliche nachricht"
    r"|weitergeleitete nachricht|message d'origine|message original|message transféré|message transfere"
    r"|courriel original)\s*-{3,}"
    r"|begin forwarded message:|anfang der weitergeleiteten nachricht:|début du message réexpédié\s?:"
    r"|_{10,}"
    r")",
    re.IGNORECASE,
)
# One header line of a quoted or forwarded message (From:, Gesendet:, Objet :, ...).
_HEADER_LINE = re.compile(
    r"^(?:>\s?)*\*?(?:from|sent|to|cc|bcc|subject|date|reply-to|von|gesendet|an|betreff|datum|kopie|de|envoyé|à|a"
    r"|objet|sujet|pour|répondre à)\*?\s?:",
    re.IGNORECASE,
)
# Lines that go wherever they are: "Sent from my iPhone" and its kin.
_SENT_FROM = re.compile(
    r"(?:sent from (?:my |mail for |outlook|yahoo mail|samsung|the )|get outlook for |sent via |sent with "
    r"|von meinem .{1,40} gesendet|gesendet von meinem |gesendet mit |envoyé de mon |envoyé depuis (?:mon |l'application )"
    r"|envoyé à partir de |télécharger outlook pour )",
    re.IGNORECASE,
)
# Banners that mail gateways put above the text ("CAUTION: This email originated from
# outside..."): they go up to the end of their sentence, over the lines a client wrapped.
_BANNER = re.compile(
    r"\W*(?:\[?external\]?(?: email| sender)?\W*$|caution: this (?:e-?mail|message) (?:originated|came) from outside"
    r"|you don't often get email from |achtung: diese e-?mail stammt von (?:außerhalb|einem externen)"
    r"|attention : ce (?:message|courriel) provient de l'extérieur)",
    re.IGNORECASE,
)
_BANNER_END = re.compile(r"(?:[.!\]]|why this is important)$", re.IGNORECASE)
# The start of a legal disclaimer: everything from there on goes.
_DISCLAIMER = re.compile(
    r"^\W*(?:"
    r"(?:this|the information (?:contained )?in this|the content of this) (?:e-?mail|message|communication"
    r"|transmission)\b.{0,200}?\b(?:confidential|privileged|intended (?:only |solely |exclusively )?for (?:the )?"
    r"(?:sole )?(?:use|addressee|named|individual|person|recipient))"
    r"|confidentiality (?:notice|note|warning|statement)|notice of confidentiality|disclaimer\b|legal notice"
    r"|privileged (?:and|&) confidential|if you (?:are not the intended|have received this (?:e-?mail|message) in error)"
    r"|please consider the environment before printing"
    r"|diese (?:e-?mail|nachricht)\b.{0,200}?\bvertraulich|(?:wenn|falls) sie nicht der (?:richtige|vorgesehene"
    r"|beabsichtigte) (?:adressat|empfänger)|vertraulichkeitshinweis|haftungsausschluss|rechtlicher hinweis"
    r"|bitte denken sie an die umwelt"
    r"|(?:ce|le présent) (?:message|courriel|e-?mail)\b.{0,200}?\b(?:confidentiel|destinés? exclusivement"
    r"|à l'usage exclusif)|si vous (?:n'êtes pas le destinataire|avez reçu ce (?:message|courriel) par erreur)"
    r"|avis de confidentialité|clause de confidentialité|pensez à l'environnement|merci de penser à l'environnement"
    r")",
    re.IGNORECASE,
)
# A closing line ("Best regards,", "Thanks, Anna", "Mit freundlichen Grüßen") or the
# courtesy line before one ("Thanks in advance for your help."): it and the name block
# after it go.
_CLOSINGS = (
    r"(?:(?:best|kind|warm|warmest|many|with kind|with best) )?regards",
    r"best wishes|all the best|best|cheers|thx|sincerely|yours (?:sincerely|truly|faithfully)|respectfully|take care",
    r"thanks(?: (?:a lot|again|in advance|so much|(?:and|&) (?:best |kind )?regards))?",
    r"thank you(?: (?:very much|in advance|so much))?|many thanks",
    r"(?:thanks|thank you) (?:(?:so much|again|very much) )?(?:in advance )?for your (?:help|time|assistance|support"
    r"|understanding|patience)",
    r"looking forward to (?:hearing from you|your (?:reply|response|answer))(?: soon)?|hope to hear from you soon",
    r"any help (?:would be|is|will be) (?:much |greatly |really )?appreciated",
    r"mit (?:den )?(?:freundlichen|besten|herzlichen|lieben) gr(?:ü|ue)(?:ß|ss)en",
    r"(?:(?:danke|vielen dank) und )?(?:viele|beste|liebe|freundliche|herzliche)? ?gr(?:ü|ue)(?:ß|ss)e|gru(?:ß|ss)|mfg|lg",
    r"danke(?: schön| sehr)?|vielen dank(?: im voraus)?|besten dank|herzlichst|bis bald|bis dann",
    r"(?:vielen )?dank (?:im voraus )?für ihre (?:hilfe|unterstützung|mühe|antwort)",
    r"ich freue mich auf ihre (?:antwort|rückmeldung|nachricht)",
    r"(?:bien )?cordialement|bien à vous|(?:sincères |meilleures )?salutations(?: distinguées)?|amicalement|à bientôt",
    r"merci(?: (?:d'avance|beaucoup|par avance|encore))?|bonne (?:journée|soirée)|merci et bonne (?:journée|soirée)",
    r"merci (?:d'avance |par avance )?(?:pour|de) votre (?:aide|réponse|retour)",
    r"dans l'attente de votre (?:réponse|retour)|(?:je vous prie d'|veuillez )agréer.*",
    r"(?:[\w-]+ ){0,2}gr(?:ü|ue)(?:ß|ss)(?:e|en)?(?: [\w-]+){0,3}",  # "Schöne Grüße aus Köln"
)
_NAME = r"[A-ZÀ-Ý][\w'’.-]*(?:\s+[A-ZÀ-Ý][\w'’.-]*){0,3}"
_CLOSING = re.compile(
    "(?i:" + "|".join(_CLOSINGS) + r")(?:\s*/\s*(?i:(?:kind |best )?regards))?[\s,.!]*(?:" + _NAME + r"\.?)?"
)
# A line that is only a name ("Anna", "- Tom Becker"), last in a message: it goes too.
_NAME_LINE = re.compile(r"(?:[-–—~/]\s?)?" + _NAME)
# Any short line ending in a comma (or a comma and a name), last but for a name block, is a
# closing too ("Speak soon,", "Have a great day, Tom").
_COMMA_CLOSING = re.compile(r"(?:\S+ ){0,5}\S+,(?: " + _NAME + ")?")
# A name block with no closing above it: a name, then short lines of title, company and
# contacts, one of which has a phone number, an address, a web site or a company form.
_CONTACT = re.compile(
    r"\+?\d[\d ()/.-]{6,}\d|@|www\.|https?://|\[cid:|\b(?:gmbh|ag|kg|ltd|plc|llc|inc|sarl|sas|sa|bv|s\.r\.l)\b\.?",
    re.IGNORECASE,
)
_CONTACT_LINES = 6
_CONTACT_WIDTH = 80
_SIGNATURE_LINES = 10  # a name block: at most this many lines, each at most _SIGNATURE_WIDTH characters
_SIGNATURE_WIDTH = 100
_GREETING = re.compile(
    r"(?i:hi|hello|hey|dear|good (?:morning|afternoon|evening|day)|greetings|hallo|guten (?:tag|morgen|abend)"
    r"|sehr geehrte[rs]?|liebe[rs]?|moin|servus|bonjour|bonsoir|salut|cher|chère|madame,? monsieur"
    r"|mesdames,? messieurs)"
    r"(?:(?:[ \t]+[\w'’./&-]+){0,4}[ \t]*[,!:]|(?:[ \t]+(?:[A-ZÀ-Ý][\w'’.-]*|(?i:team|all|there|everyone|support"
    r"|folks|zusammen|à tous|l'équipe))){0,2})$"
)


def _check_mode(mode: str) -> None:
    if mode not in CLEAN_MODES:
        raise InputError(f"clean mode must be one of {', '.join(CLEAN_MODES)}, not {mode!r}")


def clean_text(text: str, mode: str = DEFAULT_CLEAN_MODE) -> str:
    """What the encoder should see of `text`: with "email" the newest message's own text
    (never empty for a non-blank text), with "none" the text unchanged."""
    _check_mode(mode)
    return text if mode == "none" else _clean_email(text)


def clean_texts(texts: Sequence[str], mode: str = DEFAULT_CLEAN_MODE) -> list[str]:
    """`clean_text` of each text, in order."""
    _check_mode(mode)
    return list(texts) if mode == "none" else [_clean_email(t) for t in texts]


def _clean_email(text: str) -> str:
    if "\n" not in text and "\r" not in text and "<" not in text and "&" not in text and ">" not in text:
        # one plain line: nothing of an e-mail's structure can be in it
        return " ".join((text if text.isascii() else _fix_unicode(text)).split())
    html = _HTML.search(text) is not None
    body = _html_to_text(text) if html else text
    if not html and "&" in body and _ENTITY.search(body):
        body = html_module.unescape(body)
    if not body.isascii():
        body = _fix_unicode(body)
    body = _normalise(body)
    seen: list[tuple[str, bool]] = []
    for fragment, followed in _split_messages(
        body
    ):  # newest first; an older one only where nothing of the newer is left
        cleaned = _clean_message(_drop_header_lines(fragment.split("\n"), bool(seen), followed))
        if cleaned:
            return cleaned
        seen.append((fragment, followed))
    for i, (fragment, followed) in enumerate(seen):  # less aggressive: a text all quote, signature or disclaimer
        lines = [_unquote(line) for line in fragment.split("\n")]
        cleaned = _squeeze(_drop_header_lines(lines, i > 0, followed))
        if cleaned:
            return cleaned
    return body.strip() or " ".join(text.split())


@functools.cache
def _ftfy() -> tuple[Any, Any]:
    import ftfy

    # curly quotes stay curly: text that needed no repair keeps them too
    return ftfy.fix_text, ftfy.TextFixerConfig(uncurl_quotes=False, unescape_html=False)


def _fix_unicode(text: str) -> str:
    """NFC, and ftfy's repair where the text has a mark of mojibake ("Iâ€™m", "cafÃ©")."""
    if _MOJIBAKE.search(text):
        fix_text, config = _ftfy()
        text = fix_text(text, config=config)
    return unicodedata.normalize("NFC", text)


def _normalise(text: str) -> str:
    """Each line stripped with its runs of white space made one space; at most one blank line."""
    return _squeeze([" ".join(line.split()) for line in text.splitlines()])


def _squeeze(lines: Sequence[str]) -> str:
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


@functools.cache
def _header_regex() -> re.Pattern[str]:
    """mail-parser-reply's pattern for the headers that open a quoted message, in _LANGUAGES."""
    from mailparser_reply import EmailMessage

    pattern: re.Pattern[str] = EmailMessage(text="", languages=list(_LANGUAGES)).HEADER_REGEX
    return pattern


def _split_messages(body: str) -> Iterator[tuple[str, bool]]:
    """The messages of a thread, newest first (the text before each quoted header), each
    with whether an older one follows it. Lazy: most e-mails need only the first."""
    if ":" not in body and "--" not in body and "__" not in body:
        yield body, False  # every header and separator holds one of these
        return
    # mail-parser-reply's headers all hold a colon, on their line or the next ("On ... Bob
    # <b@x.com>\nwrote:"): trying its pattern only at those lines' starts, not at every
    # character, is what keeps a long e-mail well under a millisecond.
    header = _header_regex()
    lines = body.split("\n")
    colon = [":" in line for line in lines]
    pos, start, end = 0, 0, -1
    for i, line in enumerate(lines):
        cut = -1
        if start >= end:
            if ("--" in line or "__" in line or line.endswith(":")) and _SEPARATOR.fullmatch(line):
                cut, end = start, start + len(line)
            elif colon[i] or (i + 1 < len(lines) and colon[i + 1]):
                m = header.match(body, start)
                if m is not None and m.end() > start:
                    cut, end = start, m.end()
                elif i + 1 < len(lines) and colon[i + 1]:
                    # an attribution line a client wrapped anywhere ("... Bob <b@x.com> a\nécrit :")
                    m = header.match(line + " " + lines[i + 1])
                    if m is not None and m.end() > len(line):
                        cut, end = start, start + m.end()
        if cut >= 0:
            yield body[pos:cut], True
            pos = end
        start += len(line) + 1
    yield body[pos:], False


def _unquote(line: str) -> str:
    while line.startswith(">"):
        line = line[1:].lstrip()
    return line


def _drop_header_lines(lines: list[str], quoted: bool, cut_below: bool) -> list[str]:
    """Without the header lines (From:, Sent:, ...) that open a quoted message (`quoted`: not the
    newest; the newest only where two or more open it), nor those left above the next cut."""
    start, end = 0, len(lines)
    while start < end and (not lines[start] or _HEADER_LINE.match(lines[start])):
        start += 1
    if not quoted and sum(1 for line in lines[:start] if line) < 2:
        start = 0
    while cut_below and end > start and (not lines[end - 1] or _HEADER_LINE.match(lines[end - 1])):
        end -= 1
    return lines[start:end]


def _clean_message(lines: list[str]) -> str:
    """One message's own text: no quoted lines, signature, disclaimer, 'Sent from' or lone greeting."""
    kept: list[str] = []
    banner = False  # inside a gateway banner's sentence
    for line in lines:
        if banner:
            banner = bool(line) and not _BANNER_END.search(line)
            continue
        if line.startswith(">"):
            continue
        if line == "--" or _DISCLAIMER.match(line):  # the rest is signature or legalese
            break
        if _BANNER.match(line):
            banner = not _BANNER_END.search(line)
        elif not _SENT_FROM.match(line):
            kept.append(line)
    content = [i for i, line in enumerate(kept) if line]
    if len(content) > 1 and _GREETING.fullmatch(kept[content[0]]):
        content = content[1:]
    # a closing line followed by a short name block (at most _SIGNATURE_LINES lines)
    tail = content[-(_SIGNATURE_LINES + 1) :]
    for k, i in enumerate(tail):
        rest = tail[k + 1 :]
        if (
            len(kept[i]) <= _SIGNATURE_WIDTH
            and all(len(kept[j]) <= _SIGNATURE_WIDTH for j in rest)
            and (
                _CLOSING.fullmatch(kept[i])
                or (_COMMA_CLOSING.fullmatch(kept[i]) and (not rest or _NAME_LINE.fullmatch(kept[rest[0]])))
            )
        ):
            content = content[: len(content) - len(tail) + k]
            break
    else:  # no closing: a name block at the end?
        block = content[-(_CONTACT_LINES + 1) :]
        for k, i in enumerate(block):
            rest = block[k + 1 :]
            if (
                rest
                and _NAME_LINE.fullmatch(kept[i])
                and all(len(kept[j]) <= _CONTACT_WIDTH and not kept[j].endswith(("?", "!")) for j in rest)
                and any(_CONTACT.search(kept[j]) for j in rest)
            ):
                content = content[: len(content) - len(block) + k]
                break
    if content and _NAME_LINE.fullmatch(kept[content[-1]]):  # a name alone is no text of its own
        content = content[:-1]
    if not content:
        return ""
    return _squeeze(kept[content[0] : content[-1] + 1])


# --- HTML to text -------------------------------------------------------------

_BLOCK = frozenset({
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "address", "center",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr",
    "hr", "form", "fieldset", "figure", "figcaption", "caption",
})  # fmt: skip
_SKIP = frozenset({
    "head", "style", "script", "title", "template", "noscript", "xml", "img", "svg", "object", "iframe", "button",
    "select",
})  # fmt: skip

# What the DOM walk writes between the text nodes' texts (as items of their own); the
# e-mail's text never holds these private-use characters: _html_to_text blanks any there.
_SOFT, _HARD, _QUOTE_IN, _QUOTE_OUT = "\ue000", "\ue001", "\ue002", "\ue003"
_MARKS = re.compile("([\ue000-\ue003])")


def _walk(node: Any, out: list[str], pre: bool) -> None:
    """Text nodes in document order, blocks as soft breaks, <br> as hard ones."""
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            text = child.text_content or ""
            if pre:
                for k, piece in enumerate(text.split("\n")):
                    out += (_HARD, piece) if k else (piece,)
            else:  # HTML white space is a space (runs of spaces collapse later, in _normalise)
                out.append(text.replace("\n", " ").replace("\r", " ").replace("\t", " ").replace("\f", " "))
        elif tag in _SKIP or tag.startswith("-"):  # comments, doctype
            continue
        elif tag == "br":
            out.append(_HARD)
        elif tag in _BLOCK:
            out.append(_SOFT)
            _walk(child, out, pre)
            out.append(_SOFT)
        elif tag == "li":
            out += (_SOFT, "- ")
            _walk(child, out, pre)
            out.append(_SOFT)
        elif tag in ("td", "th"):
            out.append("\t")
            _walk(child, out, pre)
        elif tag == "blockquote":  # a quoted message: "> " lines, as plain-text clients write it
            out.append(_QUOTE_IN)
            _walk(child, out, pre)
            out.append(_QUOTE_OUT)
        elif tag == "pre":
            out.append(_SOFT)
            _walk(child, out, True)
            out.append(_SOFT)
        else:
            _walk(child, out, pre)


def _html_to_text(html: str) -> str:
    """The text of an HTML e-mail: one line per block or <br>, quoted blocks as "> " lines."""
    from selectolax.lexbor import LexborHTMLParser

    if any(mark in html for mark in _MARKS_SET):
        html = _MARKS.sub(" ", html)
    tree = LexborHTMLParser(html)
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return ""
    out: list[str] = []
    _walk(root, out, False)
    lines: list[str] = []
    line: list[str] = []
    depth, filled = 0, False  # quote depth; whether the line has more than white space
    for part in out:
        if part in _MARKS_SET:
            if part == _HARD or filled:
                lines.append("> " * depth + "".join(line))
                line, filled = [], False
            if part == _QUOTE_IN:
                depth += 1
            elif part == _QUOTE_OUT:
                depth = max(0, depth - 1)
        else:
            line.append(part)
            filled = filled or (part != "" and not part.isspace())
    lines.append("> " * depth + "".join(line))
    return "\n".join(lines)


_MARKS_SET = frozenset((_SOFT, _HARD, _QUOTE_IN, _QUOTE_OUT))
