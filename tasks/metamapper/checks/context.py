"""The variables a check's SQL may use, as Jinja2 (upstream's names).

The SQL text is a Jinja2 template rendered with the execution's date: ``ds``,
``yesterday_ds``, ``tomorrow_ds`` (dates), ``execution_date``, ``prev_execution_date``,
``next_execution_date`` (UTC timestamps a check interval apart). Rendering is sandboxed:
a template reaches nothing but these values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

_ENVIRONMENT = SandboxedEnvironment(autoescape=False)


@dataclass(frozen=True)
class CheckContext:
    epoch: int
    interval: dt.timedelta

    @property
    def execution_date(self) -> dt.datetime:
        """The epoch as a naive UTC timestamp, as upstream renders it."""
        return dt.datetime.fromtimestamp(self.epoch, dt.UTC).replace(tzinfo=None)

    def variables(self) -> dict[str, Any]:
        when = self.execution_date
        ds = when.date()
        return {
            "ds": ds,
            "tomorrow_ds": ds + dt.timedelta(days=1),
            "yesterday_ds": ds - dt.timedelta(days=1),
            "execution_date": when,
            "next_execution_date": when + self.interval,
            "prev_execution_date": when - self.interval,
        }

    def render(self, sql_text: str) -> str:
        return _ENVIRONMENT.from_string(sql_text).render(self.variables())
