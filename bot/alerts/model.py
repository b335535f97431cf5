"""The Alert: one suspected undeclared copy, with everything a reader needs to judge it.

An Alert is built once, when the policy says "alert", and travels as JSON through the store's
outbox (``to_dict``/``from_dict``; ``to_json``/``from_json`` for a string). The evidence plot is
PNG bytes kept beside the alert, never inside the JSON: a plot is ~50-200 kB and the outbox row
should stay small and readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote


from fingerprints.facts import Verdict

from bot.errors import HubwatchError
from bot.watch.policy import SEVERITIES, AlertDecision, ModelFacts

# Where repo links point; tests and mirrors pass their own base URL.
DEFAULT_HUB_URL = "https://huggingface.co"  # real-endpoint-constant
# Bumped when a field changes meaning, so an old outbox row is recognised rather than misread.
ALERT_FORMAT_VERSION = 1


class AlertFormatError(HubwatchError):
    """An alert payload (from the outbox) is not a well-formed alert."""

    exit_code = 2


def verdict_text(verdict: str, kinds) -> str:
    """"weights-derived (rename, noise)"; a kind that only repeats the verdict ("identical") is not shown."""
    shown = [k for k in kinds if k != verdict]
    return f"{verdict} ({', '.join(shown)})" if shown else verdict


def repo_url(hub_url: str, repo_id: str) -> str:
    """Link to a model repo. The id is percent-quoted so a hostile id cannot break out of a
    markdown link or add a query string."""
    return f"{hub_url.rstrip('/')}/{quote(repo_id, safe='/')}"


@dataclass(frozen=True)
class RepoRef:
    repo_id: str
    url: str
    sha: str | None = None
    created_at: datetime | None = None

    @classmethod
    def on_hub(cls, repo_id: str, hub_url: str = DEFAULT_HUB_URL, sha: str | None = None,
               created_at: datetime | None = None) -> RepoRef:
        return cls(repo_id=repo_id, url=repo_url(hub_url, repo_id), sha=sha, created_at=created_at)

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "url": self.url, "sha": self.sha, "created_at": _iso(self.created_at)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RepoRef:
        if not isinstance(d, dict):
            raise AlertFormatError(f"alert payload: {where} must be an object")
        return cls(repo_id=_str(d, "repo_id", where), url=_str(d, "url", where),
                   sha=_opt_str(d, "sha", where), created_at=_parse_iso(d.get("created_at"), f"{where}.created_at"))


@dataclass(frozen=True)
class Alert:
    suspect: RepoRef
    source: RepoRef
    severity: str
    verdict: str
    confidence: float
    score: float
    kinds: tuple[str, ...] = ()
    reason: str = ""
    declared_base_models: tuple[str, ...] = ()
    lineage_declared: bool = False
    license_conflict: str | None = None
    evidence: tuple[str, ...] = ()
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    # Kept out of to_dict/from_dict and out of equality: see the module docstring.
    plot_png: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise AlertFormatError(f"alert severity must be one of {', '.join(SEVERITIES)}, not {self.severity!r}")
        if self.verdict not in tuple(Verdict):
            raise AlertFormatError(f"alert verdict must be one of {', '.join(Verdict)}, not {self.verdict!r}")
        for name in ("confidence", "score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise AlertFormatError(f"alert {name} must be within 0..1, not {value!r}")

    @property
    def key(self) -> str:
        """Dedupe key: one alert per (suspect revision, source)."""
        return dedupe_key(self.suspect.repo_id, self.suspect.sha, self.source.repo_id)

    @property
    def kind(self) -> str:
        """The verdict and how the copy was disguised, e.g. "weights-derived (noise, rename)"."""
        return verdict_text(self.verdict, self.kinds)

    def with_plot(self, plot_png: bytes | None) -> Alert:
        return replace(self, plot_png=plot_png)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ALERT_FORMAT_VERSION,
            "key": self.key,
            "suspect": self.suspect.to_dict(),
            "source": self.source.to_dict(),
            "severity": self.severity,
            "verdict": self.verdict,
            "confidence": self.confidence,
            "score": self.score,
            "kinds": list(self.kinds),
            "reason": self.reason,
            "declared_base_models": list(self.declared_base_models),
            "lineage_declared": self.lineage_declared,
            "license_conflict": self.license_conflict,
            "evidence": list(self.evidence),
            "created_at": _iso(self.created_at),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Any) -> Alert:
        if not isinstance(d, dict):
            raise AlertFormatError("alert payload must be a JSON object")
        if d.get("format") != ALERT_FORMAT_VERSION:
            raise AlertFormatError(f"alert payload has format {d.get('format')!r}; this hubwatch reads format "
                                   f"{ALERT_FORMAT_VERSION}")
        created = _parse_iso(d.get("created_at"), "created_at")
        if created is None:
            raise AlertFormatError("alert payload: created_at is missing")
        return cls(
            suspect=RepoRef.from_dict(d.get("suspect"), "suspect"),
            source=RepoRef.from_dict(d.get("source"), "source"),
            severity=_str(d, "severity", "alert"),
            verdict=_str(d, "verdict", "alert"),
            confidence=_float(d, "confidence"),
            score=_float(d, "score"),
            kinds=_str_tuple(d, "kinds"),
            reason=_str(d, "reason", "alert"),
            declared_base_models=_str_tuple(d, "declared_base_models"),
            lineage_declared=_bool(d, "lineage_declared"),
            license_conflict=_opt_str(d, "license_conflict", "alert"),
            evidence=_str_tuple(d, "evidence"),
            created_at=created,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Alert:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AlertFormatError(f"alert payload is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def dedupe_key(suspect_repo: str, suspect_sha: str | None, source_repo: str) -> str:
    """The outbox key of the alert about ``suspect_repo`` at ``suspect_sha`` naming ``source_repo``."""
    return f"{suspect_repo}@{suspect_sha or 'unknown'}->{source_repo}"


def build_alert(suspect: ModelFacts, source: ModelFacts, decision: AlertDecision, comparison: Any,
                hub_url: str = DEFAULT_HUB_URL, plot_png: bytes | None = None, now: datetime | None = None) -> Alert:
    """An Alert from the policy's decision and a ``fingerprints.compare.Comparison`` of source (a)
    against suspect (b); ``suspect.sha`` should be the revision that was fingerprinted."""
    if not decision.alert or decision.severity is None:
        raise AlertFormatError(f"no alert to build for {suspect.repo_id}: {decision.reason}")
    return Alert(
        suspect=RepoRef.on_hub(suspect.repo_id, hub_url, sha=suspect.sha, created_at=suspect.created_at),
        source=RepoRef.on_hub(source.repo_id, hub_url, sha=source.sha, created_at=source.created_at),
        severity=decision.severity,
        verdict=comparison.verdict,
        confidence=min(1.0, float(comparison.confidence)),
        score=min(1.0, max(0.0, float(comparison.score))),
        kinds=tuple(comparison.kinds),
        reason=decision.reason,
        declared_base_models=tuple(suspect.declared_base_models),
        lineage_declared=decision.declared,
        license_conflict=decision.license_conflict,
        evidence=tuple(comparison.evidence),
        created_at=now or datetime.now(timezone.utc),
        plot_png=plot_png,
    )


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def _parse_iso(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AlertFormatError(f"alert payload: {where} must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AlertFormatError(f"alert payload: {where} is not an ISO 8601 time: {value[:40]!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _str(d: dict, key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise AlertFormatError(f"alert payload: {where}.{key} must be a string")
    return value


def _opt_str(d: dict, key: str, where: str) -> str | None:
    return None if d.get(key) is None else _str(d, key, where)


def _float(d: dict, key: str) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AlertFormatError(f"alert payload: {key} must be a number")
    return float(value)


def _bool(d: dict, key: str) -> bool:
    value = d.get(key)
    if not isinstance(value, bool):
        raise AlertFormatError(f"alert payload: {key} must be true or false")
    return value


def _str_tuple(d: dict, key: str) -> tuple[str, ...]:
    value = d.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AlertFormatError(f"alert payload: {key} must be a list of strings")
    return tuple(value)
