"""Genre detection, upstream's noise pre-clean, and sentence windows."""

from __future__ import annotations

import json
import re

GENRES = ("web", "book", "wiki", "textbook", "conversation", "code", "instruction")

# upstream's pre-clean: typographic punctuation to ASCII, every other non-ASCII character deleted
_ASCII_MAP = {
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": " - ", "\u2015": " - ", "\u2212": "-",
    "\u2026": "...", "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
    "\u201e": '"', "\u2032": "'", "\u2033": '"', "\u2190": "<-", "\u2192": "->", "\u2194": "<->", "\u21d2": "=>",
    "\u2022": "-", "\u2023": "-", "\u25cf": "-", "\u25aa": "-", "\u00b7": "-", "\u00a0": " ", "\u2009": " ",
    "\u00ab": '"', "\u00bb": '"',
}
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def preclean(text: str) -> str:
    return _NON_ASCII.sub("", text.translate(str.maketrans(_ASCII_MAP)))


_CODE_LINE = re.compile(r"^\s*(?:def |class |import |from \S+ import |#include|public |private |function |var |let |"
                        r"const |return\b|if \(|for \(|while \(|\}|\{|SELECT |CREATE |MATCH )|[;{}]\s*$")
_SPEAKER = re.compile(r"^\s*(?:Human|Assistant|User|AI|Bot|Q|A|Speaker \d+|[A-Z][a-z]{1,15})\s*:\s", re.M)
_INSTRUCTION = re.compile(r"^\s*(?:#+\s*Instruction|Instruction:|Write|Explain|Create|Generate|Describe|Summarize|"
                          r"Translate|List|Give|Design|Develop|Build|Implement)\b", re.I)
_TEXTBOOK = re.compile(r"^\s*(?:#+ |Chapter \d|Lesson \d|Section \d|Unit \d|Exercise|Key Takeaways|Introduction$|"
                       r"Conclusion$|Glossary)", re.M | re.I)


def detect_genre(text: str, source: str = "", metadata: str | None = None) -> str:
    """Metadata ``genre`` wins; then code, conversation, instruction, textbook and wiki cues;
    long texts are books; the rest is web."""
    if metadata:
        try:
            meta = json.loads(metadata)
        except ValueError:
            meta = None
        if isinstance(meta, dict) and meta.get("genre") in GENRES:
            return meta["genre"]
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return "web"
    if "```" in text or sum(1 for ln in lines if _CODE_LINE.search(ln)) / len(lines) > 0.25:
        return "code"
    if len(_SPEAKER.findall(text)) >= max(2, len(lines) * 0.3):
        return "conversation"
    if _INSTRUCTION.match(lines[0]) and len(lines[0].split()) < 60:
        return "instruction"
    if len(_TEXTBOOK.findall(text)) >= 2:
        return "textbook"
    if "wiki" in source.lower() or (len(lines) > 1 and len(lines[0].split()) <= 6 and not lines[0].rstrip().endswith(
            (".", "!", "?")) and re.match(rf"^\W*{re.escape(lines[0].split()[0])}", lines[1])):
        return "wiki"
    if len(text.split()) > 5000:
        return "book"
    return "web"


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9(])")


def units(text: str, genre: str) -> list[str]:
    """What windows are made of: sentences (paragraph breaks kept) for prose; blank-line-
    separated blocks for code (a fenced block is one unit)."""
    if genre == "code":
        units, fence, cur = [], False, []
        for line in text.split("\n"):
            cur.append(line)
            if line.strip().startswith("```"):
                fence = not fence
            if not fence and not line.strip():
                units.append("\n".join(cur) + "\n")
                cur = []
        if cur:
            units.append("\n".join(cur))
    else:
        units = []
        for para in re.split(r"(\n+)", text):
            if para.startswith("\n"):
                if units:
                    units[-1] += para
                continue
            units.extend(s + " " for s in _SENTENCE.split(para) if s)
            if units:
                units[-1] = units[-1].rstrip(" ")
    return units


def windows(text: str, genre: str, limit: int, count) -> list[str]:
    """Consecutive units packed into pieces of at most ``limit`` tokens (a longer unit is a
    piece of its own)."""
    out, cur, used = [], "", 0
    for unit in units(text, genre):
        n = count(unit)
        if cur and used + n > limit:
            out.append(cur)
            cur, used = "", 0
        cur += unit
        used += n
    if cur.strip():
        out.append(cur)
    return [w for w in (x.strip("\n") for x in out) if w.strip()]
