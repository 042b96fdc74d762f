"""One entry point for the CLI and fieldlog: open a model pair, stream a report, package the record.

    gen = open_generator()                      # default pair from the catalog
    for ev in gen.stream_report(note):          # Chunk ... Done
        ...
    record = gen.report_record(done)            # what fieldlog stores
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import EdgespecError, IncompatibleModelsError, PromptError


class PowerDeferred(EdgespecError):
    """The power governor says: battery critical and not charging, queue the report until charging."""
from . import fieldnote as fieldnote_mod
from .acceptance import SamplingParams, validate_sampling
from .engine import Engine, GenerationParams
from .events import Chunk, Done

DEFAULT_ORACLE = "qwen2.5-coder-0.5b-instruct"
DEFAULT_DRAFT_MODEL = "smollm2-135m-instruct"
DEFAULT_DRAFTER = "cascade"
DRAFTERS = ("none", "model", "bridge", "lookup", "history", "cascade", "onnx")


def resolve(name_or_path: str, *, fetch: bool = False) -> Path:
    """A catalog name or a local GGUF path → a verified local file."""
    from .catalog import resolve_model

    return Path(resolve_model(name_or_path, fetch=fetch))


@dataclass
class GeneratorConfig:
    oracle: str = DEFAULT_ORACLE
    drafter: str = DEFAULT_DRAFTER
    draft_model: str = DEFAULT_DRAFT_MODEL
    n_ctx: int = 4096
    n_threads: int | None = None
    power_mode: str | None = None  # force performance|balanced|saver|critical
    battery_sim: str | None = None  # "PERCENT[:charging]"
    allow_relaxed: bool = False  # user setting: saver modes may skip verification outside critical spans
    history_db: str | None = None
    fetch: bool = False
    adaptive: bool = True
    extra: dict = field(default_factory=dict)


class Generator:
    """An oracle, a drafter and an engine, kept loaded across reports (the KV prefix is reused)."""

    def __init__(self, config: GeneratorConfig) -> None:
        from .llama import LlamaModel

        self.config = config
        if config.drafter not in DRAFTERS:
            raise EdgespecError(f"unknown drafter {config.drafter!r}; choose one of {', '.join(DRAFTERS)}")
        self.power_policy = self._power_policy()
        threads = config.n_threads or (self.power_policy.n_threads if self.power_policy else None)
        self.oracle_path = resolve(config.oracle, fetch=config.fetch)
        self.oracle = LlamaModel(self.oracle_path, n_ctx=config.n_ctx, n_threads=threads)
        self.draft_model_path: Path | None = None
        self.drafter = None
        try:
            from .calibrate import load_or_measure

            self.curve = load_or_measure(self.oracle)
            self.drafter = self._make_drafter(threads)
        except BaseException:
            self.close()
            raise
        self.engine = Engine(self.oracle, self.drafter, curve=self.curve, span_guard=self._span_guard(), adaptive=config.adaptive)

    # ------------------------------------------------------------------ setup
    def _power_policy(self):
        try:
            from . import power
        except ImportError:
            return None
        return power.policy_for(mode=self.config.power_mode, battery_sim=self.config.battery_sim, allow_relaxed=self.config.allow_relaxed)

    def _span_guard(self):
        try:
            from .spans import default_policy
        except ImportError:
            return None
        return default_policy(None)

    def _load_draft_lm(self, threads):
        from .llama import LlamaModel

        self.draft_model_path = resolve(self.config.draft_model, fetch=self.config.fetch)
        return LlamaModel(self.draft_model_path, n_ctx=self.config.n_ctx, n_threads=threads)

    def _model_or_bridge(self, lm):
        """Same vocabulary → model drafter; otherwise the cross-tokenizer bridge."""
        from .drafters.bridge import BridgeDrafter
        from .drafters.model import ModelDrafter
        from .llama import check_same_vocab

        try:
            check_same_vocab(self.oracle, lm)
        except IncompatibleModelsError:
            return BridgeDrafter(lm, self.oracle)
        return ModelDrafter(lm, oracle_vocab=self.oracle.n_vocab)

    def _make_drafter(self, threads):
        from .drafters.bridge import BridgeDrafter
        from .drafters.model import ModelDrafter
        from .llama import check_same_vocab

        kind = self.config.drafter
        if kind == "none":
            return None
        if kind == "model":
            lm = self._load_draft_lm(threads)
            try:
                check_same_vocab(self.oracle, lm)
            except IncompatibleModelsError:
                lm.close()
                raise
            return ModelDrafter(lm, oracle_vocab=self.oracle.n_vocab)
        if kind == "bridge":
            return BridgeDrafter(self._load_draft_lm(threads), self.oracle)
        if kind == "lookup":
            from .drafters.lookup import PromptLookupDrafter

            return PromptLookupDrafter()
        if kind == "onnx":
            from .drafters.onnx import make_onnx_drafter

            return make_onnx_drafter(self.config.draft_model, self.oracle, n_threads=threads or 1)
        if kind in ("history", "cascade"):
            from .drafters.history import HistoryDrafter, HistoryIndex

            self.history_index = HistoryIndex(self.config.history_db)
            hist = HistoryDrafter.for_oracle(self.history_index, self.oracle)
            if kind == "history":
                return hist
            from .drafters.cascade import CascadeDrafter
            from .drafters.lookup import PromptLookupDrafter

            # cheap sources first; the cross-tokenizer model drafter only where they have nothing and it pays
            sources = [hist, PromptLookupDrafter()]
            if self.config.draft_model:
                sources.append(self._model_or_bridge(self._load_draft_lm(threads)))
            return CascadeDrafter(sources)
        raise EdgespecError(f"unknown drafter {kind!r}")

    @property
    def model_id(self) -> str:
        """History entries are keyed by the oracle's token table: another vocabulary must not reuse them."""
        return self.oracle.vocab_fingerprint()

    def _history_tokenize(self, text: str) -> list[int]:
        return self.oracle.tokenize(text, add_bos=False, special=False)

    # ------------------------------------------------------------------ prompts
    def chat_prompt(self, messages: list[dict]) -> list[int]:
        from .llama import render_chat

        text = render_chat(self.oracle, messages)
        return self.oracle.tokenize(text, add_bos=self.oracle.add_bos, special=True)

    def raw_prompt(self, text: str) -> list[int]:
        if not text or not text.strip():
            raise PromptError("empty prompt")
        return self.oracle.tokenize(text, add_bos=self.oracle.add_bos, special=False)

    def report_prompt(self, note: dict) -> list[int]:
        note = fieldnote_mod.validate(note)
        return self.chat_prompt(fieldnote_mod.report_messages(note))

    # ------------------------------------------------------------------ generation
    def generation_params(self, *, max_tokens=400, temperature=0.0, top_k=0, top_p=1.0, seed=None, stop=()) -> GenerationParams:
        sp: SamplingParams = validate_sampling(temperature, top_k, top_p, seed)
        pp = self.power_policy
        gp = GenerationParams(max_tokens=int(max_tokens), sampling=sp, stop=tuple(stop))
        if pp is not None:
            gp.d_max = max(0, min(gp.d_max, pp.max_draft))
            gp.d_min = max(1, pp.min_draft)
            gp.relax_unverified = bool(pp.relax_unverified)
        return gp

    def stream(self, prompt_tokens: list[int], params: GenerationParams, cancel: threading.Event | None = None) -> Iterator[Chunk | Done]:
        meter = self._energy_meter()
        if meter is None:
            yield from self.engine.generate(prompt_tokens, params, cancel)
            return
        with meter:
            for ev in self.engine.generate(prompt_tokens, params, cancel):
                if isinstance(ev, Done):
                    meter.stop()
                    ev.stats.energy_j = meter.joules
                    ev.stats.cpu_s = meter.cpu_s
                yield ev

    def _energy_meter(self):
        try:
            from .power import EnergyMeter
        except ImportError:
            return None
        return EnergyMeter()

    def stream_report(self, note: dict, *, max_tokens: int = 400, temperature: float = 0.0, seed: int | None = None,
                      top_k: int = 0, top_p: float = 1.0, cancel: threading.Event | None = None,
                      force: bool = False) -> Iterator[Chunk | Done]:
        note = fieldnote_mod.validate(note)
        pp = self.power_policy
        if pp is not None and not pp.run_now and not force:
            raise PowerDeferred(f"power mode {pp.mode}: {pp.reason or 'battery critical'}; the report waits until the device charges")
        prompt = self.report_prompt(note)
        params = self.generation_params(max_tokens=max_tokens, temperature=temperature, seed=seed, top_k=top_k, top_p=top_p)
        # the guard knows this sighting's own pest spellings and block ids
        try:
            from .spans import default_policy

            self.engine.span_guard = default_policy(note)
        except ImportError:
            pass
        for ev in self.stream(prompt, params, cancel):
            if isinstance(ev, Done):
                self._annotate(ev, note)
            yield ev

    def _annotate(self, done: Done, note: dict | None) -> None:
        """Span audit and fact check, attached to the Done event (and so to the stored report)."""
        done.spans = []
        done.findings = []
        pp = self.power_policy
        done.stats.power_mode = getattr(pp, "mode", None)
        try:
            from . import spans as spans_mod
        except ImportError:
            spans_mod = None
        if spans_mod is not None:
            found = spans_mod.default_policy(note).find_spans(done.text, note)
            audit = spans_mod.audit(found, done.records, done.text)
            done.spans = audit.to_json()["spans"]
            done.stats.critical_verified_rate = audit.critical_verified_rate
            done.stats.other_verified_rate = audit.other_verified_rate
        if note is not None:
            try:
                from .facts import check_report
            except ImportError:
                check_report = None
            if check_report is not None:
                done.findings = [f.to_dict() if hasattr(f, "to_dict") else f for f in check_report(done.text, note)]

    def report_record(self, done: Done) -> dict:
        return {
            "text": done.text,
            "model_pair": {
                "oracle": str(self.oracle_path),
                "drafter": self.config.drafter,
                "draft_model": str(self.draft_model_path) if self.draft_model_path else None,
            },
            "policy": self.power_policy.to_dict() if hasattr(self.power_policy, "to_dict") else {"mode": getattr(self.power_policy, "mode", None)},
            "stats": done.stats.to_dict(),
            "provenance": [
                {"token": r.token, "start": r.start, "end": r.end, "source": r.source, "verified": r.verified}
                for r in done.records
            ],
            "spans": getattr(done, "spans", []),
            "findings": getattr(done, "findings", []),
        }

    def add_to_history(self, text: str) -> None:
        """A saved report becomes drafting material for the next ones (history/cascade drafters)."""
        index = getattr(self, "history_index", None)
        if index is not None and text.strip():
            index.add_report(text, tokenize=self._history_tokenize, model_id=self.model_id)

    def close(self) -> None:
        if getattr(self, "history_index", None) is not None:
            try:
                self.history_index.close()
            except Exception:
                pass
        if self.drafter is not None:
            try:
                self.drafter.close()
            except Exception:
                pass
        if getattr(self, "oracle", None) is not None:
            self.oracle.close()


def open_generator(oracle: str = DEFAULT_ORACLE, drafter: str = DEFAULT_DRAFTER, draft_model: str = DEFAULT_DRAFT_MODEL, **kw) -> Generator:
    return Generator(GeneratorConfig(oracle=oracle, drafter=drafter, draft_model=draft_model, **kw))
