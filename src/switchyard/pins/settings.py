"""The `pinning:` section, compiled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from switchyard.pins.poisoning import DEFAULT_ACTIONS, Action

Mode = Literal["off", "tofu", "quarantine_new"]
DEFAULT_POLL_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class PinningSettings:
    mode: Mode = "tofu"
    """Every backend's mode unless `backends` names it."""
    backends: Mapping[str, Mode] = field(default_factory=dict)
    poisoning: Mapping[str, Action] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    poll_s: float = DEFAULT_POLL_S
    """How often a gateway looks for approvals, rejections and other processes' pins."""

    @classmethod
    def disabled(cls) -> PinningSettings:
        return cls(mode="off", poisoning=dict.fromkeys(DEFAULT_ACTIONS, "off"))

    def mode_for(self, backend: str) -> Mode:
        return self.backends.get(backend, self.mode)

    @property
    def needs_store(self) -> bool:
        """Whether any item could ever need the pin store."""
        return any(m != "off" for m in (self.mode, *self.backends.values())) or any(
            a == "quarantine" for a in self.poisoning.values()
        )

    @property
    def enabled(self) -> bool:
        """Whether pinning or any poisoning rule can hide anything."""
        return self.needs_store or any(a != "off" for a in self.poisoning.values())
