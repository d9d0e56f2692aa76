import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from services.record_api.population.chart import bar_chart
from services.record_api.population.deprivation import SYNTHETIC_TABLE, DeprivationLookup
from services.record_api.population.pseudonym import Pseudonymiser

SECRET = b"k" * 32


def test_pseudonyms_link_within_a_recipient_but_not_across() -> None:
    a1, a2, b = Pseudonymiser(SECRET, "ics-bi-team"), Pseudonymiser(SECRET, "ics-bi-team"), Pseudonymiser(
        SECRET, "university-x")
    assert a1.pseudonym("9990000018") == a2.pseudonym("9990000018")
    assert a1.pseudonym("9990000018") != b.pseudonym("9990000018")
    assert a1.pseudonym("9990000018") != a1.pseudonym("9990000026")
    assert "9990000018" not in a1.pseudonym("9990000018") and len(a1.pseudonym("x")) == 26


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonymiser(b"short", "r")


def test_deprivation_lookup_by_full_postcode_or_sector(tmp_path: Path) -> None:
    table = tmp_path / "imd.csv"
    table.write_text("postcode,lsoa_code,imd_decile\nLS1 4AP,E01011365,2\nLS6 1,E01011700,7\n")
    lookup = DeprivationLookup.from_csv(table)
    assert lookup.decile("ls14ap") == 2
    assert lookup.decile("LS6 1XY") == 7  # sector fallback
    assert lookup.decile("ZZ9 9ZZ") is None and lookup.decile(None) is None


def test_bad_lookup_files_say_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "a.csv"
    missing.write_text("postcode,decile\nLS1 4AP,2\n")
    with pytest.raises(ValueError, match="missing column"):
        DeprivationLookup.from_csv(missing)
    out_of_range = tmp_path / "b.csv"
    out_of_range.write_text("postcode,lsoa_code,imd_decile\nLS1 4AP,E01,11\n")
    with pytest.raises(ValueError, match="line 2"):
        DeprivationLookup.from_csv(out_of_range)


def test_the_shipped_synthetic_table_loads() -> None:
    lookup = DeprivationLookup.from_csv(SYNTHETIC_TABLE)
    assert lookup.decile("LS11 8JU") is not None


def test_chart_is_valid_accessible_svg_with_escaped_labels() -> None:
    svg = bar_chart("Persons by sex", [("Female", 1200), ("Male", 1100), ("<script>x</script>", None)])
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("role") == "img" and root.find(f"{ns}title").text == "Persons by sex"
    assert "suppressed" in root.find(f"{ns}desc").text
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    bars = root.findall(f"{ns}rect[@class='bar']")
    assert [int(b.get("width")) for b in bars] == [420, 385]
