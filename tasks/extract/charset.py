"""Bytes of a web page to text: the declared charset when the bytes agree with it, else the
detected one.

Order: a byte-order mark; the charset the HTTP header declares; the one the page's own
``<meta>`` declares (in its first 4 KB, as browsers look); UTF-8; then detection (resiliparse's
uchardet, with charset-normalizer as its second opinion on short pages). A declared charset the
bytes do not decode under is a *wrong charset*: recorded, and detection decides. Bytes no
candidate decodes without many replacement characters are undecodable.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_META = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.+-]{1,40})""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# WHATWG: a page labelled Latin-1 / ASCII is decoded as windows-1252, a superset every browser uses
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
            "x-sjis": "shift_jis", "gb2312": "gb18030", "gbk": "gb18030"}
MAX_REPLACED = 0.01  # share of replacement characters above which bytes count as undecodable


@dataclass(frozen=True)
class Decoded:
    text: str | None  # None: undecodable
    encoding: str | None
    source: str  # bom | http | meta | utf-8 | detected
    wrong_declared: str | None = None  # a declared charset the bytes did not decode under


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def meta_charset(data: bytes) -> str | None:
    m = _META.search(data[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


def _strict(data: bytes, enc: str) -> str | None:
    try:
        return data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(data: bytes, http_charset: str | None = None) -> Decoded:
    for bom, enc in _BOMS:
        if data.startswith(bom):
            text = _strict(data[len(bom):], enc)
            if text is not None:
                return Decoded(text, enc, "bom")
            break
    wrong = None
    # valid UTF-8 with multi-byte sequences is almost never a single-byte charset's text by
    # chance, while servers labelling UTF-8 pages Latin-1 are common
    utf8 = _strict(data, "utf-8") if not data.isascii() else None
    for src, declared in (("http", http_charset), ("meta", meta_charset(data))):
        enc = _codec(declared)
        if enc is None:
            if declared:
                wrong = wrong or declared
            continue
        if utf8 is not None and enc != "utf-8" and _single_byte(enc):
            wrong = wrong or declared
            continue
        # a page declared UTF-8 was decoded above already: once is enough (a large page's decode
        # costs as much as a fifth of its parse)
        text = utf8 if enc == "utf-8" and utf8 is not None else _strict(data, enc)
        if text is not None:
            return Decoded(text, enc, src, wrong)
        wrong = wrong or declared
    text = utf8 if utf8 is not None else _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", "utf-8", wrong)
    enc = _detect(data)
    if enc is not None:
        text = data.decode(enc, "replace")
        if text.count("\ufffd") <= MAX_REPLACED * max(1, len(text)):
            return Decoded(text, enc, "detected", wrong)
    return Decoded(None, enc, "detected", wrong)


def _single_byte(enc: str) -> bool:
    return enc.startswith(("cp12", "iso8859", "koi8", "mac-", "cp4", "cp8")) or enc in ("latin_1", "ascii")


def _detect(data: bytes) -> str | None:
    from resiliparse.parse.encoding import detect_encoding

    enc = _codec(detect_encoding(data[:65536]))
    if enc is not None and _strict(data, enc) is not None:
        return enc
    from charset_normalizer import from_bytes

    best = from_bytes(data[:65536]).best()
    other = _codec(best.encoding) if best is not None else None
    return other or enc
