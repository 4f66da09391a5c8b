"""The heuristic program writer: rules in the spirit of the ProX refiners' training labels,
emitting the same program language a model writes (so one interpreter runs both).

A line is boilerplate when it is
- a bare URL;
- a cookie / consent / privacy notice, a copyright, "all rights reserved" or unsubscribe line,
  share / follow / sign-in buttons, "skip to content", "read more", "powered by";
- a short line (at most ``short_words`` words, no sentence punctuation at its end) in the
  navigation block at the top (before the first content line; the first line, the page
  title, is kept), in the footer block after the last content line, or in a run of at
  least ``menu_run`` such short lines anywhere (a menu);
- a line repeated across documents of the same source (boilerplate templates; counted over
  the documents of one shard, the unit a task sees).
Inline URLs in kept lines are normalized away. A document whose kept content is under
``min_doc_words`` words is dropped at document level.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from tasks.prox.chunks import Chunk, lines_of
from tasks.prox.program import Call, render

URL_LINE = re.compile(r"^\s*(?:https?://|www\.)\S+\s*$", re.I)
INLINE_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+", re.I)
BOILERPLATE = re.compile(
    r"cookie|consent|privacy (?:policy|rights|settings)|terms (?:of|and) (?:use|service|conditions)|"
    r"©|\(c\) ?\d{4}|copyright \d{4}|all rights reserved|unsubscribe|newsletter|sign (?:in|up|me up)|"
    r"log ?in\b|create an account|skip to (?:main )?content|powered by|read more|share (?:this|on)|"
    r"follow us|subscribe|advertis(?:e|ement|ing)|sponsored|related (?:stories|posts|articles)|"
    r"permalink|print this|email this|back to top|all comments|leave a (?:comment|reply)",
    re.I)
SHARE_WORDS = re.compile(
    r"^(?:share|tweet|pin(?: it)?|email|print|facebook|twitter|linkedin|whatsapp|reddit|pinterest|"
    r"instagram|youtube|rss|comments?|reply|like|menu|search|home|next|previous|close|more|top)\W*$", re.I)
TERMINAL = (".", "!", "?", '."', ".'", ':"', "…", "»")


@dataclass(frozen=True)
class HeuristicParams:
    short_words: int = 6
    content_words: int = 10
    menu_run: int = 3
    boilerplate_max_words: int = 40
    repeated_min_docs: int = 3
    min_doc_words: int = 20


def _is_content(line: str, p: HeuristicParams) -> bool:
    words = len(line.split())
    s = line.strip()
    return words >= p.content_words or (words >= 4 and s.endswith(TERMINAL))


def _is_short(line: str, p: HeuristicParams) -> bool:
    s = line.strip()
    return bool(s) and len(s.split()) <= p.short_words and not s.endswith(TERMINAL)


def _key(line: str) -> str:
    return " ".join(line.lower().split())


def repeated_lines(texts: list[str], p: HeuristicParams) -> set[str]:
    """Lines (whitespace- and case-normalized, not too short to matter) found in at least
    ``repeated_min_docs`` of the documents."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update({_key(ln) for ln in lines_of(t) if len(ln.split()) >= 2})
    return {k for k, n in counts.items() if n >= p.repeated_min_docs}


def removed_lines(text: str, p: HeuristicParams, repeated: set[str] = frozenset()) -> list[bool]:
    lines = lines_of(text)
    n = len(lines)
    content = [_is_content(ln, p) for ln in lines]
    short = [_is_short(ln, p) for ln in lines]
    remove = [False] * n
    for i, ln in enumerate(lines):
        remove[i] = bool(URL_LINE.match(ln) or SHARE_WORDS.match(ln.strip()) or _key(ln) in repeated
                         or (BOILERPLATE.search(ln) and len(ln.split()) <= p.boilerplate_max_words))
    first = next((i for i in range(n) if content[i] and not remove[i]), n)
    last = next((i for i in range(n - 1, -1, -1) if content[i] and not remove[i]), -1)
    for i in range(1, first):  # the navigation block; line 0 is the title
        if short[i] or not lines[i].strip():
            remove[i] = True
    for i in range(last + 1, n):  # the footer block
        if short[i] or not content[i]:
            remove[i] = True
    i = 0
    while i < n:  # menus: runs of short lines
        j = i
        while j < n and short[j]:
            j += 1
        if j - i >= p.menu_run:
            for k in range(i, j):
                remove[k] = True
        i = max(j, i + 1)
    return remove


def doc_program(text: str, p: HeuristicParams, repeated: set[str] = frozenset()) -> str:
    remove = removed_lines(text, p, repeated)
    kept_words = sum(len(ln.split()) for ln, r in zip(lines_of(text), remove, strict=True) if not r)
    return "drop_doc()" if kept_words < p.min_doc_words else "keep_doc()"


def chunk_programs(text: str, chunks: list[Chunk], p: HeuristicParams, repeated: set[str] = frozenset()) -> list[str]:
    return programs_from_mask(text, chunks, removed_lines(text, p, repeated))


def programs_from_mask(text: str, chunks: list[Chunk], remove: list[bool]) -> list[str]:
    """One program per chunk: runs of removed lines as ``remove_lines`` ranges, inline URLs of
    the kept lines normalized away; ``keep_chunk()`` when nothing changes."""
    lines = lines_of(text)
    out = []
    for ch in chunks:
        calls: list[Call] = []
        i = ch.first
        while i <= ch.last:
            if remove[i]:
                j = i
                while j + 1 <= ch.last and remove[j + 1]:
                    j += 1
                calls.append(Call("remove_lines", (i, j)))
                i = j + 1
                continue
            for url in dict.fromkeys(INLINE_URL.findall(lines[i])):
                if url.strip() != lines[i].strip():
                    calls.append(Call("normalize", (url, "")))
            i += 1
        out.append(render(calls) if calls else "keep_chunk()")
    return out
