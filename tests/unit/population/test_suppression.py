import itertools
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.record_api.population.suppression import ALL, lines, suppress, suppress_total, with_margins


def test_small_counts_are_hidden_and_zero_is_published() -> None:
    result = suppress({("F",): 3, ("M",): 120, ("U",): 0}, threshold=5)
    assert result[("U",)] == 0
    assert result[("F",)] is None
    # With a published total, F could be recovered from the total minus M: M must be hidden too.
    assert result[("M",)] is None


def test_one_dimension_line_with_two_small_cells_needs_nothing_more() -> None:
    result = suppress({("a",): 2, ("b",): 3, ("c",): 50, ("d",): 60}, threshold=5)
    assert result == {("a",): None, ("b",): None, ("c",): 50, ("d",): 60}


def test_cross_tab_secondary_suppression_protects_rows_and_columns() -> None:
    counts = {
        ("0-17", "F"): 40, ("0-17", "M"): 2,
        ("18-64", "F"): 300, ("18-64", "M"): 280,
        ("65+", "F"): 90, ("65+", "M"): 85,
    }
    result = suppress(counts, threshold=5)
    assert result[("0-17", "M")] is None
    assert result[("0-17", "F")] is None  # row partner: otherwise row total - F reveals M
    hidden_in_m = [cell for cell in counts if cell[1] == "M" and result[cell] is None]
    hidden_in_f = [cell for cell in counts if cell[1] == "F" and result[cell] is None]
    assert len(hidden_in_m) >= 2 and len(hidden_in_f) >= 2  # columns protected too


def _lines_safe(counts, result) -> bool:
    for dimension in range(len(next(iter(counts)))):
        groups = {}
        for cell in counts:
            groups.setdefault(cell[:dimension] + cell[dimension + 1:], []).append(cell)
        for cells in groups.values():
            if sum(result[c] is None for c in cells) == 1:
                return False
    return True


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=6, max_size=6), st.integers(2, 10))
def test_no_line_ever_has_exactly_one_hidden_cell(values, threshold) -> None:
    cells = list(itertools.product(["a", "b", "c"], ["x", "y"]))
    counts = dict(zip(cells, values, strict=True))
    result = suppress(counts, threshold)
    assert all(result[c] is None for c in cells if 0 < counts[c] < threshold)
    assert _lines_safe(counts, result)


def test_totals() -> None:
    assert suppress_total(3, 5) is None
    assert suppress_total(0, 5) == 0
    assert suppress_total(10, 5) == 10


# ---------------------------------------------------------------- a table, its margins and its total as one system


def _hidden_but_determined(counts, shown) -> set:
    """Hidden entries (cells, margins, total) that the published equations pin down exactly: every line of the
    augmented table says sum(entries) - its ALL entry = 0. An entry is determined when its unit vector lies in the
    row space of the equations restricted to the hidden entries (Gaussian elimination over the rationals)."""
    hidden = sorted(c for c, v in shown.items() if v is None)
    column = {c: i for i, c in enumerate(hidden)}
    rows = []
    for (dimension, _rest), line in lines(counts).items():
        row = [Fraction(0)] * len(hidden)
        for cell in line:
            if cell in column:
                row[column[cell]] = Fraction(-1 if cell[dimension] == ALL else 1)
        if any(row):
            rows.append(row)
    pivots, rank = [], 0
    for col in range(len(hidden)):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][col] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        rows[rank] = [v / rows[rank][col] for v in rows[rank]]
        for r in range(len(rows)):
            if r != rank and rows[r][col] != 0:
                rows[r] = [a - rows[r][col] * b for a, b in zip(rows[r], rows[rank], strict=True)]
        pivots.append(col)
        rank += 1
    free = set(range(len(hidden))) - set(pivots)
    return {hidden[col] for i, col in enumerate(pivots) if all(rows[i][f] == 0 for f in free)}


small_or_large = st.one_of(st.integers(0, 12), st.integers(0, 80))


@st.composite
def tables(draw):
    rows, columns = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    cells = list(itertools.product([f"r{i}" for i in range(rows)], [f"c{j}" for j in range(columns)]))
    if draw(st.booleans()):
        cells = [(r,) for r in sorted({r for r, _c in cells})]  # a one-way table
    return {cell: draw(small_or_large) for cell in cells}


@settings(max_examples=300, deadline=None)
@given(tables(), st.integers(2, 10))
def test_no_hidden_cell_margin_or_total_can_be_solved_for(counts, threshold) -> None:
    augmented = with_margins(counts)
    shown = suppress(augmented, threshold)
    assert all(shown[c] is None for c in augmented if 0 < augmented[c] < threshold)  # margins and total too
    for line in lines(augmented).values():
        assert sum(shown[c] is None for c in line) != 1, line
    assert not _hidden_but_determined(augmented, shown)


def test_a_hidden_margin_cannot_be_recovered_from_published_cells_and_the_total() -> None:
    # The audit's attack: 0-4 = 5 boys; 5-17 = 12 girls (published as cells, but its margin hidden), total 127.
    counts = {("0-4", "F"): 0, ("0-4", "M"): 5, ("5-17", "F"): 12, ("5-17", "M"): 0, ("18-24", "F"): 10,
              ("18-24", "M"): 40, ("25-34", "F"): 30, ("25-34", "M"): 30}
    augmented = with_margins(counts)
    shown = suppress(augmented, threshold=10)
    assert shown[("0-4", ALL)] is None and shown[("0-4", "M")] is None
    assert sum(shown[("5-17", sex)] is None for sex in ("F", "M", ALL)) >= 2  # the 5-17 row cannot be summed
    assert not _hidden_but_determined(augmented, shown)


def test_two_lines_joined_by_a_bridge_are_closed_into_a_cycle() -> None:
    # Rows a, b hide a 2x2 block; rows c, d another; (a, z) joins them: every line has two hidden cells, yet the
    # joining cell is a bridge, which the equations pin down, so it needs a partner.
    big = 500
    counts = {(r, col): big for r in "abcd" for col in "wxyz"}
    for cell in [("a", "w"), ("a", "x"), ("b", "w"), ("b", "x"), ("c", "y"), ("c", "z"), ("d", "y"), ("d", "z"),
                 ("a", "z")]:
        counts[cell] = 1
    shown = suppress(counts, threshold=5)
    assert not _hidden_but_determined_plain(counts, shown)


def _hidden_but_determined_plain(counts, shown) -> set:
    """As _hidden_but_determined, for a table without margin cells whose line totals are published."""
    augmented = with_margins(counts)
    return _hidden_but_determined(augmented, {**{c: augmented[c] for c in augmented}, **shown})
