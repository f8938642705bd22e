"""Configuration every driver shares: tag access and reporting, device polling."""

from pydantic import Field, model_validator

from shared.config import Duration, StrictModel, require_unique


class TagBase(StrictModel):
    """Keys every tag has, whatever its protocol."""

    name: str = Field(min_length=1, max_length=200, description="Tag name, unique per device.")
    deadband: float = Field(
        default=0.0,
        ge=0,
        description="With report_by_exception: smallest change of a number that is sent.",
    )
    writable: bool = Field(default=False, description="Allow writes to this tag (off: read-only).")
    min: float | None = Field(default=None, description="Lowest value a write may set.")
    max: float | None = Field(default=None, description="Highest value a write may set.")

    @model_validator(mode="after")
    def _check_bounds(self) -> "TagBase":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class DeviceBase(StrictModel):
    """Keys every polled device has."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^/]+$",
        description="Device name, unique per agent; no '/'.",
    )
    poll_interval: Duration = Field(default=1.0, gt=0, description="Time between polls.")
    report_by_exception: bool = Field(
        default=False,
        description="Send a reading only when it changed (beyond the tag's deadband), its"
        " quality changed, or `heartbeat` passed since it was last sent.",
    )
    heartbeat: Duration = Field(
        default=60.0, gt=0, description="With report_by_exception: resend unchanged values."
    )


def check_unique_tags(tags: list[TagBase]) -> None:
    """Raise ValueError if two tags share a name."""
    require_unique((tag.name for tag in tags), "tag names")
