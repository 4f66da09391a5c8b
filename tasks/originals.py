"""The original a document came from, read again from its input by the ``web`` pointer in its
metadata (``refinery explain`` shows it): above both ingest (whose file readers it uses) and the
WARC reader of ``tasks.extract``, which ingest itself reads pages with."""

from __future__ import annotations

from typing import Any

from tasks.extract.charset import decode_html
from tasks.extract.warc import fetch_record


def fetch_original(pointer: dict[str, Any], endpoint_url: str | None = None) -> str:
    """The page a document was extracted from, by the ``web`` pointer in its metadata: a WARC
    record (byte offset and length) or a row of a Parquet / JSONL file's HTML column."""
    if "offset" in pointer:
        return fetch_record(pointer, endpoint_url)
    from tasks.storage import filesystem_for

    fs, path = filesystem_for(pointer["uri"], endpoint_url)
    row, column = int(pointer["row"]), pointer["column"]
    if path.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            start = 0
            for g in range(pf.metadata.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if row < start + rows:
                    value = pf.read_row_group(g, columns=[column]).column(0)[row - start].as_py()
                    break
                start += rows
            else:
                raise ValueError(f"{pointer['uri']}: no row {row}")
    else:
        import json

        from tasks.ingest import Shard, as_utf8, decompress, json_document

        shard = Shard(0, pointer["uri"], "jsonl", "", None)  # type: ignore[arg-type]
        data = as_utf8(shard, decompress(shard, fs.cat_file(path)))
        whole = json_document(data)  # a JSON array: the row is the element's index, else the line's
        if whole is not None:
            value = (whole if isinstance(whole, list) else [whole])[row][column]
        else:
            line = data.split(b"\n")[row]
            value = json.loads(line[3:] if line.startswith(b"\xef\xbb\xbf") else line)[column]
    if isinstance(value, bytes):
        decoded = decode_html(value)
        if decoded.text is None:
            raise ValueError(f"{pointer['uri']}: row {row} is not decodable HTML")
        return decoded.text
    return value
