"""Personal data in documents: find (regex + checksum), tag, redact or drop.

Speed comes from two passes: one RE2 pass of Arrow over the whole text column
(``match_substring_regex``, hundreds of MB/s) picks the few documents that could hold any
kind at all; only those are scanned by Python's ``re`` with the exact patterns, and every
match is then validated (Luhn for cards, ISO 7064 mod 97 and the country's length for IBANs,
octets and allow-lists for IP addresses, SSA rules for SSNs)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.kernels import word_counts
from tasks.pii.config import KINDS, PiiConfig
from tasks.schema import SPANS, attribute_name

# Dolma's replacement tokens (its pii tagger writes EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS)
TOKENS = {"email": "|||EMAIL_ADDRESS|||", "phone": "|||PHONE_NUMBER|||", "ip_address": "|||IP_ADDRESS|||",
          "credit_card": "|||CREDIT_CARD|||", "iban": "|||IBAN|||", "us_ssn": "|||US_SSN|||"}

# RE2 (Arrow) prefilters: necessary conditions of each kind's pattern, cheap to run on all text
PREFILTER = {
    "email": r"[A-Za-z0-9._%+\-]@[A-Za-z0-9\-]+\.[A-Za-z]",
    "phone": r"\d{3}\)?[ .\-]?\d{3}[ .\-]\d{4}|\+[1-9]\d{0,2}[ .\-]?\(?\d{1,4}\)?[ .\-]?\d",
    "ip_address": r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]{1,4}::?[0-9A-Fa-f]{1,4}::?[0-9A-Fa-f]{1,4}",
    "credit_card": r"\d{4}[ \-]?\d{4}[ \-]?\d{4}[ \-]?\d|\d{4}[ \-]?\d{6}[ \-]?\d{5}",
    "iban": r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}",
    "us_ssn": r"\d{3}-\d{2}-\d{4}",
}

# generic top-level domains an address may end in (any two-letter country code is accepted too)
_GENERIC_TLDS = frozenset(
    ["com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "name", "pro", "mobi", "asia", "tel", "travel", "museum", "aero", "coop", "jobs", "cat", "post", "app", "dev", "online", "site", "tech", "store", "xyz", "club", "shop", "blog", "email", "cloud", "live", "news", "top", "link", "space", "website", "design", "page", "global", "group", "company", "network", "world", "agency", "media", "digital", "solutions", "services", "academy", "center", "education", "health", "systems", "today", "life", "team", "tools", "email", "science"])

_EMAIL = re.compile(r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
                    r"([A-Za-z]{2,24})(?![\w\-]|\.[A-Za-z0-9])")
# NANP numbers with a separator or brackets or +1, and international numbers written with "+"
_PHONE = re.compile(
    r"(?<![\w+.\-/])(?<!\d )(?:"
    r"(?:\+?1[ .\-]?)?(?:\([2-9]\d{2}\)[ .\-]?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}"
    r"|\+[1-9]\d{0,2}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,4})){2,5}"
    r")(?![\w\-]|\.\d| \d)")  # a run of numbers in a table is no phone number
_IPV4 = re.compile(r"(?<![\w.\-])(?:\d{1,3}\.){3}\d{1,3}(?![\w\-]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:)(?::?[0-9A-Fa-f]{1,4}|:){1,7}(?![\w:])")
_CARD = re.compile(r"(?<![\w\-.])(?:\d{4}([ \-]?)\d{4}\1\d{4}\1\d{1,7}|\d{4}([ \-]?)\d{6}\2\d{5})(?![\w\-]|\.\d)")
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)")
_SSN = re.compile(r"(?<![\w\-.])(\d{3})-(\d{2})-(\d{4})(?![\w\-]|\.\d)")
# a version number looks like an IPv4 address: these words before it say which it is
_VERSION_CONTEXT = re.compile(
    r"(?:\b(?:version|__version__|release|build|v|ver|firmware|update|patch|oid)\b\.?[\s=:'\"]*"
    r"|[<>=~!]=\s*|[@/:]|\bv)$", re.I)  # "1.2.3.4" after a version word, a pin (>=), a package@, a path/ or tag:

# lengths of IBANs per country (ISO 13616 registry)
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    if _IBAN_LENGTH.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_ok(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 3:
        return False
    # issuer prefixes of the networks in use (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay)
    p2, p4 = int(digits[:2]), int(digits[:4])
    issuer = (digits[0] == "4" or 51 <= p2 <= 55 or 2221 <= p4 <= 2720 or p2 in (34, 37, 36, 38, 62)
              or digits.startswith(("6011", "65", "35", "300", "301", "302", "303", "304", "305")))
    return issuer and luhn_ok(digits)


def _ssn_ok(m: re.Match) -> bool:
    area, group, serial = m.group(1), m.group(2), m.group(3)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _phone_ok(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if not s.startswith(("+", "(")) and not any(c in s for c in ".-"):
        return False  # "800 600 1000": numbers in a row of a table, not a phone number written out
    return 10 <= digits <= 15 if s.startswith("+") else digits in (10, 11)


@dataclass(frozen=True)
class _Allow:
    domains: tuple[str, ...]
    networks: tuple[Any, ...]
    values: frozenset[str]

    def domain(self, address: str) -> bool:
        host = address.rsplit("@", 1)[1].lower()
        return any(host == d or host.endswith("." + d) for d in self.domains)

    def ip(self, addr: Any) -> bool:
        return any(addr.version == n.version and addr in n for n in self.networks)


_END = 1 << 62  # "to the end of the text" for a pattern's endpos


@lru_cache(maxsize=16)
def _allow(domains: tuple[str, ...], networks: tuple[str, ...], values: tuple[str, ...]) -> _Allow:
    return _Allow(domains, tuple(ipaddress.ip_network(n, strict=False) for n in networks), frozenset(values))


def _find_email(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    out = []
    for m in _EMAIL.finditer(text, lo, hi):
        tld = m.group(1).lower()
        if (len(tld) == 2 or tld in _GENERIC_TLDS) and not allow.domain(m.group()):
            out.append(m.span())
    return out


def _find_phone(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    return [m.span() for m in _PHONE.finditer(text, lo, hi) if _phone_ok(m.group())]


def _find_ip(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    out = []
    for m in _IPV4.finditer(text, lo, hi):
        parts = m.group().split(".")
        if any(int(p) > 255 or (len(p) > 1 and p[0] == "0") for p in parts) or parts[0] == "255":
            continue  # not an address, or a netmask
        if _VERSION_CONTEXT.search(text, max(0, m.start() - 24), m.start()):
            continue
        if not allow.ip(ipaddress.IPv4Address(m.group())):
            out.append(m.span())
    for m in _IPV6.finditer(text, lo, hi):
        s = m.group()
        # three groups at least: "1::2" is a Python slice, "fe80::1" and "::1" are allowed anyway
        if sum(1 for g in s.split(":") if g) < 3 or not any(c.isdigit() for c in s):
            continue
        try:
            addr = ipaddress.IPv6Address(s)
        except ValueError:
            continue
        if not allow.ip(addr):
            out.append(m.span())
    return out


def _find_card(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    return [m.span() for m in _CARD.finditer(text, lo, hi) if _card_ok(m.group())]


def _find_iban(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    return [m.span() for m in _IBAN.finditer(text, lo, hi) if iban_ok(m.group().replace(" ", ""))]


def _find_ssn(text: str, allow: _Allow, lo: int = 0, hi: int = _END) -> list[tuple[int, int]]:
    return [m.span() for m in _SSN.finditer(text, lo, hi) if _ssn_ok(m)]


_FINDERS: dict[str, Callable[..., list[tuple[int, int]]]] = {
    "email": _find_email, "iban": _find_iban, "credit_card": _find_card, "us_ssn": _find_ssn,
    "phone": _find_phone, "ip_address": _find_ip,
}
# when two kinds claim overlapping text, the earlier kind here keeps it
PRIORITY = ["email", "iban", "credit_card", "us_ssn", "phone", "ip_address"]


def _resolve(candidates: list[tuple[int, int, str]], text: str, allow: _Allow) -> list[tuple[int, int, str]]:
    """Drop allowed values and, where kinds overlap, keep the one first in PRIORITY."""
    rank = {k: i for i, k in enumerate(PRIORITY)}
    taken: list[tuple[int, int, str]] = []
    for a, b, kind in sorted(candidates, key=lambda c: (rank[c[2]], c[0])):
        if text[a:b] in allow.values or any(a < y and x < b for x, y, _ in taken):
            continue
        taken.append((a, b, kind))
    return sorted(taken)


def _allow_of(cfg: PiiConfig) -> _Allow:
    return _allow(tuple(cfg.allow_domains), tuple(cfg.allow_networks), tuple(cfg.allow_values))


def find_pii(text: str, cfg: PiiConfig) -> list[tuple[int, int, str]]:
    """Every PII span of one text as ``(start, end, kind)`` (character offsets), sorted,
    not overlapping."""
    allow = _allow_of(cfg)
    found = [(a, b, kind) for kind in cfg.kinds for a, b in _FINDERS[kind](text, allow)]
    return _resolve(found, text, allow)


def redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    pieces, last = [], 0
    for a, b, kind in spans:
        pieces += [text[last:a], TOKENS[kind]]
        last = b
    pieces.append(text[last:])
    return "".join(pieces)


def attribute_names(kinds: list[str] | tuple[str, ...] = KINDS) -> dict[str, str]:
    return {k: attribute_name("pii", "regex", k) for k in [*kinds, "count", "density"]}


@dataclass
class PiiResult:
    """Per input row: ``keep``, ``new_text`` (redacted in redact and drop modes), ``reasons``
    and ``details`` (None for kept rows), ``attributes`` (one spans column per kind, the
    count and the density); ``figures``: matches per kind and document counts."""

    keep: np.ndarray
    new_text: pa.Array
    reasons: list[str | None]
    details: list[str | None]
    attributes: dict[str, pa.Array]
    figures: dict[str, Any]


def candidates(texts: pa.Array, kinds: list[str]) -> np.ndarray:
    """Rows that could hold any of ``kinds`` (one RE2 pass over the column)."""
    pattern = "|".join(f"(?:{PREFILTER[k]})" for k in kinds)
    hit = pc.match_substring_regex(texts, pattern)
    return np.nonzero(hit.fill_null(False).to_numpy(zero_copy_only=False))[0]


# Text around an RE2 prefilter match that the exact pattern is run on: more than any
# e-mail address, phone number, IBAN or card number reaches beyond its prefilter's match.
MARGIN = 128
_OPEN, _CLOSE = "\x01", "\x02"


def _windows(marked: str, n: int) -> list[tuple[int, int]]:
    """Merged ``(lo, hi)`` windows of an original text of length ``n`` around the matches
    that ``marked`` (the text with every match wrapped in _OPEN/_CLOSE) shows."""
    out: list[tuple[int, int]] = []
    i = found = 0
    while (a := marked.find(_OPEN, i)) >= 0:
        b = marked.find(_CLOSE, a)
        lo, hi = max(0, a - 2 * found - MARGIN), min(n, b - 2 * found - 1 + MARGIN)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
        found += 1
        i = b + 1
    return out


def _find_in_rows(texts: pa.Array, rows: np.ndarray, cfg: PiiConfig) -> dict[int, list[tuple[int, int, str]]]:
    """:func:`find_pii` of the given rows. RE2 marks where each kind's prefilter matches
    (``replace_substring_regex``, in C); Python's exact patterns then run on windows around
    those places only. A match touching a window's edge is re-found on the whole text."""
    allow = _allow_of(cfg)
    sub = texts.take(pa.array(rows))
    docs = sub.to_pylist()
    raw: dict[int, list[tuple[int, int, str]]] = {}
    for kind in cfg.kinds:
        finder = _FINDERS[kind]
        hit = pc.match_substring_regex(sub, PREFILTER[kind]).fill_null(False).to_numpy(zero_copy_only=False)
        where = np.nonzero(hit)[0]
        if not len(where):
            continue
        marked = pc.replace_substring_regex(sub.take(pa.array(where)), f"({PREFILTER[kind]})",
                                            f"{_OPEN}\\1{_CLOSE}").to_pylist()
        for j, m in zip(where.tolist(), marked, strict=True):
            text = docs[j]
            if _OPEN in text or _CLOSE in text:  # the markers would be ambiguous: whole text
                spans = finder(text, allow)
            else:
                spans = []
                for lo, hi in _windows(m, len(text)):
                    got = finder(text, allow, lo, hi)
                    if any((a == lo and lo > 0) or (b == hi and hi < len(text)) for a, b in got):
                        spans = finder(text, allow)
                        break
                    spans += got
            if spans:
                raw.setdefault(j, []).extend((a, b, kind) for a, b in spans)
    out = {}
    for j, spans in raw.items():
        if r := _resolve(spans, docs[j], allow):
            out[int(rows[j])] = r
    return out


