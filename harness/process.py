"""A named process of the guest agent, as a handle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.agent.client import AgentClient

if TYPE_CHECKING:
    from harness.vm import VM

__all__ = ["NamedProcess"]


@dataclass(frozen=True)
class NamedProcess:
    """A process the agent serves under ``name`` in ``vm``."""

    vm: VM
    name: str
    pid: int

    @property
    def agent(self) -> AgentClient:
        return self.vm.agent

    @property
    def page_size(self) -> int:
        return self.vm.profile.page_size
