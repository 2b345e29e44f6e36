"""Boots test kernels in QEMU (TCG) and drives them through a guest agent.

``harness.vm.VM`` is one guest's life; ``harness.arches`` resolves an arch
name to its QEMU profile (the ``qemu`` part of its data file in ``sim.arch``);
``harness.agent`` the agent's C source and protocol.
"""
