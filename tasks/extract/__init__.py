"""Web input: WARC / WET / HTML columns read into documents (tasks.extract.warc, called by
tasks.ingest) and the extract stage, HTML to main text (tasks.extract.stage). docs/extract.md."""
