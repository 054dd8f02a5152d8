"""What is left of a file with shape errors, so its cross-reference checks still run in the same pass.

Pydantic stops at the shape: with one wrong type in a file, ``_cross_check``
(unknown regions, duplicate ids, ...) never ran, and an operator fixed a file
in as many rounds as it had kinds of problems. ``salvage`` cuts every part
pydantic refused out of the document — the field (its default takes its
place), or, for a field that is required, the whole element of a top-level
list (a region, a geo, a service) — until what is left validates, within a
few rounds. The cross-reference problems of that partial object are then
reported beside the shape errors, except those a cut could have caused:
problems at or around a cut path, and problems quoting the id of an element
that was cut (``geos[0].prefer[1]: unknown region 'us-east-1'`` when
``regions[0]`` was cut for its capacity). Indices in the remaining problems
are those of the file, not of the shortened lists.

Pure: no I/O; the caller validates (``validate``) and cross-checks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_ROUNDS = 25  # each round cuts at least one thing; a document this broken reports its shape errors only
_ID_KEYS = ("id", "name", "origin")
_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]")


class _Cut:
    """A top-level list element cut out (kept in place until validation, so indices stay the file's)."""


_DROPPED = _Cut()


def loc_path(loc: Sequence[Any]) -> str:
    """A pydantic error location in the file's own terms: ``geos[2].prefer[1]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


@dataclass
class Salvage:
    """The document being cut, in the file's indices, and what was cut."""

    work: dict[str, Any]
    cuts: list[str] = field(default_factory=list)  # paths cut, as the file spells them
    dropped_ids: set[str] = field(default_factory=set)  # ids/names of top-level elements cut

    def clean(self) -> dict[str, Any]:
        """The document without the cut elements, to validate."""
        return {k: [x for x in v if x is not _DROPPED] if isinstance(v, list) else v for k, v in self.work.items()}

    def _kept(self, name: str) -> list[int]:
        value = self.work.get(name)
        return [i for i, x in enumerate(value) if x is not _DROPPED] if isinstance(value, list) else []

    def to_file(self, loc: Sequence[Any]) -> tuple[Any, ...]:
        """A location in the cleaned document -> the same location in the file."""
        parts = list(loc)
        if len(parts) >= 2 and isinstance(parts[0], str) and isinstance(parts[1], int):
            kept = self._kept(parts[0])
            if 0 <= parts[1] < len(kept):
                parts[1] = kept[parts[1]]
        return tuple(parts)

    def problem_to_file(self, problem: str) -> str:
        """``sites[0].region: ...`` of the cleaned document -> ``sites[2].region: ...`` of the file."""
        m = _PATH.match(problem)
        if not m:
            return problem
        kept = self._kept(m.group(1))
        j = int(m.group(2))
        if not kept or j >= len(kept) or kept[j] == j:
            return problem
        return f"{m.group(1)}[{kept[j]}]" + problem[m.end():]

    def cut(self, loc: Sequence[Any]) -> bool:
        """Cut what the error at ``loc`` (file indices) is about; False when nothing can be cut."""
        parts: list[Any] = []
        node: Any = self.work
        for part in loc:  # the part of the location that exists in the document
            inside = (part in node if isinstance(node, dict) and isinstance(part, str)
                      else isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
            if not inside:
                break
            node = node[part]
            parts.append(part)
        # A nested list element is never cut alone (it would shift its siblings' indices): its list goes.
        for i in range(2, len(parts)):
            if isinstance(parts[i], int):
                parts = parts[:i]
                break
        if not parts:
            return False
        if len(parts) == 2 and isinstance(parts[1], int):  # a whole element of a top-level list
            element = self.work[parts[0]][parts[1]]
            if element is _DROPPED:
                return False
            self.work[parts[0]][parts[1]] = _DROPPED
            if isinstance(element, dict):
                self.dropped_ids.update(str(element[k]) for k in _ID_KEYS if isinstance(element.get(k), str | int))
        else:
            parent: Any = self.work
            for part in parts[:-1]:
                parent = parent[part]
            if not isinstance(parent, dict) or parts[-1] not in parent:
                return False
            del parent[parts[-1]]
        self.cuts.append(loc_path(parts))
        return True

    def related(self, problem: str) -> bool:
        """Whether a cross-reference problem (file indices) may come from a cut rather than from the file."""
        path = problem.split(": ", 1)[0]
        for cut in self.cuts:
            for a, b in ((path, cut), (cut, path)):
                if a == b or a.startswith(b + ".") or a.startswith(b + "["):
                    return True
        return any(f"{i!r}" in problem for i in self.dropped_ids)


def salvage(data: dict[str, Any], errors: Sequence[Sequence[Any]],
            validate: Callable[[dict[str, Any]], Any],
            validation_errors: Callable[[Exception], Sequence[Sequence[Any]] | None]) -> tuple[Any, Salvage] | None:
    """Cut ``errors``' locations out of ``data`` until ``validate`` accepts what is left: (object, Salvage),
    or None when it cannot be done in ``MAX_ROUNDS``. ``validation_errors(exc)`` gives the error locations
    of a validation failure (None for any other exception, which ends the attempt)."""
    s = Salvage(copy.deepcopy(data))
    locs = [tuple(loc) for loc in errors]
    for _ in range(MAX_ROUNDS):
        # Deepest first, so a field goes before the element that holds it is considered.
        progress = False
        for loc in sorted(set(locs), key=lambda lc: (-len(lc), str(lc))):
            progress = s.cut(loc) or progress
        if not progress:
            return None
        try:
            return validate(s.clean()), s
        except Exception as exc:
            found = validation_errors(exc)
            if found is None:
                return None
            locs = [s.to_file(loc) for loc in found]
    return None


__all__ = ["MAX_ROUNDS", "Salvage", "loc_path", "salvage"]
