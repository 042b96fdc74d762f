"""One scouting report, start to finish, over an edgespec generator.

    writer = open_writer()                       # or ReportWriter(edgespec.api.open_generator(...))
    for ev in writer.stream_report(note):        # Chunk ... Done
        ...
    record = writer.report_record(done)          # what fieldlog stores and syncs

Each step runs once per note: validate it, check the power governor, build the
prompt, build the span policy (the engine's guard while it writes, the audit's
spans afterwards), stream through edgespec, then audit the spans and check the
facts into one record. The edgespec CLI loads this class by name (entry point
``edgespec.writers`` → ``notes``) for ``edgespec generate --notes FILE``.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from edgespec.api import Generator, open_generator
from edgespec.constraints import Constraint
from edgespec.events import Chunk, Done
from edgespec.spans import audit

from . import fieldnote, prompt, schema, status
from .facts import check_spans
from .seeds import template_reports
from .spans import CatalogSpanPolicy, default_policy


class ReportWriter:
    """Turns field notes into report records with one loaded ``Generator`` (kept across reports)."""

    # how the edgespec CLI reads ``--notes FILE`` before it loads any model
    load = staticmethod(fieldnote.load)
    # what an empty history index starts with (the CLI and open_writer pass it to the generator)
    history_seed = staticmethod(template_reports)
    # the line the edgespec CLI prints under a report: seconds and the share of pest facts the oracle checked
    status_line = staticmethod(status.status_line)

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        # the spans and findings of the last report, until report_record asks for them
        self._last: tuple[Done, dict] | None = None

    # ------------------------------------------------------------------ what the app shows before a report
    @property
    def power_policy(self):
        return self.generator.power_policy

    @property
    def model_pair(self) -> dict:
        return self.generator.model_pair

    # ------------------------------------------------------------------ one report
    def stream_report(self, note: Any, *, max_tokens: int | None = None, temperature: float = 0.0, seed: int | None = None,
                      top_k: int = 0, top_p: float = 1.0, cancel: threading.Event | None = None,
                      force: bool = False, layout: str = "schema") -> Iterator[Chunk | Done]:
        """Chunk events, then Done with the span audit's rates in its stats.

        ``layout="schema"`` (the default): the data lines are rendered from the note and the catalog and
        the oracle writes the summary, risk and action under the report grammar (``vineyard.schema``);
        ``"free"``: the earlier free-form prompt with no grammar (kept for comparison in the bench).
        ``max_tokens``: by default the longest report the grammar allows (``schema.max_report_chars``), so a long
        note's report is never cut short; the grammar ends it. 400 for the free-form prompt.

        Raises FieldNoteError for a bad note and PowerDeferred when the battery is critical
        (``force`` runs anyway), both before any model work.
        """
        note = fieldnote.validate(note)
        gen = self.generator
        gen.check_power(force=force)
        if layout == "schema":
            tokens = gen.chat_prompt(schema.report_messages(note))
            constraint = Constraint.lark(schema.report_grammar(note))
            max_tokens = schema.max_report_chars(note) if max_tokens is None else max_tokens
        elif layout == "free":
            tokens, constraint = gen.chat_prompt(prompt.report_messages(note)), None
            max_tokens = 400 if max_tokens is None else max_tokens
        else:
            raise ValueError(f"layout: {layout!r} is not 'schema' or 'free'")
        params = gen.generation_params(max_tokens=max_tokens, temperature=temperature, seed=seed, top_k=top_k, top_p=top_p)
        # the guard knows this sighting's own pest spellings and block ids
        policy = default_policy(note)
        for ev in gen.stream(tokens, params, cancel, guard=policy, constraint=constraint):
            if isinstance(ev, Done):
                # annotated before it is yielded: a caller may stop reading at Done
                self._last = (ev, self._annotate(ev, note, policy))
            yield ev

    def _annotate(self, done: Done, note: dict, policy: CatalogSpanPolicy) -> dict:
        """Span audit and fact check of the finished text, from the same spans."""
        done.stats.power_mode = self.generator.power_policy.mode
        spans = policy.find_spans(done.text)
        span_audit = audit(spans, done.records, done.text)
        done.stats.critical_verified_rate = span_audit.critical_verified_rate
        done.stats.other_verified_rate = span_audit.other_verified_rate
        findings = [f.to_dict() for f in check_spans(done.text, note, policy, spans)]
        return {"spans": span_audit.spans, "findings": findings}

    def report_record(self, done: Done) -> dict:
        """The stored report: text, model pair, power policy, stats, provenance, spans, findings."""
        if self._last is None or self._last[0] is not done:
            raise ValueError("report_record: this Done is not the last report this writer streamed")
        return {**self.generator.record(done), **self._last[1]}

    # ------------------------------------------------------------------ the generator's lifetime
    def add_to_history(self, text: str) -> None:
        """A saved clean report becomes drafting material for the next ones."""
        self.generator.add_to_history(text)

    def close(self) -> None:
        self._last = None
        self.generator.close()

    def __enter__(self) -> "ReportWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(**kwargs: Any) -> ReportWriter:
    """A ReportWriter over ``edgespec.api.open_generator(**kwargs)`` (the default pair unless told; an empty history
    starts from the template reports)."""
    kwargs.setdefault("history_seed", ReportWriter.history_seed)
    return ReportWriter(open_generator(**kwargs))
