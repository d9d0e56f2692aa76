"""Small-number suppression for published counts, with secondary suppression so that no suppressed cell can
be worked out from a published total (NHS Digital's disclosure-control practice: counts below a threshold
are hidden, and a line holding exactly one hidden cell hides its next-smallest cell too)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

Cell = tuple[str, ...]


def suppress(counts: Mapping[Cell, int], threshold: int) -> dict[Cell, int | None]:
    """Cells of a cross-tabulation (one key part per dimension) with counts below `threshold` (but above zero)
    replaced by None, plus the fewest extra cells needed so every line (all dimensions fixed but one) has either
    no hidden cell or at least two. Zero is published: it discloses nothing about a person."""
    hidden = {cell for cell, count in counts.items() if 0 < count < threshold}
    while True:
        extra = _secondary(counts, hidden)
        if not extra:
            break
        hidden |= extra
    return {cell: None if cell in hidden else count for cell, count in counts.items()}


def _secondary(counts: Mapping[Cell, int], hidden: set[Cell]) -> set[Cell]:
    extra: set[Cell] = set()
    for line in _lines(counts).values():
        hidden_in_line = [cell for cell in line if cell in hidden or cell in extra]
        if len(hidden_in_line) == 1:
            # Hide the smallest non-zero partner; a zero is used only when nothing else is left, because a
            # hidden zero is often guessable and protects little.
            candidates = sorted((counts[c] == 0, counts[c], c) for c in line if c not in hidden and c not in extra)
            if candidates:
                extra.add(candidates[0][2])
    return extra


def _lines(counts: Mapping[Cell, int]) -> dict[tuple[int, Cell], list[Cell]]:
    """Group cells into lines: for each dimension d, the cells that agree on every other dimension. Each line
    sums to a marginal total a reader can see, so each needs protecting."""
    lines: dict[tuple[int, Cell], list[Cell]] = defaultdict(list)
    for cell in counts:
        for dimension in range(len(cell)):
            lines[(dimension, cell[:dimension] + cell[dimension + 1:])].append(cell)
    return lines


def suppress_total(total: int, threshold: int) -> int | None:
    """A published total is itself a count: hide it when it is small."""
    return None if 0 < total < threshold else total
