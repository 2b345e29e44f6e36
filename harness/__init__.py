"""Boots test kernels in QEMU (TCG) and drives them through a guest agent.

``harness.vm.VM`` is one guest's life; ``harness.arches`` holds the per-arch
QEMU profiles; ``harness.agent`` the agent's C source and protocol.
"""
