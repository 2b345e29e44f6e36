"""The model's rules (sim/MODEL.md) and where the model's code follows each kernel function.

Coverage of "kernel code paths" needs a map from the rules the model claims
to the model code that implements them.  Both ends are read, not written by
hand, so the map follows the model as it is rewritten:

* **Rules** come from sim/MODEL.md: every bullet (and every paragraph that is
  not a bullet) of a section whose heading names a model file (``## Faults
  (`sim/mm/memory.py`, ...)``) is a rule; it is named by its lead (the text
  before its first ``": "``) and names kernel functions as ```name()```.
  ``a_pte/pmd()`` names ``a_pte()`` and ``a_pmd()``; ``a_*()`` is a pattern.
* **Model files** are the files and modules MODEL.md names (``sim/procfs.py``,
  ``mmap.py``, ``sim.pagewalk``, the package ``sim.mm``).
* **Anchors**: where the model follows kernel function ``K``.  A model
  function named ``K`` (leading underscores aside: ``__anon_vma_prepare()``
  is ``anon_vma_prepare``) is its anchor.  Failing that, every model
  function whose docstring names ``K(`` and every statement a comment naming
  ``K(`` stands before (or on) inside a function.  A kernel function with no
  anchor is *absent*: a rule names code the model lacks, and the coverage
  report says so.

:func:`load_model_rules` does the reading; :meth:`ModelRules.reached` turns
executed lines (from coverage.py) into the kernel functions reached.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import tokenize
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sim

__all__ = [
    "Anchor",
    "ModelRules",
    "ModelRulesError",
    "Rule",
    "kernel_functions_named",
    "load_model_rules",
    "parse_rules",
]

#: The model's package directory and its rule book.
SIM_DIR = Path(sim.__file__).resolve().parent
MODEL_MD = SIM_DIR / "MODEL.md"

#: ``name()`` inside a code span of MODEL.md, with ``a_pte/pmd`` and ``a_*`` forms.
_KERNEL_CALL = re.compile(r"([A-Za-z_][\w/*]*)\(\)")
_CODE_SPAN = re.compile(r"`([^`]+)`")
#: A call-like mention in a docstring or comment: ``name(`` (args or none).
_MENTION = re.compile(r"\b([A-Za-z_]\w*)\(")
#: Model files named in MODEL.md: ``sim/x.py``, ``x.py``, ``sim.x``.
_FILE_SPAN = re.compile(r"^(?:[\w/]+\.py|sim(?:\.\w+)+)$")
_LEAD_MAX = 60
#: ``(fs/proc/page.c)`` after a name in a rule's lead.
_SOURCE_PATH = re.compile(r"\s*\([^()]*[/.][^()]*\)")

How = Literal["name", "docstring", "comment"]


class ModelRulesError(ValueError):
    """MODEL.md or a model file could not be read or parsed (path and reason given)."""


@dataclass(frozen=True)
class Rule:
    """One rule of MODEL.md: its section, its lead, the kernel functions it names (in order)."""

    section: str
    name: str
    functions: tuple[str, ...]

    @property
    def title(self) -> str:
        return f"{self.section}: {self.name}"


@dataclass(frozen=True)
class Anchor:
    """Model code that follows a kernel function: reached if a line in ``lines`` ran.

    ``path`` is relative to the repository (``sim/mm/memory.py``); ``where``
    the model function holding it; ``lines`` inclusive line ranges.
    """

    path: str
    where: str
    how: How
    lines: tuple[tuple[int, int], ...]

    def ran(self, executed: Iterable[int] | set[int]) -> bool:
        """Whether any of ``lines`` is among ``executed`` (line numbers of ``path``)."""
        done = executed if isinstance(executed, set) else set(executed)
        return any(line in done for first, last in self.lines for line in range(first, last + 1))


@dataclass
class ModelRules:
    """The rules, the model files, and each named kernel function's anchors (maybe none)."""

    rules: list[Rule]
    files: list[Path]
    anchors: dict[str, list[Anchor]] = field(default_factory=dict)

    @property
    def functions(self) -> list[str]:
        """Every kernel function the rules name, first-named first."""
        return list(dict.fromkeys(f for rule in self.rules for f in rule.functions))

    @property
    def anchored_files(self) -> list[Path]:
        """The model files that hold an anchor: the only ones worth tracing.

        (sim/smaps_format.py, say, holds none: it also parses the guest's
        smaps, and tracing it would charge the compare step for nothing.)
        """
        paths = {a.path for anchors in self.anchors.values() for a in anchors}
        return [f for f in self.files if _relative(f) in paths]

    @property
    def absent(self) -> list[str]:
        """Kernel functions a rule names and the model has no anchor for."""
        return [f for f in self.functions if not self.anchors.get(f)]

    def reached(self, executed: Mapping[str, set[int]]) -> set[str]:
        """Kernel functions with an anchor whose lines ran.

        ``executed``: absolute file path -> executed line numbers (coverage.py's data).
        """
        by_rel = {_relative(Path(path)): lines for path, lines in executed.items()}
        return {
            name for name, anchors in self.anchors.items()
            if any(a.ran(by_rel.get(a.path, set())) for a in anchors)
        }


