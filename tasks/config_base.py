"""The base of every pipeline-config model, in the bottom layer: stage packages declare their
config models on it (``tasks/<stage>/config.py``) and :mod:`tasks.config` assembles them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tasks.layout import name_problem  # one definition of a safe name, beside the paths it guards


class ConfigModel(BaseModel):
    # allow_inf_nan: `.inf` or `.nan` in YAML is a float; no setting wants one (a retry delay
    # of infinity passes `ge=0` and then hangs a run)
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def safe_name(value: str | None, what: str) -> str | None:
    """Names from the config become path components as they are: refused unless safe."""
    problem = None if value is None else name_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {value[:200]!r} {problem} (no slashes, no '..', see tasks/layout.py)")
    return value
