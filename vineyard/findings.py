"""What the fact check reports: a ``Finding`` (kind, message, character range, severity) and its kinds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("error", "warning")
FINDING_KINDS = (
    "unobserved_pest",  # a pest/disease the sighting does not record
    "misspelled_pest",  # a recognised misspelling of an observed pest
    "wrong_count",  # a count or "x of n" that is not in the record
    "wrong_percent",  # a percentage that matches no recorded or derived figure
    "wrong_density",  # a per-unit figure that matches no recorded or derived density
    "wrong_threshold",  # a threshold value the catalog does not have for that pest
    "wrong_comparison",  # above/below the threshold stated against the facts
    "wrong_date",
    "wrong_location",  # rows or block not in the record
    "unknown_number",  # any other number not traceable to the record
    "wrong_life_stage",  # a life stage next to a recorded pest that the sighting does not record for it
    "wrong_presence",  # a pest reported present that the sighting scouted for and found none of
    "wrong_absence",  # a pest reported absent that the sighting found
    "repeated_text",  # a sentence said twice (a looping model)
    "unknown_pest",  # a pest named that is in neither the sighting nor the pest catalog
    "unobserved_crop",  # a crop or grape variety that is not this sighting's
)


@dataclass
class Finding:
    kind: str
    message: str
    start: int
    end: int
    severity: str = "error"
    text: str = ""
    expected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
