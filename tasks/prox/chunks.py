"""Upstream's views of a document: the document-level input (cut at about 2,000 tokens) and
the chunk-level inputs (globally numbered lines packed into chunks of about 1,500 tokens)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DOC_TOKENS = 2000
CHUNK_TOKENS = 1500


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def number(i: int) -> str:
    return f"[{i:03d}]"


@dataclass(frozen=True)
class Chunk:
    first: int  # global number of its first line
    last: int  # inclusive
    text: str  # "[doc]\n[000]...\n[/doc]"


def doc_input(text: str, count: Callable[[str], int], limit: int = DOC_TOKENS) -> str:
    """The document cut to at most ``limit`` tokens (by whole lines, and within the last line
    by characters)."""
    if count(text) <= limit:
        return text
    out, used = [], 0
    for line in lines_of(text):
        n = count(line) + 1
        if used + n > limit:
            room = limit - used
            if room > 0:
                out.append(line[: max(0, room * 4)])
            break
        out.append(line)
        used += n
    return "\n".join(out)


def make_chunks(text: str, count: Callable[[str], int], limit: int = CHUNK_TOKENS) -> list[Chunk]:
    """Greedy packing of numbered lines; a line longer than ``limit`` is a chunk of its own."""
    numbered = [number(i) + line for i, line in enumerate(lines_of(text))]
    chunks: list[Chunk] = []
    start, used = 0, 0
    for i, line in enumerate(numbered):
        n = count(line) + 1
        if i > start and used + n > limit:
            chunks.append(_chunk(numbered, start, i - 1))
            start, used = i, 0
        used += n
    if numbered:
        chunks.append(_chunk(numbered, start, len(numbered) - 1))
    return chunks


def _chunk(numbered: list[str], a: int, b: int) -> Chunk:
    return Chunk(a, b, "[doc]\n" + "\n".join(numbered[a: b + 1]) + "\n[/doc]")
