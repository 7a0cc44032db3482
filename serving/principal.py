"""Who is asking: the tenant and ACL groups a request may see.

Every read of the snapshot (search, similar, thumbnails, units) takes a ``Principal``; there is
no default that sees everything. Over HTTP it comes from the API key, never from the request;
the operator CLI names it explicitly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Units without configured groups are readable by every key of their tenant that holds this one.
TENANT_WIDE_GROUP = "all"


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    groups: frozenset[str] = Field(default_factory=lambda: frozenset({TENANT_WIDE_GROUP}))
    key_id: str | None = None  # the API key it came from (None: operator CLI, dev mode)

    @field_validator("groups", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple, set, frozenset)):
            return frozenset(g.strip() for g in value if str(g).strip())
        return value
