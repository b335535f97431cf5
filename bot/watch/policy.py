"""Alert policy: which matches are worth telling people about.

An alert means "this new model is a copy of an *earlier* model and its card does not say so".
The rules, in order:
- only `identical`, `weights-derived` and `tokenizer-copied` can alert; `same-architecture`
  never does (sharing Llama's architecture is how the ecosystem works: the Yi-34B lesson);
- the source must be older than the suspect (first seen wins; the earlier of two near-identical
  models is the likely original);
- a declared lineage (cardData base_model, base_model:* tags, the Hub's baseModels, or any
  declared base that itself descends from the source) is recorded, not alerted, unless the
  operator asks for declared derivatives too;
- a repo re-uploaded by its own author/org is recorded, not alerted;
- a suspect whose declared base is not indexed yet, matched to a model outside its declared
  lineage, waits: the match may be its sibling (two fine-tunes of that base); it is decided again
  when its base is indexed;
- a license conflict (restrictive source license, permissive claim) raises the severity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from fingerprints.facts import Verdict

ALERTING_VERDICTS = (Verdict.IDENTICAL, Verdict.WEIGHTS_DERIVED, Verdict.TOKENIZER_COPIED)
# Licenses whose terms survive into derivatives (attribution, use restrictions, non-commercial).
RESTRICTIVE_LICENSE_PREFIXES = ("llama", "gemma", "cc-by-nc", "cc-by-sa", "openrail", "deepseek", "qwen",
                                "gpl", "agpl", "other", "bigscience", "creativeml")
PERMISSIVE_LICENSES = ("apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "unlicense", "cc-by-4.0")


class Severity(StrEnum):
    """How bad an alert is; the one home of the names (a StrEnum: equal to its string)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Least severe first: ``alerts.min_severity`` compares by this."""
        return SEVERITIES.index(self)


# Least severe first.
SEVERITIES: tuple[Severity, ...] = tuple(Severity)
# Confidence at or above which an undeclared weight copy is high severity.
HIGH_SEVERITY_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ModelFacts:
    repo_id: str
    sha: str | None = None
    author: str | None = None
    created_at: datetime | None = None
    license: str | None = None
    declared_base_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertDecision:
    alert: bool
    severity: Severity | None  # when alert
    reason: str
    declared: bool
    license_conflict: str | None = None
    notes: tuple[str, ...] = field(default=())


def _norm(repo_id: str) -> str:
    return repo_id.strip().lower().removeprefix("https://huggingface.co/").strip("/")  # real-endpoint-constant


def _owner(facts: ModelFacts) -> str:
    return (facts.author or facts.repo_id.split("/")[0]).lower()


def license_conflict(source: ModelFacts, suspect: ModelFacts) -> str | None:
    src = (source.license or "").lower()
    sus = (suspect.license or "").lower()
    if src and sus and src != sus and src.startswith(RESTRICTIVE_LICENSE_PREFIXES) and sus in PERMISSIVE_LICENSES:
        return f"derived from a {source.license}-licensed model but the card claims {suspect.license}"
    return None


def decide_alert(
    suspect: ModelFacts,
    source: ModelFacts,
    verdict: str,
    confidence: float,
    *,
    declared_ancestors: frozenset[str] = frozenset(),
    alert_on_declared: bool = False,
    unindexed_declared: frozenset[str] = frozenset(),
) -> AlertDecision:
    """Decide whether `suspect`, matched against the reference `source`, is alert-worthy.

    `declared_ancestors` holds the repos the suspect's declared bases descend from (known to the
    store), so declaring an intermediate fine-tune of the source counts as declaring the source.
    `unindexed_declared` holds the suspect's declared bases that are not fingerprinted yet.
    """
    if verdict not in ALERTING_VERDICTS:
        return AlertDecision(False, None, f"{verdict} does not alert", declared=False)
    if _norm(source.repo_id) == _norm(suspect.repo_id):
        return AlertDecision(False, None, "same repository", declared=True)
    if source.created_at and suspect.created_at and source.created_at > suspect.created_at:
        return AlertDecision(False, None, f"{source.repo_id} is newer: {suspect.repo_id} is the likely original",
                             declared=False)
    declared_set = {_norm(b) for b in suspect.declared_base_models} | {_norm(a) for a in declared_ancestors}
    declared = _norm(source.repo_id) in declared_set
    conflict = license_conflict(source, suspect) if verdict != Verdict.TOKENIZER_COPIED else None
    notes = (f"license conflict: {conflict}",) if conflict else ()
    if _owner(source) == _owner(suspect):
        return AlertDecision(False, None, f"same owner ({_owner(source)}) re-uploaded its own model", declared=True,
                             license_conflict=conflict, notes=notes)
    if declared and not alert_on_declared:
        return AlertDecision(False, None, f"declared derivative of {source.repo_id}", declared=True,
                             license_conflict=conflict, notes=notes)
    if unindexed_declared and not declared:
        return AlertDecision(False, None, f"declares {', '.join(sorted(unindexed_declared))}, not indexed yet: "
                             f"{source.repo_id} may be a sibling", declared=False)
    if verdict == Verdict.TOKENIZER_COPIED:
        severity = Severity.LOW
    elif confidence >= HIGH_SEVERITY_CONFIDENCE or conflict:
        severity = Severity.HIGH
    else:
        severity = Severity.MEDIUM
    if declared:
        reason = f"{verdict} from {source.repo_id} (declared)"
    else:
        reason = f"undeclared {verdict} from {source.repo_id}"
        if suspect.declared_base_models:
            reason += f"; card declares {', '.join(suspect.declared_base_models)} instead"
    return AlertDecision(True, severity, reason, declared=declared, license_conflict=conflict, notes=notes)
