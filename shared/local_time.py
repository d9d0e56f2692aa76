"""England's civil time: what a date, or a time without a zone, from an English health or care system means."""

from __future__ import annotations

from zoneinfo import ZoneInfo

# GMT in winter, BST (UTC+1) from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October.
# The zone data comes from the OS, or where it has none (a minimal image, Windows) from the pinned `tzdata` package.
LONDON = ZoneInfo("Europe/London")
