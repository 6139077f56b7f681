"""flowgate's response metadata as typed values.

Every Invoke answer (success or error) carries the provider's rate-limit
window as ``x-ratelimit-*`` metadata, and, for a caller with a quota, its
balance as ``x-flowgate-*`` metadata. Absent headers are ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

Metadata = Iterable[Tuple[str, Union[str, bytes]]]


def as_dict(*sources: Optional[Metadata]) -> Dict[str, str]:
    """Text metadata of one or more sources as one dict (later sources win)."""
    merged: Dict[str, str] = {}
    for source in sources:
        for key, value in source or ():
            if not key.endswith("-bin") and isinstance(value, str):
                merged[key.lower()] = value
    return merged


def _count(md: Mapping[str, str], key: str) -> Optional[int]:
    value = md.get(key)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def _number(md: Mapping[str, str], key: str) -> Optional[float]:
    value = md.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _seconds(md: Mapping[str, str], key: str) -> Optional[timedelta]:
    seconds = _count(md, key)
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass(frozen=True)
class RateLimit:
    """The provider's rate-limit window after the call (``x-ratelimit-*``)."""

    limit: Optional[int] = None
    remaining: Optional[int] = None
    reset: Optional[datetime] = None
    retry_after: Optional[timedelta] = None

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> Optional["RateLimit"]:
        reset = _count(md, "x-ratelimit-reset")
        found = cls(
            limit=_count(md, "x-ratelimit-limit"),
            remaining=_count(md, "x-ratelimit-remaining"),
            reset=None if reset is None else datetime.fromtimestamp(reset, tz=timezone.utc),
            retry_after=_seconds(md, "x-ratelimit-retry-after"),
        )
        return None if found == cls() else found


@dataclass(frozen=True)
class CallerQuota:
    """The calling caller's balance (``x-flowgate-*``), when it has a quota."""

    requests_remaining: Optional[int] = None
    requests_reset_after: Optional[timedelta] = None
    credits_remaining: Optional[float] = None
    credits_reset_after: Optional[timedelta] = None

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> Optional["CallerQuota"]:
        found = cls(
            requests_remaining=_count(md, "x-flowgate-requests-remaining"),
            requests_reset_after=_seconds(md, "x-flowgate-requests-reset-after"),
            credits_remaining=_number(md, "x-flowgate-credits-remaining"),
            credits_reset_after=_seconds(md, "x-flowgate-credits-reset-after"),
        )
        return None if found == cls() else found


REPLAYED_HEADER = "x-idempotent-replayed"