def scan(table: pa.Table, cfg: PiiConfig, text_column: str = "text") -> PiiResult:
    """Find the PII of every document of ``table`` and apply ``cfg.mode``."""
    texts = table.column(text_column).combine_chunks()
    n = len(texts)
    rows = candidates(texts, list(cfg.kinds))
    found = _find_in_rows(texts, rows, cfg) if len(rows) else {}
    counts = np.zeros(n, np.int64)
    for d, spans in found.items():
        counts[d] = len(spans)
    words = np.ones(n)
    if found:  # words are counted where there is something to divide only
        hit = np.fromiter(found, np.int64)
        words[hit] = word_counts(texts.take(pa.array(hit))).fill_null(0).to_numpy(zero_copy_only=False)
    density = np.where(counts > 0, counts / np.maximum(words, 1), 0.0)

    keep = np.ones(n, bool)
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    per_kind = {k: 0 for k in cfg.kinds}
    for spans in found.values():
        for _, _, kind in spans:
            per_kind[kind] += 1
    new_text = texts
    if cfg.mode == "drop":
        for d in np.nonzero(density > cfg.max_density)[0].tolist():
            keep[d] = False
            kinds = sorted({k for _, _, k in found[d]})
            reasons[d] = f"pii density {density[d]:.3f} above {cfg.max_density} ({', '.join(kinds)})"
            details[d] = f"{counts[d]} matches in {int(words[d])} words"
    if cfg.mode in ("redact", "drop") and found:
        # dropped documents are redacted too: their text is kept in the release's rejects
        changed = sorted(found)
        mask = np.zeros(n, bool)
        mask[changed] = True
        # only the changed rows pass through Python
        new_text = pc.replace_with_mask(texts, pa.array(mask), pa.array(
            [redact(texts[d].as_py(), found[d]) for d in changed], texts.type))

    names = attribute_names(cfg.kinds)
    attributes: dict[str, pa.Array] = {}
    for kind in cfg.kinds:
        lengths = np.zeros(n, np.int32)
        values: list[dict[str, Any]] = []
        for d in sorted(found):
            mine = [{"start": a, "end": b, "score": 1.0} for a, b, k in found[d] if k == kind]
            lengths[d] = len(mine)
            values += mine
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        attributes[names[kind]] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, SPANS.value_type))
    attributes[names["count"]] = pa.array(counts, pa.int64())
    attributes[names["density"]] = pa.array(density, pa.float64())
    figures = {"docs_in": n, "docs_scanned": int(len(rows)), "docs_with_pii": len(found),
               "docs_dropped": int((~keep).sum()),
               "docs_redacted": sum(1 for d in found if keep[d]) if cfg.mode != "tag" else 0,
               "matches": per_kind}
    return PiiResult(keep, new_text, reasons, details, attributes, figures)
