"""``plugins: responses:`` in providers.yaml: how long stored responses are kept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The settings block's name, under ``plugins:``.
NAME = "responses"
DEFAULT_RETENTION_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0


class ResponsesSettings(BaseModel):
    """``plugins: responses: {retention_days: 30}``."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float = Field(
        default=DEFAULT_RETENTION_DAYS, gt=0, allow_inf_nan=False,
        description="days a stored response (store: true) stays retrievable and usable as previous_response_id, "
                    "counted from the last response that continues its conversation")

    @field_validator("retention_days", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number of days above 0, not true or false")
        return value

    @property
    def retention_s(self) -> float:
        return self.retention_days * SECONDS_PER_DAY
