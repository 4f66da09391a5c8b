"""WARC / WARC.gz / WET files into web records (HTML or plain text), with every unusable part
counted by reason and the rest of the file still read.

Framing is done here rather than by an archive iterator so that a broken part costs only
itself: gzip members are inflated one by one (a member that fails is skipped and reading
resumes at the next member's magic bytes), and within the inflated bytes each record is cut at
its ``Content-Length``, checked against the next record header (a record cut short by a crawler
crash is followed by the next header inside its declared length). Each record is then parsed
by FastWARC (``WarcRecord.from_bytes``: WARC and HTTP headers, status, charset).

A record's pointer (file, byte offset and length of its gzip member or of the record itself)
is what ``refinery explain`` uses to show the original HTML: :func:`fetch_record` reads those
bytes alone, so nothing is copied.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks.extract.charset import decode_html

WARC_SUFFIXES = (".warc", ".warc.gz")
WET_SUFFIXES = (".wet", ".wet.gz", ".warc.wet", ".warc.wet.gz")
WEB_SUFFIXES = WET_SUFFIXES + WARC_SUFFIXES
HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml+xhtml")
MAX_MEMBER = 256 << 20  # inflated bytes of one gzip member: larger is a bomb, not a crawl record
_CHUNK = 1 << 16
_CLEN = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_HTML_SNIFF = re.compile(rb"<(?:!doctype\s+html|html|head|body|title|meta|div|p)\b", re.I)


def web_format(path: str) -> str | None:
    """``warc`` or ``wet`` from a file name, else None."""
    lower = path.lower()
    if lower.endswith(WET_SUFFIXES):
        return "wet"
    if lower.endswith(WARC_SUFFIXES):
        return "warc"
    return None


@dataclass
class WebRecord:
    offset: int  # byte offset in the file of the record (its gzip member when compressed)
    kind: str  # "html": text is the page's HTML; "text": already text (a WET record)
    text: str
    record_id: str
    url: str | None
    date: str | None
    meta: dict[str, Any]  # for the document's metadata: url, record id, charset, pointer


@dataclass
class WarcRead:
    records: list[WebRecord] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (byte offset, reason)
    skipped: Counter = field(default_factory=Counter)  # record types that are not documents


def read_warc(data: bytes, uri: str, byte_range: tuple[int, int] | None = None) -> WarcRead:
    """The records of one WARC or WET file (``data``: the whole file, or for a ``byte_range``
    shard the bytes from the range's start, long enough to finish its last record). Records
    whose start lies in ``[start, stop)`` are this shard's; ``data`` then starts at ``start``."""
    out = WarcRead()
    base = byte_range[0] if byte_range else 0
    stop = byte_range[1] if byte_range else None
    seen: dict[str, int] = {}
    # a range after the first starts mid-file: its name says whether the file is gzip members
    gz = uri.lower().endswith(".gz") if base > 0 else data[:2] == b"\x1f\x8b"
    if gz:
        for off, length, buf, problem in _gzip_members(data, base, stop):
            if problem is not None:
                out.bad.append((off, problem))
                continue
            for inner, end, reason in _records(buf):
                if reason is not None:
                    out.bad.append((off + inner, reason))
                    continue
                ptr = {"uri": uri, "offset": off, "length": length, "gzip": True}
                if inner:
                    ptr["inner"] = inner
                _add(out, buf[inner:end], off if not inner else off + inner, ptr, seen)
    else:
        view = data
        start = 0
        if base > 0:  # a range shard of a plain WARC begins at the first record header in it
            nxt = _next_header(view, 0, len(view))
            start = len(view) if nxt is None else nxt
        for inner, end, reason in _records(view, start):
            if stop is not None and base + inner >= stop:
                break
            if reason is not None:
                out.bad.append((base + inner, reason))
                continue
            ptr = {"uri": uri, "offset": base + inner, "length": end - inner, "gzip": False}
            _add(out, view[inner:end], base + inner, ptr, seen)
    return out


def _gzip_members(data: bytes, base: int, stop: int | None):
    """(file offset, compressed length, inflated bytes, problem) per gzip member. A range shard
    (``base`` > 0) starts at the first member that inflates to a WARC record."""
    pos = 0
    mv = memoryview(data)
    if base > 0:
        pos = _resync(data, 0, need_warc=True)
    while pos < len(data):
        if stop is not None and base + pos >= stop:
            return
        if data[pos:pos + 2] != b"\x1f\x8b":
            nxt = _resync(data, pos + 1)
            yield base + pos, nxt - pos, b"", f"unreadable bytes between gzip members ({nxt - pos} bytes skipped)"
            pos = nxt
            continue
        d = zlib.decompressobj(31)
        parts, produced, fed, problem = [], 0, pos, None
        try:
            while not d.eof and fed < len(data):
                chunk = mv[fed:fed + _CHUNK]
                fed += len(chunk)
                piece = d.decompress(chunk, MAX_MEMBER + 1 - produced)
                produced += len(piece)
                parts.append(piece)
                if produced > MAX_MEMBER:
                    problem = f"corrupt gzip member: inflates to more than {MAX_MEMBER >> 20} MB"
                    break
        except zlib.error as exc:
            problem = f"corrupt gzip member: {exc}"
        if problem is None and not d.eof:
            problem = "truncated gzip member: the file ends inside it"
        if problem is not None:
            nxt = _resync(data, pos + 1)
            yield base + pos, nxt - pos, b"", problem
            pos = nxt
            continue
        end = fed - len(d.unused_data)
        yield base + pos, end - pos, b"".join(parts), None
        pos = end


def _resync(data: bytes, pos: int, need_warc: bool = False) -> int:
    """The offset of the next gzip member header at or after ``pos`` (one that inflates to a
    WARC record start when ``need_warc``), or the end."""
    while True:
        k = data.find(b"\x1f\x8b\x08", pos)
        if k < 0:
            return len(data)
        if not need_warc:
            return k
        try:
            head = zlib.decompressobj(31).decompress(data[k:k + 4096], 16)
        except zlib.error:
            head = b""
        if head.startswith(b"WARC/"):
            return k
        pos = k + 1


def _next_header(buf: bytes, start: int, stop: int) -> int | None:
    """The offset of the next WARC record header in ``buf[start:stop]``: a ``WARC/1.x`` line
    whose header block names a record type or id (a page that merely mentions WARC does not
    count). Not only at a line start: a record cut short ends anywhere, even mid-line."""
    k = start
    while True:
        k = buf.find(b"WARC/1.", k, stop)
        if k < 0:
            return None
        if buf[k + 7:k + 10] in (b"0\r\n", b"1\r\n"):
            head_end = buf.find(b"\r\n\r\n", k, k + 16384)
            head = buf[k:head_end if head_end > 0 else k + 16384]
            if b"WARC-Record-ID:" in head or b"WARC-Type:" in head:
                return k
        k += 7


def _records(buf: bytes, start: int = 0):
    """(start, end, problem) of each record in inflated bytes."""
    pos, n = start, len(buf)
    while pos < n:
        while pos < n and buf[pos] in b"\r\n":
            pos += 1
        if pos >= n:
            return
        if not buf.startswith(b"WARC/", pos):
            nxt = _next_header(buf, pos + 1, n)
            nxt = n if nxt is None else nxt
            yield pos, nxt, f"unreadable bytes between records ({nxt - pos} bytes skipped)"
            pos = nxt
            continue
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            yield pos, n, "truncated WARC record: the data ends inside its header"
            return
        m = _CLEN.search(buf, pos, head_end + 2)
        if m is None:
            nxt = _next_header(buf, pos + 1, n)
            nxt = n if nxt is None else nxt
            yield pos, nxt, "unparsable WARC record: no Content-Length"
            pos = nxt
            continue
        body = head_end + 4
        end = body + int(m.group(1))
        nxt = _next_header(buf, body, min(end, n))
        if end > n or nxt is not None:
            cut = n if nxt is None else nxt
            yield pos, cut, f"truncated WARC record (declared {int(m.group(1))} bytes, {cut - body} present)"
            pos = cut
            continue
        yield pos, end, None
        pos = end


def _add(out: WarcRead, raw: bytes, offset: int, ptr: dict[str, Any], seen: dict[str, int]) -> None:
    from fastwarc.warc import WarcRecord, WarcRecordType

    try:
        rec = WarcRecord.from_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - FastWARC's errors are a property of the record
        out.bad.append((offset, f"unparsable WARC record: {exc}"))
        return
    rtype = rec.record_type
    if rtype not in (WarcRecordType.response, WarcRecordType.conversion, WarcRecordType.resource):
        out.skipped[(rec.headers.get("WARC-Type") or "unknown").strip().lower()] += 1
        return
    rid = rec.record_id or ""
    if not rid:
        out.bad.append((offset, "unparsable WARC record: no WARC-Record-ID"))
        return
    if rid in seen:
        out.bad.append((offset, f"duplicate WARC record id {rid!r} (first at byte {seen[rid]})"))
        return
    seen[rid] = offset
    url = rec.headers.get("WARC-Target-URI")
    date = rec.headers.get("WARC-Date")
    meta: dict[str, Any] = {"url": url, "warc_record_id": rid, "warc_date": date, "web": ptr}
    if rtype == WarcRecordType.conversion:
        payload = rec.reader.read()
        decoded = decode_html(payload, "utf-8")
        if decoded.text is None:
            out.bad.append((offset, "undecodable bytes: no charset decodes the text"))
            return
        meta["web"] = {**ptr, "kind": "text"}
        out.records.append(WebRecord(offset, "text", decoded.text, rid, url, date, meta))
        return
    ctype, charset, encoding = None, None, None
    if rtype == WarcRecordType.response:
        try:
            rec.parse_http()
        except Exception as exc:  # noqa: BLE001
            out.bad.append((offset, f"unparsable HTTP response: {exc}"))
            return
        if rec.http_headers is None:
            out.bad.append((offset, "unparsable HTTP response: no HTTP headers"))
            return
        status = rec.http_headers.status_code
        if not 200 <= status < 300:
            out.bad.append((offset, f"HTTP status: {status}"))
            return
        ctype, charset = rec.http_content_type, rec.http_charset
        encoding = (rec.http_headers.get("Content-Encoding") or "").strip().lower() or None
    else:
        ctype = (rec.headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
    payload = rec.reader.read()
    if encoding in ("gzip", "x-gzip") and payload[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(payload)
        except Exception:  # noqa: BLE001
            out.bad.append((offset, "undecodable bytes: Content-Encoding gzip does not inflate"))
            return
    if ctype is not None and ctype.lower() not in HTML_TYPES:
        out.bad.append((offset, f"not HTML ({ctype})"))
        return
    if ctype is None and not _HTML_SNIFF.search(payload[:2048]):
        out.bad.append((offset, "not HTML (no Content-Type, and the payload does not look like HTML)"))
        return
    if b"\x00" in payload[:4096] and not payload.startswith((b"\xff\xfe", b"\xfe\xff")):
        out.bad.append((offset, "not HTML (binary payload)"))
        return
    decoded = decode_html(payload, charset)
    if decoded.text is None:
        out.bad.append((offset, "undecodable bytes: no charset decodes the page"))
        return
    meta["web"] = {**ptr, "kind": "html"}
    meta["charset"] = decoded.encoding
    if decoded.wrong_declared:
        meta["charset_declared_wrong"] = decoded.wrong_declared
    out.records.append(WebRecord(offset, "html", decoded.text, rid, url, date, meta))


def fetch_record(pointer: dict[str, Any], endpoint_url: str | None = None) -> str:
    """The original HTML (or WET text) a document came from, read from its file by pointer."""
    from tasks.storage import filesystem_for

    fs, path = filesystem_for(pointer["uri"], endpoint_url)
    raw = fs.cat_file(path, pointer["offset"], pointer["offset"] + pointer["length"])
    if pointer.get("gzip"):
        raw = zlib.decompressobj(31).decompress(raw)[pointer.get("inner", 0):]
    got = WarcRead()
    _add(got, raw[: next(e for _, e, _ in _records(raw))], 0, dict(pointer), {})
    if not got.records:
        raise ValueError(f"{pointer['uri']}: no readable record at byte {pointer['offset']}: "
                         f"{got.bad[0][1] if got.bad else 'not a document record'}")
    return got.records[0].text