# ---------------------------------------------------------------------------
# MODEL.md
# ---------------------------------------------------------------------------


def kernel_functions_named(text: str) -> list[str]:
    """The kernel functions ``text`` names in code spans, in order, each once.

    ``folio_try_dup_anon_rmap_pte/pmd()`` gives both ``..._pte`` and ``..._pmd``;
    ``can_change_pte/pmd_writable()`` gives ``can_change_pte_writable`` and
    ``can_change_pmd_writable``; ``folio_remove_rmap_*()`` stays a pattern.
    """
    names: list[str] = []
    for span in _CODE_SPAN.findall(text):
        for token in _KERNEL_CALL.findall(span):
            names.extend(_expand_alternatives(token))
    return list(dict.fromkeys(names))


def _expand_alternatives(token: str) -> list[str]:
    """``p_x/y_s`` -> ``p_x_s``, ``p_y_s`` (the alternative replaces one ``_`` word)."""
    if "/" not in token:
        return [token]
    first, *others = token.split("/")
    prefix, _, word = first.rpartition("_")
    if not prefix:
        return [first, *others]
    suffix = ""
    if others and "_" in others[-1]:
        last_word, _, rest = others[-1].partition("_")
        suffix = "_" + rest
        others[-1] = last_word
    return [f"{prefix}_{w}{suffix}" for w in (word, *others)]


def _rule_sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """(section title, its lines) for each ``## `` section whose heading names a ``.py`` file."""
    title: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "## end"]:
        if line.startswith("## "):
            if title is not None:
                yield title, lines
            heading = line[3:].strip()
            names_file = any(s.endswith(".py") for s in _CODE_SPAN.findall(heading))
            title = heading.split(" (")[0].strip() if names_file else None
            lines = []
        elif title is not None:
            lines.append(line)


def _items(lines: list[str]) -> Iterator[str]:
    """A section's bullets and plain paragraphs, each as one text (tables skipped)."""
    item: list[str] = []
    for line in [*lines, ""]:
        starts = line.startswith("- ")
        if starts or not line.strip() or line.startswith("|") or line.startswith("#"):
            if item:
                yield " ".join(item)
            item = [line[2:].strip()] if starts else []
        else:
            item.append(line.strip())


def _lead(item: str) -> str:
    """A rule's name: the text before its first ``": "``, without code quotes or source paths."""
    lead = item.split(": ", 1)[0] if ": " in item else item
    lead = _SOURCE_PATH.sub("", lead.replace("`", ""))
    lead = " ".join(lead.split())
    return lead if len(lead) <= _LEAD_MAX else lead[: _LEAD_MAX - 3].rstrip() + "..."


def parse_rules(text: str) -> list[Rule]:
    """The rules of MODEL.md ``text`` (rules naming no kernel function are left out)."""
    rules = []
    for section, lines in _rule_sections(text):
        for item in _items(lines):
            functions = kernel_functions_named(item)
            if functions:
                rules.append(Rule(section, _lead(item), tuple(functions)))
    return rules


def _model_files(text: str) -> list[Path]:
    """The model's source files MODEL.md names (files, modules, packages), sorted."""
    found: set[Path] = set()
    for span in _CODE_SPAN.findall(text):
        span = span.strip()
        if not _FILE_SPAN.match(span):
            continue
        if span.endswith(".py"):
            candidates = [SIM_DIR.parent / span, SIM_DIR / span, SIM_DIR / "mm" / span]
        else:
            module = SIM_DIR.parent.joinpath(*span.split("."))
            candidates = [module.with_suffix(".py"), module]
        for path in candidates:
            if path.is_file():
                found.add(path)
                break
            if path.is_dir():
                found.update(p for p in path.glob("*.py") if p.name != "__init__.py")
                break
    return sorted(found)


# ---------------------------------------------------------------------------
# Model code
# ---------------------------------------------------------------------------


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(SIM_DIR.parent).as_posix()
    except ValueError:
        return path.as_posix()


def _body_ranges(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[tuple[int, int], ...]:
    """The function's body lines, nested functions and classes left out (they run apart)."""
    end = func.end_lineno or func.lineno
    start = func.body[0].lineno
    holes = sorted(
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(func)
        if node is not func and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                           | ast.ClassDef)
    )
    ranges, at = [], start
    for first, last in holes:
        if first > at:
            ranges.append((at, first - 1))
        at = max(at, last + 1)
    if at <= end:
        ranges.append((at, end))
    return tuple(ranges)


