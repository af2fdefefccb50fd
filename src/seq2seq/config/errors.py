"""The configuration's error type, the shortened values its messages quote, and the strict base
every section derives from (unknown keys are refused)."""

from __future__ import annotations

import reprlib

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file, preset or ``--set`` override is invalid."""


# Values quoted in error messages are shortened: a config may hold a huge line or a YAML alias
# bomb, whose full repr would be exponentially long; the message only has to show which value.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT_LIMIT = 200


def short_repr(value: object) -> str:
    """``repr(value)`` cut to at most a couple of hundred characters, for error messages."""
    text = _SHORT.repr(value)
    return text if len(text) <= _SHORT_LIMIT else text[: _SHORT_LIMIT - 3] + "..."


class StrictModel(BaseModel):
    """A config section: unknown keys are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
