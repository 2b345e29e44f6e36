"""What a comparison compared: counts, so that "agree" says what it agrees on.

:func:`harness.compare.compare_counted` counts, per step, the observations it
held side by side (never what it could have compared but skipped: a region
whose ranges differ compares no entries, a frame the bijection pairs with no
frame compares no kpage* values).  :mod:`harness.report` renders the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

__all__ = ["COMPARED_FIELDS", "Compared", "describe_compared"]


@dataclass(frozen=True)
class Compared:
    """Counts of what one comparison (of a step, a scenario or a run) held side by side.

    * ``checks``: check steps observed on both sides;
    * ``steps``: step outcomes (ok / SIGSEGV / errno) compared;
    * ``errnos``: of the outcomes and proc-file reads compared, those where a
      side failed with an errno (the errno itself was compared);
    * ``pagemap_entries``: pagemap u64s compared, field by field;
    * ``pfns``: of those, pages where both sides name a frame (the PFN went
      through the model/guest PFN bijection);
    * ``swap_entries``: of those, pages where both sides name a swap entry (its
      type and offset went through the swap-entry bijection);
    * ``frames``: frames paired by the bijection whose kpagemap slot,
      kpageflags and kpagecount u64 were compared (three entries each);
    * ``flag_consistency``: frames whose kpagemap flags were held against
      their kpageflags on one side (both sides' frames summed);
    * ``ram_tags``: pages whose frame's first u64 (the RAM oracle) was compared;
    * ``vmas``: smaps blocks of our regions matched by range on both sides;
    * ``smaps_fields``: header parts and field lines compared in those blocks;
    * ``rollup_fields``: smaps_rollup fields compared (our regions' share).
    """

    checks: int = 0
    steps: int = 0
    errnos: int = 0
    pagemap_entries: int = 0
    pfns: int = 0
    swap_entries: int = 0
    frames: int = 0
    flag_consistency: int = 0
    ram_tags: int = 0
    vmas: int = 0
    smaps_fields: int = 0
    rollup_fields: int = 0

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Compared:
        """From a counter keyed by field name; ValueError on an unknown name."""
        unknown = set(counts) - set(COMPARED_FIELDS)
        if unknown:
            raise ValueError(f"no such count: {', '.join(sorted(unknown))}")
        return cls(**counts)

    @classmethod
    def total(cls, parts: Iterable[Compared]) -> Compared:
        """The sum of ``parts`` (an empty Compared for none)."""
        counter: Counter[str] = Counter()
        for part in parts:
            counter.update(asdict(part))
        return cls.of(counter)

    def to_json(self) -> dict[str, int]:
        return asdict(self)


#: The counts' names, in the order the report prints them.
COMPARED_FIELDS = tuple(f.name for f in fields(Compared))


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def describe_compared(c: Compared) -> str:
    """``3 checks: 48 pagemap entries (40 PFNs), 40 frames, ...``: the counts in words.

    Counts that are zero are left out, except checks and pagemap entries
    (a run that compared no entry must say so).
    """
    parts = [f"{_n(c.pagemap_entries, 'pagemap entry', 'pagemap entries')}"
             + (f" ({_n(c.pfns, 'PFN')} paired)" if c.pfns else "")
             + (f" ({_n(c.swap_entries, 'swap entry', 'swap entries')} paired)"
                if c.swap_entries else "")]
    if c.frames:
        parts.append(f"{_n(c.frames, 'frame')} (kpageflags, kpagecount, kpagemap)")
    if c.flag_consistency:
        parts.append(f"{c.flag_consistency} kpagemap = kpageflags flag words")
    if c.ram_tags:
        parts.append(_n(c.ram_tags, "RAM tag"))
    if c.vmas or c.smaps_fields:
        parts.append(f"{_n(c.smaps_fields, 'smaps field')} of {_n(c.vmas, 'VMA')}")
    if c.rollup_fields:
        parts.append(_n(c.rollup_fields, "rollup field"))
    parts.append(_n(c.steps, "step outcome"))
    if c.errnos:
        parts.append(_n(c.errnos, "errno"))
    return f"{_n(c.checks, 'check')}: {', '.join(parts)}"
