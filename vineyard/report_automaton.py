"""The report grammar (schema.report_grammar / report_gbnf) as a small automaton over characters.

Why: the office rewrite (fieldlog_app/office/rewrite.py) hands a report over between the field text and the
office model mid-report. It must know, exactly, whether the grammar allows a piece of text after a prefix
(a token the office model would prefer may be one the grammar refuses there), and it must constrain the
office model's continuation from that prefix on, which llama.cpp's GBNF can only do from a grammar's start:
``gbnf_after`` writes the grammar of the rest. The language is regular (literals, a choice of risk level,
sentences of bounded length), so a set of states per prefix is all it takes; a digit in a sentence is part of
one of the data lines' figures or the note's identifiers (``schema.written_phrases``), and where several start
alike there is more than one state.
"""

from __future__ import annotations

from . import schema


class ReportAutomaton:
    """The report grammar of one validated note. States are tuples ``(element, position, phrase)``: ``phrase`` is
    the part of an identifier typed so far inside a sentence, "" elsewhere."""

    def __init__(self, note: dict):
        self.phrases = schema.written_phrases(note)
        self._body = schema.gbnf_body(note)
        lo_s, hi_s = schema.FIELD_LIMITS["summary"]
        lo_r, hi_r = schema.FIELD_LIMITS["risk_why"]
        lo_a, hi_a = schema.FIELD_LIMITS["action"]
        fields = {"summary": [("sent", lo_s, hi_s)],
                  "risk": [("alt", tuple(schema.RISK_LEVELS)), ("lit", ", "), ("sent", lo_r, hi_r)],
                  "action": [("sent", lo_a, hi_a), ("opt", lo_a, hi_a)]}
        self.elements: list[tuple] = []
        for seg in schema.segments(note):
            self.elements += [("lit", seg.text)] if seg.is_data else fields[seg.field]
        self.end = len(self.elements)

    # ------------------------------------------------------------------ states
    def _start(self, i: int) -> set[tuple]:
        if i >= self.end:
            return {(self.end, 0, "")}
        kind = self.elements[i][0]
        if kind == "lit":
            return {(i, 0, "")} if self.elements[i][1] else self._start(i + 1)
        if kind == "alt":
            return {(i, "", "")}
        if kind == "opt":  # " " and a second sentence, or nothing
            return {(i, -1, "")} | self._start(i + 1)
        return {(i, 0, "")}

    def initial(self) -> frozenset:
        return frozenset(self._start(0))

    def _phrase(self, i: int, pos: int, typed: str) -> set[tuple]:
        """The states after ``typed`` of an identifier: inside a longer one, or one unit of the sentence done."""
        out = {(i, pos, typed)} if any(p.startswith(typed) and p != typed for p in self.phrases) else set()
        if typed in self.phrases and pos + 1 <= self.elements[i][2]:
            out.add((i, pos + 1, ""))
        return out

    def _step(self, state: tuple, ch: str) -> set[tuple]:
        i, pos, typed = state
        if i >= self.end:
            return set()
        el = self.elements[i]
        if el[0] == "lit":
            if el[1][pos] != ch:
                return set()
            return self._start(i + 1) if pos + 1 == len(el[1]) else {(i, pos + 1, "")}
        if el[0] == "alt":
            m = pos + ch
            out = {(i, m, "")} if any(x.startswith(m) and x != m for x in el[1]) else set()
            return out | (self._start(i + 1) if m in el[1] else set())
        lo, hi = el[1], el[2]
        if el[0] == "opt" and pos == -1:
            return {(i, 0, "")} if ch == " " else set()
        if typed:
            return self._phrase(i, pos, typed + ch)
        out = self._phrase(i, pos, ch) if pos + 1 <= hi else set()
        if ch in ".!":
            if pos >= lo:  # the second sentence of an action is the last: after it only the end
                out |= {(self.end, 0, "")} if el[0] == "opt" else self._start(i + 1)
        elif ch not in "\n?" and not ("0" <= ch <= "9") and pos + 1 <= hi:
            out.add((i, pos + 1, ""))
        return out

    def advance(self, states: frozenset, text: str) -> frozenset:
        """The states after ``text`` (empty: the grammar refuses it there)."""
        cur = set(states)
        for ch in text:
            nxt: set = set()
            for s in cur:
                nxt |= self._step(s, ch)
            if not nxt:
                return frozenset()
            cur = nxt
        return frozenset(cur)

    def states(self, prefix: str) -> frozenset:
        return self.advance(self.initial(), prefix)

    def forced(self, states: frozenset) -> str:
        """The text the grammar forces next (the rest of a data literal), or "" where the model has a choice."""
        if len(states) != 1:
            return ""
        (i, pos, _), = states
        return self.elements[i][1][pos:] if i < self.end and self.elements[i][0] == "lit" else ""

    def accepting(self, states: frozenset) -> bool:
        return (self.end, 0, "") in states

    def finished(self, states: frozenset) -> bool:
        """Only the end is left: the grammar allows nothing more (the model's next token is its end)."""
        return bool(states) and set(states) == {(self.end, 0, "")}

    # ------------------------------------------------------------------ the grammar of the rest
    def _expr(self, j: int) -> str:
        el = self.elements[j]
        if el[0] == "lit":
            return schema._literal(el[1])
        if el[0] == "alt":
            return "(" + " | ".join(schema._literal(x) for x in el[1]) + ")"
        sentence = f"{self._body}{{{el[1]},{el[2]}}} [.!]"
        return f'(" " {sentence})?' if el[0] == "opt" else sentence

    def _rest(self, state: tuple) -> str | None:
        i, pos, typed = state
        if i >= self.end:
            return None
        el = self.elements[i]
        if el[0] == "lit":
            head = schema._literal(el[1][pos:])
        elif el[0] == "alt":
            head = "(" + " | ".join(schema._literal(x[len(pos):]) for x in el[1] if x.startswith(pos) and x != pos) + ")"
        elif el[0] == "opt" and pos == -1:
            head = self._expr(i)
        else:
            lo, hi = el[1], el[2]
            used = pos + (1 if typed else 0)  # an identifier begun is one unit of the sentence
            body = f"{self._body}{{{max(0, lo - used)},{hi - used}}} " if hi - used > 0 else ""
            rest_of = [schema._literal(p[len(typed):]) for p in self.phrases if typed and p.startswith(typed) and p != typed]
            head = ("(" + " | ".join(rest_of) + ") " if typed else "") + body + "[.!]"
        return " ".join([head] + [self._expr(j) for j in range(i + 1, self.end)])

    def gbnf_after(self, prefix: str) -> str | None:
        """A GBNF grammar (llama.cpp's) of what may follow ``prefix``; None when nothing may (the report is
        complete). ValueError when the grammar refuses ``prefix`` itself."""
        states = self.states(prefix)
        if not states:
            raise ValueError("the text is not a prefix the report grammar allows")
        rests = sorted({r for r in (self._rest(s) for s in states) if r is not None})
        if not rests:
            return None
        root = " | ".join(f"({r})" for r in rests)
        if self.accepting(states):
            root = f"({root})?"
        return f"root ::= {root}\n"
