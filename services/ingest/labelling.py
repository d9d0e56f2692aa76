"""Sensitivity labelling: HL7 security labels for each resource from configurable code lists (SNOMED CT,
ICD-10, Read), plus what the source itself marked confidential, plus the S-flag on restricted patients.

The record API and the consent engine enforce these; ingest only decides them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from shared.fhir import ACT_CODE_SYSTEM, CONFIDENTIALITY_SYSTEM, SNOMED
from shared.labels import CATEGORIES, RESTRICTED, VERY_RESTRICTED, security_coding

ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-uk",
                           "http://hl7.org/fhir/sid/icd-10-cm"})
READ_SYSTEMS = frozenset({"http://read.info/readv2", "http://read.info/ctv3"})
# Channels whose every resource is social care information.
SOCIAL_CARE_CHANNELS = frozenset({"socialcare"})
_SOURCE_CONFIDENTIAL = frozenset({RESTRICTED, VERY_RESTRICTED})


@dataclass(frozen=True)
class CodeLists:
    """Per label: SNOMED codes and `system|code` pairs matched exactly; ICD-10 and Read codes by prefix."""

    exact: dict[tuple[str, str], frozenset[str]]
    icd10: tuple[tuple[str, str], ...]  # (prefix without dots, label)
    read: tuple[tuple[str, str], ...]

    def labels_for_coding(self, system: str | None, code: str) -> set[str]:
        if system in ICD10_SYSTEMS:
            bare = code.replace(".", "").upper()
            return {label for prefix, label in self.icd10 if bare.startswith(prefix)}
        if system in READ_SYSTEMS:
            return {label for prefix, label in self.read if code.startswith(prefix)}
        return set(self.exact.get((system or "", code), ()))


@cache
def load_code_lists(path: str) -> CodeLists:
    """Read and check a code-list file; unknown labels are a configuration error, not silently ignored."""
    data = json.loads(Path(path).read_text())
    exact: dict[tuple[str, str], set[str]] = {}
    icd10: list[tuple[str, str]] = []
    read: list[tuple[str, str]] = []
    for label, lists in data.items():
        if label.startswith("_"):
            continue
        if label not in CATEGORIES:
            raise ValueError(f"{path}: {label!r} is not a sensitivity category ({', '.join(CATEGORIES)})")
        for code in lists.get("snomed", []):
            exact.setdefault((SNOMED, code), set()).add(label)
        for pair in lists.get("codes", []):
            system, _, code = pair.rpartition("|")
            exact.setdefault((system, code), set()).add(label)
        icd10 += [(c.replace(".", "").upper(), label) for c in lists.get("icd10", [])]
        read += [(c, label) for c in lists.get("read", [])]
    return CodeLists({k: frozenset(v) for k, v in exact.items()}, tuple(icd10), tuple(read))


def labels_for(resource: dict[str, Any], code_lists: CodeLists, *, channel: str, confidential: bool = False,
               restricted: bool = False) -> list[str]:
    """The sorted label codes for one mapped resource."""
    labels: set[str] = set()
    for system, code in _codings(resource):
        labels |= code_lists.labels_for_coding(system, code)
    labels |= _source_labels(resource)
    if channel in SOCIAL_CARE_CHANNELS:
        labels.add("SOC")
    if confidential:
        labels.add(VERY_RESTRICTED)
    if restricted and resource.get("resourceType") == "Patient":
        labels.add(RESTRICTED)
    return sorted(labels)


def _source_labels(resource: dict[str, Any]) -> set[str]:
    """What the sender put in meta.security: categories kept; R on a Patient is the S-flag; any other R or V
    means the source marked it confidential."""
    labels: set[str] = set()
    for coding in (resource.get("meta") or {}).get("security") or []:
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if system == ACT_CODE_SYSTEM and code in CATEGORIES:
            labels.add(code)
        elif system == CONFIDENTIALITY_SYSTEM and code in _SOURCE_CONFIDENTIAL:
            is_patient = resource.get("resourceType") == "Patient"
            labels.add(RESTRICTED if is_patient and code == RESTRICTED else VERY_RESTRICTED)
    return labels


def _codings(node: Any) -> list[tuple[str | None, str]]:
    """Every (system, code) of every Coding anywhere in the resource, meta excepted."""
    found: list[tuple[str | None, str]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("code"), str) and ("system" in item or "display" in item):
                found.append((item.get("system"), item["code"]))
            stack.extend(v for k, v in item.items() if k != "meta" and isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return found


def apply_security(resource: dict[str, Any], labels: list[str]) -> None:
    """Put the labels in meta.security (replacing the sender's, which they were derived from)."""
    meta = resource.setdefault("meta", {})
    meta["security"] = [security_coding(label) for label in labels]
