"""One entry point for the CLI and the apps built on edgespec: open a model pair, stream a prompt, package the record.

    gen = open_generator()                               # default pair from the catalog
    tokens = gen.chat_prompt(messages)                   # or gen.raw_prompt(text)
    for ev in gen.stream(tokens, gen.generation_params(), guard=my_guard):   # Chunk ... Done
        ...
    record = gen.record(done)                            # text, model pair, power policy, stats, provenance

A domain package (e.g. ``vineyard.writer.ReportWriter``) builds its prompt, its span guard and its
audit on top of this; nothing here knows what the text is about.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import EdgespecError, IncompatibleModelsError, PromptError, power, prompt_state
from .acceptance import SamplingParams, validate_sampling
from .calibrate import load_or_measure, load_policy_state, save_policy_state
from .model_cache import resolve_model
from .constraints import Constraint
from .drafters.bridge import BridgeDrafter
from .drafters.model import ModelDrafter
from .drafters.ondemand import OnDemandDrafter
from .engine import Engine, GenerationParams
from .events import Chunk, Done
from .llama import LlamaModel, check_same_vocab, render_chat
from .spans import SpanGuard


class PowerDeferred(EdgespecError):
    """The power governor says: battery critical and not charging, queue the report until charging."""


DEFAULT_ORACLE = "qwen2.5-coder-0.5b-instruct"
DEFAULT_DRAFT_MODEL = "smollm2-135m-instruct"
DEFAULT_DRAFTER = "cascade"
DRAFTERS = ("none", "model", "bridge", "lookup", "history", "cascade", "onnx")


def resolve(name_or_path: str, *, fetch: bool = False) -> Path:
    """A catalog name or a local GGUF path → a verified local file."""
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
    history_seed: Callable[[], Iterable[tuple[str, str]]] | None = None  # (name, text) reports an empty history starts with
    fetch: bool = False
    adaptive: bool = True
    persist_policy: bool = True  # start from (and save) what earlier processes learned about this pair's drafts
    prompt_cache: bool = True  # start from (and save) the oracle's KV cache of the latest prompt (edgespec.prompt_state)
    extra: dict = field(default_factory=dict)


class Generator:
    """An oracle, a drafter and an engine, kept loaded across reports (the KV prefix is reused)."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        if config.drafter not in DRAFTERS:
            raise EdgespecError(f"unknown drafter {config.drafter!r}; choose one of {', '.join(DRAFTERS)}")
        self.power_policy = self._power_policy()
        threads = config.n_threads or self.power_policy.n_threads
        self.oracle_path = resolve(config.oracle, fetch=config.fetch)
        self.oracle = LlamaModel(self.oracle_path, n_ctx=config.n_ctx, n_threads=threads)
        self.draft_model_path: Path | None = None
        self.drafter = None
        try:
            self.curve = load_or_measure(self.oracle)
            self.drafter = self._make_drafter(threads)
        except BaseException:
            self.close()
            raise
        # the guard is set per stream (stream(..., guard=)): without one every token is verified
        self.engine = Engine(self.oracle, self.drafter, curve=self.curve, adaptive=config.adaptive)
        self.policy_warm = False
        self.prompt_tokens_restored = 0  # prompt tokens the first generation found cached on disk
        self._prompt_on_disk: tuple[int, ...] | None = None  # the prompt whose cache this process last loaded or saved
        if config.persist_policy and self.drafter is not None:
            state = load_policy_state(str(self.oracle_path), self.oracle.n_threads, self._policy_key())
            self.policy_warm = bool(state) and self.engine.policy.restore(state)

    # ------------------------------------------------------------------ setup
    def _power_policy(self) -> power.PowerPolicy:
        return power.policy_for(mode=self.config.power_mode, battery_sim=self.config.battery_sim, allow_relaxed=self.config.allow_relaxed)

    def _load_draft_lm(self, threads):
        self.draft_model_path = resolve(self.config.draft_model, fetch=self.config.fetch)
        return LlamaModel(self.draft_model_path, n_ctx=self.config.n_ctx, n_threads=threads)

    def _draft_kind(self) -> str:
        """"model" when the draft model shares the oracle's token table, else "bridge" (its vocabulary only is read)."""
        self.draft_model_path = resolve(self.config.draft_model, fetch=self.config.fetch)
        vocab = LlamaModel(self.draft_model_path, vocab_only=True)
        try:
            check_same_vocab(self.oracle, vocab)
        except IncompatibleModelsError:
            return BridgeDrafter.name
        finally:
            vocab.close()
        return ModelDrafter.name

    def _model_or_bridge(self, lm):
        """Same vocabulary → model drafter; otherwise the cross-tokenizer bridge."""
        try:
            check_same_vocab(self.oracle, lm)
        except IncompatibleModelsError:
            return BridgeDrafter(lm, self.oracle)
        return ModelDrafter(lm, oracle_vocab=self.oracle.n_vocab)

    def _make_drafter(self, threads):
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
            from .drafters.history import HistoryDrafter
            from .drafters.history_index import HistoryIndex

            seed = {} if self.config.history_seed is None else {"templates": self.config.history_seed}
            self.history_index = HistoryIndex(self.config.history_db, **seed)
            hist = HistoryDrafter.for_oracle(self.history_index, self.oracle)
            if kind == "history":
                return hist
            from .drafters.cascade import CascadeDrafter
            from .drafters.lookup import PromptLookupDrafter

            # cheap sources first; the model drafter only where they have nothing and it pays, loaded when first
            # picked (its vocabulary, read now, says whether it drafts the oracle's tokens or text)
            sources = [hist, PromptLookupDrafter()]
            if self.config.draft_model:
                sources.append(OnDemandDrafter(self._draft_kind(), lambda: self._model_or_bridge(self._load_draft_lm(threads))))
            return CascadeDrafter(sources)
        raise EdgespecError(f"unknown drafter {kind!r}")

    def _policy_key(self) -> str:
        """The estimates belong to a drafter (and the draft model it runs, whose cost they price)."""
        key = self.config.drafter
        if self.draft_model_path is not None:
            key += "-" + self.draft_model_path.name
        return key

    def save_policy(self) -> None:
        if self.config.persist_policy and self.drafter is not None:
            save_policy_state(str(self.oracle_path), self.oracle.n_threads, self._policy_key(), self.engine.policy.to_state())

    @property
    def model_id(self) -> str:
        """History entries are keyed by the oracle's token table: another vocabulary must not reuse them."""
        return self.oracle.vocab_fingerprint()

    def _history_tokenize(self, text: str) -> list[int]:
        return self.oracle.tokenize(text, add_bos=False, special=False)

    # ------------------------------------------------------------------ prompts
    def chat_prompt(self, messages: list[dict]) -> list[int]:
        text = render_chat(self.oracle, messages)
        return self.oracle.tokenize(text, add_bos=self.oracle.add_bos, special=True)

    def raw_prompt(self, text: str, *, special: bool = True) -> list[int]:
        """``text`` as the oracle's tokens. Special-token text (``<|im_start|>``) becomes those tokens, as in
        llama-cpp-python's ``create_completion``; ``special=False`` keeps it literal text."""
        if not text or not text.strip():
            raise PromptError("empty prompt")
        return self.oracle.tokenize(text, add_bos=self.oracle.add_bos, special=special)

    # ------------------------------------------------------------------ generation
    def generation_params(self, *, max_tokens=400, temperature=0.0, top_k=0, top_p=1.0, seed=None, stop=()) -> GenerationParams:
        sp: SamplingParams = validate_sampling(temperature, top_k, top_p, seed)
        pp = self.power_policy
        gp = GenerationParams(max_tokens=int(max_tokens), sampling=sp, stop=tuple(stop))
        gp.d_max = max(0, min(gp.d_max, pp.max_draft))
        gp.d_min = max(1, pp.min_draft)
        gp.relax_unverified = bool(pp.relax_unverified)
        return gp

    def check_power(self, *, force: bool = False) -> None:
        """Raise PowerDeferred when the governor queues work until the device charges (``force``: run anyway)."""
        pp = self.power_policy
        if not pp.run_now and not force:
            raise PowerDeferred(f"power mode {pp.mode} ({pp.reason or 'battery critical'}): not generated; "
                                "try again on the charger")

    def stream(self, prompt_tokens: list[int], params: GenerationParams, cancel: threading.Event | None = None,
               *, guard: SpanGuard | None = None, constraint: Constraint | None = None) -> Iterator[Chunk | Done]:
        """Chunk events, then Done (stats carry energy and CPU time). ``guard`` is asked before drafted
        text is accepted unverified (only when the power policy relaxes); without one nothing is skipped.
        ``constraint``: a grammar the output follows (see ``edgespec.constraints``)."""
        self.engine.span_guard = guard
        cache = self.config.prompt_cache and prompt_state.enabled()
        if cache and not self.oracle.tokens:  # a fresh process: the prompt's shared prefix may be on disk
            self.prompt_tokens_restored = prompt_state.load(self.oracle)
            self._prompt_on_disk = tuple(self.oracle.tokens) if self.prompt_tokens_restored else None
        with power.EnergyMeter() as meter:
            for ev in self.engine.generate(prompt_tokens, params, cancel, constraint=constraint):
                if isinstance(ev, Done):
                    meter.stop()
                    ev.stats.energy_j = meter.joules
                    ev.stats.cpu_s = meter.cpu_s
                    self.save_policy()
                    if cache and tuple(prompt_tokens) != self._prompt_on_disk:  # the same prompt again: a write saved
                        if prompt_state.save(self.oracle, len(prompt_tokens)):
                            self._prompt_on_disk = tuple(prompt_tokens)
                yield ev

    @property
    def model_pair(self) -> dict:
        return {
            "oracle": str(self.oracle_path),
            "drafter": self.config.drafter,
            "draft_model": str(self.draft_model_path) if self.draft_model_path else None,
        }

    def record(self, done: Done) -> dict:
        """What a store keeps of one generation: text, model pair, power policy, stats, per-token provenance."""
        return {
            "text": done.text,
            "model_pair": self.model_pair,
            "policy": self.power_policy.to_dict(),
            "stats": done.stats.to_dict(),
            "provenance": [
                {"token": r.token, "start": r.start, "end": r.end, "source": r.source, "verified": r.verified}
                for r in done.records
            ],
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
