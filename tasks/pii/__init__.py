"""Personal data: e-mail addresses, phone numbers, IP addresses, credit-card numbers, IBANs
and US SSNs, tagged as spans, redacted with Dolma's ``|||KIND|||`` tokens, or documents
above a density dropped. :func:`scan` is the stage's work on one Arrow table; see
docs/hygiene.md."""
