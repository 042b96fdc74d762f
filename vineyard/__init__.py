"""vineyard: the scouting-report domain on top of the edgespec runtime.

Field notes (shape and validation), the pest catalog, the critical-span policy
with its vocabulary, the fact check, the report prompt, the sample notes and
``ReportWriter``, which turns one note into one stored report record. The
domain may import edgespec; edgespec never imports it (tests/test_boundaries.py).
"""

from edgespec import EdgespecError


class FieldNoteError(EdgespecError, ValueError):
    """A field note (sighting JSON) that does not match the documented shape."""
