"""edgespec: on-device speculative decoding on GGUF models.

A small drafter proposes tokens, a larger oracle verifies them in one batched
forward pass; the output is the oracle's (greedy: identical text, sampling:
same distribution). See README.md for the data flow.
"""

__version__ = "0.1.0"


class EdgespecError(Exception):
    """Base class for every error edgespec raises on bad input (never a process crash)."""


class ModelFileError(EdgespecError):
    """A GGUF file is missing, truncated, corrupt or fails its sha256."""


class IncompatibleModelsError(EdgespecError):
    """A drafter and oracle that cannot be paired the requested way."""


class PromptError(EdgespecError):
    """An empty prompt, or one that does not fit in the context."""


class SamplingParamsError(EdgespecError, ValueError):
    """Temperature / top-k / top-p / seed out of range."""


def read_json_file(path, error: type[EdgespecError]):
    """Parse a JSON file; a missing file or bad JSON raises ``error`` naming the file (not a traceback)."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise error(f"{p}: not valid JSON ({e})") from None
