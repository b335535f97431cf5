"""Hub models as the store records them.

The watch layer owns this conversion so that the Hub layer (``bot/hub``) knows nothing of the
store and the store nothing of the Hub: data flows hub -> fingerprints -> store, and only the layer
that drives that flow names both sides' types.
"""

from __future__ import annotations

from store.records import ModelRecord
from store.rows import TIER_FULL
from store.store import Store

from bot.hub.models import HubModel
from bot.hub.sources import SpecFingerprint


def model_record(model: HubModel) -> ModelRecord:
    """What the store keeps of a Hub model's listing metadata."""
    return ModelRecord(
        repo_id=model.repo_id, model_id=model.model_id, sha=model.sha, author=model.author,
        created_at=model.created_at, last_modified=model.last_modified, downloads=model.downloads,
        likes=model.likes, trending_score=model.trending_score, license=model.license,
        base_models=sorted(model.declared_base_models), tags=list(model.tags),
        library_name=model.library_name, pipeline_tag=model.pipeline_tag,
    )


def spec_record(got: SpecFingerprint) -> ModelRecord | None:
    """The Hub's metadata (creation date, declared bases) of a fingerprinted repo; None for a folder."""
    return model_record(got.model) if got.model is not None else None


def index_one(store: Store, got: SpecFingerprint, tier: str = TIER_FULL) -> tuple[int, bool]:
    """Store ``got`` in ``tier`` (store/rows.py; TIER_REFERENCE for reference models) and, for a Hub
    repo, its model record: (fingerprint id, created)."""
    fid, created = store.add_fingerprint(got.repo_id, got.sha, got.fp, tier=tier)
    record = spec_record(got)
    if record is not None:
        store.upsert_model(record)
    return fid, created
