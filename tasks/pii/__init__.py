"""Personal data: e-mail addresses, phone numbers, IP addresses, credit-card numbers, IBANs
and US SSNs, tagged as spans, redacted with Dolma's ``|||KIND|||`` tokens, or documents
above a density dropped. :func:`scan` is the stage's work on one Arrow table; see
docs/hygiene.md."""

from __future__ import annotations

from tasks.pii.config import KINDS, PiiConfig
from tasks.pii.core import TOKENS, PiiResult, attribute_names, find_pii, iban_ok, luhn_ok, redact, scan

__all__ = ["KINDS", "TOKENS", "PiiConfig", "PiiResult", "attribute_names", "find_pii", "iban_ok", "luhn_ok",
           "redact", "scan"]
