import itertools

from hypothesis import given
from hypothesis import strategies as st

from services.record_api.population.suppression import suppress, suppress_total


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
