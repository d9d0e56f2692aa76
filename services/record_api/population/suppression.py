"""Small-number suppression for published counts, with secondary suppression so that no suppressed count can be
worked out from what is published (NHS Digital's disclosure-control practice: counts below a threshold are
hidden, and a line holding exactly one hidden count hides its next-smallest count too).

A table, its margins and its grand total are one protected system: a reader who sees cells, margins and the total
can solve every line (the cells of a line add up to its margin, the margins add up to the total). So the margins
and the total are suppressed as cells of the same table (`with_margins`: each dimension gains the value ALL), and
the rules run over that augmented table until nothing changes:

* every line (all dimensions fixed but one, margin lines included) hides no count or at least two;
* in a two-way table, no hidden count is a *bridge* of the hidden pattern. Hidden counts are the edges of a graph
  between row values and column values; the published equations pin down exactly the hidden counts that lie on no
  cycle of that graph (every other one can move by +d/-d around a cycle). Two lines with two hidden counts each can
  still be joined by a bridge, so a bridge gets a partner that closes a cycle through it.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping

Cell = tuple[str, ...]
Node = tuple[int, str]  # (dimension, value): a row or a column of a two-way table
ALL = "\x00all"  # the margin value of a dimension (a value no dimension has)


def with_margins(counts: Mapping[Cell, int]) -> dict[Cell, int]:
    """The table with its margins and grand total as cells: ALL in any set of positions sums over them."""
    augmented: Counter[Cell] = Counter()
    for cell, count in counts.items():
        for mask in itertools.product((False, True), repeat=len(cell)):
            augmented[tuple(ALL if summed else value for value, summed in zip(cell, mask, strict=True))] += count
    return dict(augmented)


def suppress(counts: Mapping[Cell, int], threshold: int, forced: Iterable[Cell] = ()) -> dict[Cell, int | None]:
    """Cells of a cross-tabulation (one key part per dimension) with counts below `threshold` (but above zero),
    and the `forced` cells, replaced by None, plus the fewest extra cells found so that every line has no hidden
    cell or at least two and (two dimensions) no hidden cell can be solved for. Zero is published unless forced:
    it discloses nothing about a person."""
    hidden = {cell for cell, count in counts.items() if 0 < count < threshold} | (set(forced) & counts.keys())
    while True:
        extra = _secondary(counts, hidden) or _bridge_partners(counts, hidden)
        if not extra:
            break
        hidden |= extra
    return {cell: None if cell in hidden else count for cell, count in counts.items()}


def _secondary(counts: Mapping[Cell, int], hidden: set[Cell]) -> set[Cell]:
    extra: set[Cell] = set()
    for line in lines(counts).values():
        hidden_in_line = [cell for cell in line if cell in hidden or cell in extra]
        if len(hidden_in_line) == 1:
            partner = _smallest(counts, (c for c in line if c not in hidden and c not in extra))
            if partner is not None:
                extra.add(partner)
    return extra


def _smallest(counts: Mapping[Cell, int], candidates: Iterable[Cell]) -> Cell | None:
    """The smallest non-zero count; a zero only when nothing else is left, because a hidden zero is often
    guessable and protects little."""
    ranked = sorted((counts[c] == 0, counts[c], c) for c in candidates)
    return ranked[0][2] if ranked else None


def lines(counts: Mapping[Cell, int]) -> dict[tuple[int, Cell], list[Cell]]:
    """Group cells into lines: for each dimension d, the cells that agree on every other dimension. Each line
    sums to a total a reader can see (or, with margins, includes it), so each needs protecting."""
    grouped: dict[tuple[int, Cell], list[Cell]] = defaultdict(list)
    for cell in counts:
        for dimension in range(len(cell)):
            grouped[(dimension, cell[:dimension] + cell[dimension + 1:])].append(cell)
    return grouped


def _bridge_partners(counts: Mapping[Cell, int], hidden: set[Cell]) -> set[Cell]:
    """For the first hidden cell a two-way table's equations would pin down, the published cell that puts it on
    a cycle (the smallest one joining the two sides it separates)."""
    if not hidden or len(next(iter(hidden))) != 2:
        return set()
    bridges = _bridges(hidden)
    if not bridges:
        return set()
    bridge = bridges[0]
    near = _reachable(hidden - {bridge}, (0, bridge[0]))
    far = _reachable(hidden - {bridge}, (1, bridge[1]))
    partner = _smallest(counts, (c for c in counts if c not in hidden and (0, c[0]) in far and (1, c[1]) in near))
    if partner is None:  # cannot happen once every line holds two hidden cells; fail safe all the same
        return set(counts) - hidden
    return {partner}


def _graph(hidden: set[Cell]) -> dict[Node, list[tuple[Node, Cell]]]:
    graph: dict[Node, list[tuple[Node, Cell]]] = defaultdict(list)
    for cell in sorted(hidden):
        row, column = (0, cell[0]), (1, cell[1])
        graph[row].append((column, cell))
        graph[column].append((row, cell))
    return graph


def _reachable(hidden: set[Cell], start: Node) -> set[Node]:
    graph, seen, queue = _graph(hidden), {start}, deque([start])
    while queue:
        for neighbour, _cell in graph.get(queue.popleft(), ()):
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return seen


def _bridges(hidden: set[Cell]) -> list[Cell]:
    """Hidden cells on no cycle (Tarjan's bridge finding, iterative: tables can be large)."""
    graph = _graph(hidden)
    order: dict[Node, int] = {}
    low: dict[Node, int] = {}
    found: list[Cell] = []
    for root in sorted(graph):
        if root in order:
            continue
        order[root] = low[root] = len(order)
        stack: list[tuple[Node, Cell | None, Iterable[tuple[Node, Cell]]]] = [(root, None, iter(graph[root]))]
        while stack:
            node, via, edges = stack[-1]
            step = next(((n, c) for n, c in edges if c != via), None)
            if step is None:
                stack.pop()
                if stack and via is not None:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[node])
                    if low[node] > order[parent]:
                        found.append(via)
                continue
            neighbour, cell = step
            if neighbour in order:
                low[node] = min(low[node], order[neighbour])
            else:
                order[neighbour] = low[neighbour] = len(order)
                stack.append((neighbour, cell, iter(graph[neighbour])))
    return sorted(found)


def suppress_total(total: int, threshold: int) -> int | None:
    """A total on its own is itself a count: hide it when it is small."""
    return None if 0 < total < threshold else total
