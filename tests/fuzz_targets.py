"""atheris fuzz targets for what reads untrusted text: ProX programs (parser and both
interpreters) and quality rule expressions. Run by tests/test_fuzz.py as

    python tests/fuzz_targets.py {prox|rules} -runs=N

An exception other than the documented ones escapes, and atheris exits non-zero with the input."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from tasks.prox.chunks import make_chunks
    from tasks.prox.interpreter import run_chunk_programs, run_doc_program
    from tasks.prox.program import parse_program
    from tasks.quality.rules import RuleError, compile_rule

DOC = "\n".join(f"line {i} with some words in it" for i in range(40))
CHUNKS = make_chunks(DOC, lambda s: max(1, len(s) // 4), limit=60)


def prox(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    programs = [parse_program(fdp.ConsumeUnicodeNoSurrogates(200)) for _ in CHUNKS]
    run_doc_program(programs[0])
    for compat in (False, True):
        res = run_chunk_programs(DOC, CHUNKS, programs, compat=compat)
        assert res.text is None or isinstance(res.text, str)


def rules(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(300)
    with contextlib.suppress(RuleError):  # the one error a rule may raise
        compile_rule("fuzz", text)


if __name__ == "__main__":
    target = {"prox": prox, "rules": rules}[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
