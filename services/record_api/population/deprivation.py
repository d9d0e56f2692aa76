"""Deprivation decile from postcode, through an LSOA / Index of Multiple Deprivation lookup table that the
operator supplies (ONS postcode-to-LSOA lookup joined with the IMD deciles). A small synthetic table ships for
tests and the demo; real deployments point SCR_IMD_LOOKUP_FILE at the real one."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_TABLE = Path(__file__).resolve().parent / "data" / "synthetic_imd_lookup.csv"
REQUIRED_COLUMNS = ("postcode", "lsoa_code", "imd_decile")


def _key(postcode: str) -> str:
    return "".join(postcode.split()).upper()


@dataclass(frozen=True)
class Area:
    lsoa_code: str
    imd_decile: int


class DeprivationLookup:
    """Full-postcode lookup with a fallback to the postcode sector (outward code + first inward digit), which is
    what an operator's table keyed by sector provides."""

    def __init__(self, areas: dict[str, Area]) -> None:
        self._areas = areas

    @classmethod
    def from_csv(cls, path: Path) -> DeprivationLookup:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
            areas = {}
            for line, row in enumerate(reader, start=2):
                decile = int(row["imd_decile"])
                if not 1 <= decile <= 10:
                    raise ValueError(f"{path} line {line}: imd_decile must be 1-10, not {decile}")
                areas[_key(row["postcode"])] = Area(row["lsoa_code"].strip(), decile)
        return cls(areas)

    def area(self, postcode: str | None) -> Area | None:
        if not postcode:
            return None
        key = _key(postcode)
        return self._areas.get(key) or self._areas.get(key[:-2])

    def decile(self, postcode: str | None) -> int | None:
        area = self.area(postcode)
        return area.imd_decile if area else None
