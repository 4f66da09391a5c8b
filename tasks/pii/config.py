"""The `pii:` block of a pipeline file."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from tasks.config_base import ConfigModel

KINDS = ("email", "phone", "ip_address", "credit_card", "iban", "us_ssn")
Kind = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn"]

# Addresses that name nobody: RFC 2606 example domains, RFC 5737/3849 documentation networks,
# loopback, "this network", broadcast, multicast and link-local ranges.
DEFAULT_ALLOW_DOMAINS = ["example.com", "example.org", "example.net", "example.edu", "example", "test", "invalid",
                         "localhost"]
DEFAULT_ALLOW_NETWORKS = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "127.0.0.0/8",
                          "0.0.0.0/8", "255.255.255.255/32", "169.254.0.0/16", "224.0.0.0/4",
                          "::1/128", "ff00::/8", "::/128", "fe80::/10"]


# service accounts written in every README, not anybody's address
DEFAULT_ALLOW_VALUES = ["git@github.com", "git@gitlab.com", "git@bitbucket.org", "git@ssh.dev.azure.com"]


class PiiConfig(ConfigModel):
    enabled: bool = Field(False, title="Find personal data",
                          description="Off by default: a release keeps its text as it came unless asked.")
    mode: Literal["tag", "redact", "drop"] = Field(
        "tag", title="Mode",
        description="tag: spans as attributes only; redact: spans replaced by |||KIND||| tokens (Dolma's); "
                    "drop: documents above max_density rejected, the rest redacted.")
    kinds: list[Kind] = Field(list(KINDS), min_length=1, title="Kinds", description="What to look for.")
    max_density: float = Field(0.02, gt=0, title="Maximum density",
                               description="drop mode: PII matches per word above which a document is rejected.")
    allow_domains: list[str] = Field(DEFAULT_ALLOW_DOMAINS, title="Allowed e-mail domains",
                                     description="E-mail addresses at these domains (or their subdomains) are left alone.")
    allow_networks: list[str] = Field(DEFAULT_ALLOW_NETWORKS, title="Allowed IP networks",
                                      description="CIDR ranges whose addresses are left alone (documentation, loopback, ...).")
    allow_values: list[str] = Field(DEFAULT_ALLOW_VALUES, title="Allowed values",
                                    description="Exact matches left alone (e.g. a project's own public contact address).")

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"allow_networks: {net!r} is not a CIDR range ({exc})") from None
        return v

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [d.lower().strip(".") for d in v]