def _statement_lines(stmt: ast.stmt) -> tuple[int, int]:
    """A simple statement's lines; a compound one's header (up to its first child)."""
    children = [getattr(stmt, name, None) for name in ("body", "handlers", "cases")]
    firsts = [block[0].lineno for block in children if isinstance(block, list) and block]
    last = (min(firsts) - 1) if firsts else (stmt.end_lineno or stmt.lineno)
    return stmt.lineno, max(stmt.lineno, last)


def _comment_anchor(func: ast.FunctionDef | ast.AsyncFunctionDef, line: int) -> tuple[int, int]:
    """The statement of ``func`` a comment on ``line`` is about: the one it ends, else the next."""
    statements = [n for n in ast.walk(func) if isinstance(n, ast.stmt) and n is not func]
    for stmt in statements:
        first, last = _statement_lines(stmt)
        if first < line <= last:
            return first, last
    after = [s for s in statements if s.lineno >= line]
    if not after:
        return line, line
    return _statement_lines(min(after, key=lambda s: s.lineno))


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, def) of every function and method, outermost first."""
    todo: list[tuple[str, ast.AST]] = [("", tree)]
    while todo:
        prefix, node = todo.pop(0)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child
                todo.append((f"{name}.", child))
            elif isinstance(child, ast.ClassDef):
                todo.append((f"{prefix}{child.name}.", child))


def _comments(source: str) -> Iterator[tuple[int, str]]:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def _innermost(
    funcs: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]], line: int
) -> tuple[str, ast.FunctionDef | ast.AsyncFunctionDef] | None:
    holding = [(n, f) for n, f in funcs if f.body[0].lineno <= line <= (f.end_lineno or 0)]
    return max(holding, key=lambda nf: nf[1].lineno) if holding else None


def _index_file(path: Path) -> tuple[dict[str, list[Anchor]], dict[str, list[Anchor]]]:
    """(anchors by function name, anchors by mentioned name) of one model file."""
    try:
        source = path.read_text()
        tree = ast.parse(source, str(path))
        comments = list(_comments(source))
    except (OSError, SyntaxError, tokenize.TokenError, UnicodeDecodeError) as e:
        raise ModelRulesError(f"{path}: cannot index the model file: {e}") from e
    rel = _relative(path)
    by_name: dict[str, list[Anchor]] = {}
    by_mention: dict[str, list[Anchor]] = {}
    funcs = list(_functions(tree))
    for qualname, func in funcs:
        whole = Anchor(rel, qualname, "name", _body_ranges(func))
        by_name.setdefault(func.name.lstrip("_"), []).append(whole)
        doc = ast.get_docstring(func) or ""
        for mention in dict.fromkeys(_MENTION.findall(doc)):
            anchor = Anchor(rel, qualname, "docstring", whole.lines)
            by_mention.setdefault(mention.lstrip("_"), []).append(anchor)
    for line, text in comments:
        holder = _innermost(funcs, line)
        if holder is None:
            continue  # module or class level: runs at import, not in a scenario
        qualname, func = holder
        lines = (_comment_anchor(func, line),)
        for mention in dict.fromkeys(_MENTION.findall(text)):
            by_mention.setdefault(mention.lstrip("_"), []).append(
                Anchor(rel, qualname, "comment", lines))
    return by_name, by_mention


def _anchors_of(
    kernel_function: str, by_name: dict[str, list[Anchor]], by_mention: dict[str, list[Anchor]]
) -> list[Anchor]:
    """Functions named ``kernel_function`` (or matching its ``*`` pattern), else its mentions."""
    return list(dict.fromkeys(_candidates(kernel_function, by_name, by_mention)))


def _candidates(
    kernel_function: str, by_name: dict[str, list[Anchor]], by_mention: dict[str, list[Anchor]]
) -> list[Anchor]:
    key = kernel_function.lstrip("_")
    if "*" in key:
        named = [a for n, anchors in by_name.items() if fnmatch.fnmatchcase(n, key)
                 for a in anchors]
        if named:
            return named
        return [a for n, anchors in by_mention.items() if fnmatch.fnmatchcase(n, key)
                for a in anchors]
    return by_name.get(key) or by_mention.get(key, [])


def load_model_rules(model_md: Path = MODEL_MD) -> ModelRules:
    """MODEL.md's rules and the anchors of every kernel function they name.

    Raises ModelRulesError if MODEL.md or a model file it names cannot be read.
    """
    try:
        text = model_md.read_text()
    except OSError as e:
        raise ModelRulesError(f"{model_md}: cannot read the model's rules: {e}") from e
    rules = parse_rules(text)
    files = _model_files(text)
    by_name: dict[str, list[Anchor]] = {}
    by_mention: dict[str, list[Anchor]] = {}
    for path in files:
        names, mentions = _index_file(path)
        for key, anchors in names.items():
            by_name.setdefault(key, []).extend(anchors)
        for key, anchors in mentions.items():
            by_mention.setdefault(key, []).extend(anchors)
    model = ModelRules(rules, files)
    for name in model.functions:
        model.anchors[name] = _anchors_of(name, by_name, by_mention)
    return model
