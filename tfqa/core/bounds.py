"""The range of a numeric setting, declared once on its dataclass field.

    @dataclass(frozen=True)
    class BuildConfig:
        workers: int = bounded(0, min=0)
        \"\"\"Worker processes; 0 = one per CPU core.\"\"\"

        def __post_init__(self) -> None:
            check_bounds(self)

``check_bounds`` refuses an out-of-range value however the dataclass was built (code, a profile,
the settings file); ``tfqa.stages.options`` gives the same range to the field's command-line
option (click refuses ``--workers -2`` naming the option) and names the option in a refusal that
``check_bounds`` raised while building a stage's settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tfqa.core.errors import UserError

BOUNDS_KEY = "tfqa.bounds"


@dataclass(frozen=True)
class Bounds:
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"between {self.min} and {self.max}"
        return f">= {self.min}" if self.min is not None else f"<= {self.max}"

    def allows(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def bounded(default: Any, *, min: float | None = None, max: float | None = None) -> Any:
    """A dataclass field with ``default`` whose value must lie in ``[min, max]`` (either open)."""
    if min is None and max is None:
        raise TypeError("bounded() needs min or max")
    return dataclasses.field(default=default, metadata={BOUNDS_KEY: Bounds(min, max)})


def bounds_of(f: dataclasses.Field) -> Bounds | None:
    return f.metadata.get(BOUNDS_KEY)


class OutOfRange(UserError, ValueError):
    """A setting outside its declared range; ``owner`` is the dataclass, ``field`` the setting."""

    def __init__(self, owner: type, name: str, value: Any, bounds: Bounds):
        self.owner, self.value, self.bounds = owner, value, bounds
        super().__init__(f"{value!r} is out of range: it must be {bounds.describe()}", field=name)


def check_bounds(obj: Any) -> None:
    """Raise ``OutOfRange`` for the first field of dataclass ``obj`` outside its declared range."""
    for f in dataclasses.fields(obj):
        bounds = bounds_of(f)
        value = getattr(obj, f.name)
        if bounds is not None and value is not None and not bounds.allows(value):
            raise OutOfRange(type(obj), f.name, value, bounds)
