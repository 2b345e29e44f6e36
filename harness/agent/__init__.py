"""The guest agent: its C source (``*.c``, ``agent.h``, built into the initramfs
as /init by ``images``) and the host side of its protocol."""

from pathlib import Path

#: Directory holding the agent's C sources.
SOURCE_DIR = Path(__file__).resolve().parent

__all__ = ["SOURCE_DIR"]
