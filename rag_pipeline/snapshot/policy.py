"""Snapshot policy: which profile serves each axis of the next snapshot.

The models file gives the default; ``set_policy`` records a promotion or rollback in the catalog
(newest row per axis wins, older rows are the history). The same table holds the ranker's
slot (``rankers.py``). Switching only changes which persisted
evidence the next snapshot selects: nothing is recomputed.

The ``cross_encoder`` slot names a query-time profile (the rerank stage's cross-encoder) and is
optional: ``set_policy(..., "cross_encoder", "none")`` switches it off (the models file's
choice included), and setting a profile again switches it back on.
"""

from __future__ import annotations

from rag_pipeline.analysis.profiles import ProfileError, Profiles
from rag_pipeline.storage.catalog.catalog import Catalog, utcnow

# Slots that ``none`` may switch off (the axes' evidence slots always name a profile).
OPTIONAL_SLOTS = ("cross_encoder",)
NONE = "none"


def effective_policy(profiles: Profiles, cat: Catalog) -> dict[str, str]:
    policy = dict(profiles.policy)
    for r in cat.rows(
        "SELECT axis, profile FROM (SELECT *, row_number() OVER (PARTITION BY axis "
        "ORDER BY set_at DESC) AS rn FROM axis_policy WHERE axis <> 'ranker') WHERE rn = 1"
    ):
        if r["axis"] in OPTIONAL_SLOTS and r["profile"] == NONE:
            policy.pop(r["axis"], None)
        elif r["profile"] in profiles:  # a profile removed from the file falls back
            policy[r["axis"]] = r["profile"]
    return policy


def set_policy(profiles: Profiles, cat: Catalog, axis: str, profile: str, note: str = "") -> None:
    if profile == NONE and axis not in OPTIONAL_SLOTS:
        raise ProfileError(f"the {axis!r} slot cannot be switched off")
    if profile != NONE:
        prof = profiles[profile]
        if prof.axis != axis:
            raise ProfileError(f"profile {profile!r} serves the {prof.axis!r} axis, not {axis!r}")
    cat.con.execute("INSERT INTO axis_policy VALUES (?, ?, ?, ?)", [axis, profile, utcnow(), note])


def policy_history(cat: Catalog) -> list[dict]:
    return cat.rows("SELECT * FROM axis_policy ORDER BY set_at")
