"""Program writers: ``heuristic`` (rules, no model) and ``model`` / ``teacher`` (a language
model through tasks.llm, grammar-constrained so that what it writes is a program)."""

from __future__ import annotations

from typing import Any, Protocol

from tasks.llm.backends import Request
from tasks.prox import heuristic
from tasks.prox.chunks import Chunk

SYSTEM = "You are a helpful, respectful and honest assistant."

DOC_GRAMMAR = 'root ::= "keep_doc()" | "drop_doc()"\n'
CHUNK_GRAMMAR = r'''root ::= call ("\n" call)? ("\n" call)? ("\n" call)? ("\n" call)? ("\n" call)?
call ::= "keep_chunk()" | "remove_lines(line_start=" num ", line_end=" num ")" | "normalize(source_str=\"" chars "\", target_str=\"\")"
num ::= [0-9] | [1-9] [0-9] | [1-9] [0-9] [0-9] | [1-9] [0-9] [0-9] [0-9] | [1-9] [0-9] [0-9] [0-9] [0-9]
chars ::= [^"\\\n]{1,80}
'''

DOC_FEWSHOT = """The following are web documents, each followed by a program. The program is keep_doc() when the \
document is fluent, informative text worth keeping, and drop_doc() when it is noise: spam, adverts, lists of links, \
navigation or boilerplate.

[doc]
Home | Shop | Cart
Cheap watches best price buy now click here free shipping
[/doc]
Program: drop_doc()

[doc]
The mitochondrion is an organelle found in most cells. It produces most of the chemical energy that the cell \
needs, and it has its own small genome.
[/doc]
Program: keep_doc()

[doc]
{doc}
[/doc]
Program: """

CHUNK_FEWSHOT = """Each web document below has numbered lines. The program after it removes navigation menus, \
lines that are only links, cookie notices, share buttons, footers and copyright lines with \
remove_lines(line_start=N, line_end=M), deletes noisy text inside a line with \
normalize(source_str="...", target_str=""), and is keep_chunk() when the text is already clean. \
Do not mistake the page title for a navigation bar.

[doc]
[000]Home
[001]News
[002]Sports
[003]The city council approved the new budget on Tuesday after a long debate.
[004]Share on Facebook
[/doc]
Program:
remove_lines(line_start=0, line_end=2)
remove_lines(line_start=4, line_end=4)

[doc]
[010]Rain is expected across the region this weekend, forecasters said.
[011]Temperatures will stay mild. Read more at http://example.com/weather
[/doc]
Program:
normalize(source_str="Read more at http://example.com/weather", target_str="")

[doc]
[020]The museum opens at nine and closes at five every day except Monday.
[/doc]
Program:
keep_chunk()

{chunk}
Program:
"""

TEACHER_DOC = """Decide whether this web document is worth keeping to train a language model. Keep fluent, \
informative text; drop spam, adverts, link lists, navigation and boilerplate. Answer with exactly keep_doc() or \
drop_doc().

[doc]
{doc}
[/doc]"""

TEACHER_CHUNK = """Clean this part of a web document. Its lines are numbered. Write a program, one call per line:
- remove_lines(line_start=N, line_end=M) removes lines N to M (inclusive): navigation bars and menus at the top \
(about the first 10 lines), lines that are only URLs, footers, copyright and unsubscribe blocks, cookie notices, \
share buttons;
- normalize(source_str="...", target_str="") deletes noisy text inside a line, such as an inline URL;
- keep_chunk() when nothing needs to change.
Do not mistake the page title for a navigation bar. Answer with the program only.

{chunk}"""


def _finished(program: str, hit_limit: bool) -> str:
    """An answer cut by the token limit loses its unfinished last call (the calls before it
    are whole); any other unparsable line stays and counts as an error."""
    from tasks.prox.program import ProgramError, parse_call

    lines = program.split("\n")
    if hit_limit and len(lines) > 1:
        try:
            parse_call(lines[-1])
        except ProgramError:
            return "\n".join(lines[:-1])
    return program


class Writer(Protocol):
    name: str

    def doc_programs(self, texts: list[str]) -> list[str]: ...

    def chunk_programs(self, texts: list[str], chunks: list[list[Chunk]]) -> list[list[str]]: ...

    def usage(self) -> dict[str, Any]: ...


class HeuristicWriter:
    name = "heuristic"

    def __init__(self, params: heuristic.HeuristicParams, context: list[str]):
        self.params = params
        self.repeated = heuristic.repeated_lines(context, params)

    def doc_programs(self, texts: list[str]) -> list[str]:
        return [heuristic.doc_program(t, self.params, self.repeated) for t in texts]

    def chunk_programs(self, texts: list[str], chunks: list[list[Chunk]]) -> list[list[str]]:
        return [heuristic.chunk_programs(t, ch, self.params, self.repeated) for t, ch in zip(texts, chunks,
                                                                                               strict=True)]

    def usage(self) -> dict[str, Any]:
        return {}


class ModelWriter:
    """ProX-format prompts; few-shot for base models (``model``), instructions in a chat
    (``teacher``, for instruction-tuned models behind an OpenAI-compatible server). Every
    request carries a grammar, so a grammar-capable backend can only answer with a program."""

    def __init__(self, client: Any, teacher: bool, max_doc_tokens: int, max_chunk_tokens: int):
        self.client = client
        self.teacher = teacher
        self.name = "teacher" if teacher else "model"
        self.max_doc_tokens = max_doc_tokens
        self.max_chunk_tokens = max_chunk_tokens
        self.failed = 0

    def _complete(self, prompts: list[str], grammar: str, max_tokens: int) -> list[str]:
        reqs = [Request(p, max_tokens=max_tokens, temperature=0.0, grammar=grammar,
                        stop=() if self.teacher else ("\n\n", "[doc]"), system=SYSTEM if self.teacher else None)
                for p in prompts]
        results = self.client.complete(reqs)
        # a failed request (after retries, or over budget) yields an empty program: one error
        return [_finished(c.text.strip(), c.completion_tokens >= max_tokens) if c.error is None else ""
                for c in results]

    def doc_programs(self, texts: list[str]) -> list[str]:
        template = TEACHER_DOC if self.teacher else DOC_FEWSHOT
        return self._complete([template.format(doc=t) for t in texts], DOC_GRAMMAR, self.max_doc_tokens)

    def chunk_programs(self, texts: list[str], chunks: list[list[Chunk]]) -> list[list[str]]:
        template = TEACHER_CHUNK if self.teacher else CHUNK_FEWSHOT
        flat = [template.format(chunk=c.text) for ch in chunks for c in ch]
        answers = self._complete(flat, CHUNK_GRAMMAR, self.max_chunk_tokens)
        out, k = [], 0
        for ch in chunks:
            out.append(answers[k: k + len(ch)])
            k += len(ch)
        return out

    def usage(self) -> dict[str, Any]:
        return self.client.usage.to_dict()
