"""Running programs. Two semantics, chosen by ``compat``:

**Upstream (compat=True)**, as GAIR-NLP/ProX runs them: all chunk programs of a document are
run together on the whole document; every ``normalize`` first, as a replacement over the
whole text; then the removals, with the original numbering. Errors: an unparsable call or bad
argument, a range starting past the last line, an end past it (clipped). Acceptance with
r = words(refined) / words(original): r <= 0.05 and errors < 2 → drop; refined has <= 10
words → drop; errors < 2 → refined; else the original, program ignored.

**Refinery's own (default)**: each chunk program acts only on the lines of its chunk, the
lines the model saw. A removal reaching outside the chunk, a ``normalize`` whose source is not
in the chunk's lines or spans a line break, and an unparsable call are errors *of that chunk's
program*, and a chunk program with any error is ignored as a whole (its chunk stays as it was)
while the other chunks' programs still apply. Acceptance: nothing left or r <= 0.05 → drop;
<= 10 words → drop; else the refined text. Why: upstream's global replacement edits text in
chunks the model never saw (a short source like "Home" hits every occurrence in the article);
a removal computed from one chunk can delete another chunk's lines; and one bad call in one
chunk throws away the good programs of all the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.prox.chunks import Chunk, lines_of
from tasks.prox.program import Program


@dataclass
class DocDecision:
    keep: bool
    errors: int
    decided: bool  # False when the program held no keep_doc()/drop_doc() (kept by default)


def run_doc_program(program: Program) -> DocDecision:
    """The first keep_doc()/drop_doc() decides; anything else is an error; no decision keeps."""
    errors = len(program.errors)
    for call in program.calls:
        if call.name in ("keep_doc", "drop_doc"):
            return DocDecision(call.name == "keep_doc", errors + sum(
                1 for c in program.calls if c.name not in ("keep_doc", "drop_doc")), True)
    return DocDecision(True, errors + len(program.calls), False)


@dataclass
class Refined:
    text: str | None  # None: the document is dropped
    outcome: str  # refined | unchanged | original_kept | dropped_nearly_empty | dropped_short
    errors: int
    ops: dict[str, int] = field(default_factory=dict)
    ignored_chunks: int = 0


def _words(text: str) -> int:
    return len(text.split())


def _accept(original: str, refined: str, errors: int, compat: bool) -> tuple[str | None, str]:
    wo, wr = _words(original), _words(refined)
    r = wr / wo if wo else 0.0
    if compat:
        if r <= 0.05 and errors < 2:
            return None, "dropped_nearly_empty"
        if wr <= 10:
            return None, "dropped_short"
        if errors < 2:
            return refined, "refined" if refined != original else "unchanged"
        return original, "original_kept"
    if wr == 0 or r <= 0.05:
        return None, "dropped_nearly_empty"
    if wr <= 10:
        return None, "dropped_short"
    return refined, "refined" if refined != original else "unchanged"


def _ops(programs: list[Program]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in programs:
        for k, v in p.ops().items():
            out[k] = out.get(k, 0) + v
    return out


def run_chunk_programs(text: str, chunks: list[Chunk], programs: list[Program], compat: bool = False) -> Refined:
    if compat:
        return _run_upstream(text, programs)
    return _run_scoped(text, chunks, programs)


def _run_upstream(text: str, programs: list[Program]) -> Refined:
    errors = sum(len(p.errors) for p in programs)
    calls = [c for p in programs for c in p.calls]
    errors += sum(1 for c in calls if c.name in ("keep_doc", "drop_doc"))  # not chunk-level calls
    work = text
    for c in calls:
        if c.name == "normalize":
            work = work.replace(c.args[0], c.args[1])
    lines = lines_of(work)
    removed = [False] * len(lines)
    for c in calls:
        if c.name != "remove_lines":
            continue
        start, end = c.args
        if start > len(lines) - 1:
            errors += 1
            continue
        if end > len(lines) - 1:
            end = len(lines) - 1
            errors += 1
        for i in range(start, end + 1):
            removed[i] = True
    refined = "\n".join(ln for ln, r in zip(lines, removed, strict=True) if not r)
    out, outcome = _accept(text, refined, errors, compat=True)
    return Refined(out, outcome, errors, _ops(programs))


def _run_scoped(text: str, chunks: list[Chunk], programs: list[Program]) -> Refined:
    lines = lines_of(text)
    removed = [False] * len(lines)
    errors, ignored = 0, 0
    for chunk, program in zip(chunks, programs, strict=True):
        bad = len(program.errors)
        marks: list[int] = []
        edits: list[tuple[str, str]] = []
        for c in program.calls:
            if c.name == "remove_lines":
                start, end = c.args
                if start < chunk.first or end > chunk.last:
                    bad += 1
                    continue
                marks.extend(range(start, end + 1))
            elif c.name == "normalize":
                src, tgt = c.args
                if "\n" in src or not any(src in lines[i] for i in range(chunk.first, chunk.last + 1)):
                    bad += 1
                    continue
                edits.append((src, tgt))
            elif c.name in ("keep_doc", "drop_doc"):
                bad += 1
        errors += bad
        if bad:
            ignored += 1
            continue
        for i in marks:
            removed[i] = True
        for i in range(chunk.first, chunk.last + 1):
            for src, tgt in edits:
                lines[i] = lines[i].replace(src, tgt)
    refined = "\n".join(ln for ln, r in zip(lines, removed, strict=True) if not r)
    out, outcome = _accept(text, refined, errors, compat=False)
    return Refined(out, outcome, errors, _ops(programs), ignored)
