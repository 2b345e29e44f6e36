"""Host set-up: what is missing, and the message when it cannot install."""

from __future__ import annotations

import pytest

from images import hostsetup
from images.errors import MissingToolsError
from images.hostsetup import REQUIREMENTS, Requirement, missing, setup_host


def test_requirements_filter_by_arch() -> None:
    x86_only = {r.what for r in REQUIREMENTS if r.needed_for(["x86_64"])}
    assert "qemu-system-x86_64" in x86_only
    assert "powerpc64-linux-gnu-gcc" not in x86_only
    ppc = {r.what for r in REQUIREMENTS if r.needed_for(["ppc64-4k"])}
    assert "/usr/powerpc64-linux-gnu/lib/libc.a" in ppc


def test_unprivileged_user_gets_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = (
        Requirement("/nonexistent/pagemap-harness-tool", "some-package"),
        Requirement("pagemap-harness-no-such-command", "other-package", ("ppc64",)),
    )
    monkeypatch.setattr(hostsetup, "REQUIREMENTS", absent)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert [r.package for r in missing(["x86_64"])] == ["some-package"]
    with pytest.raises(MissingToolsError) as info:
        setup_host(["ppc64"])
    assert str(info.value) == (
        "missing: /nonexistent/pagemap-harness-tool (some-package), "
        "pagemap-harness-no-such-command (other-package); "
        "install them as root with: apt-get install -y -q other-package some-package"
    )
