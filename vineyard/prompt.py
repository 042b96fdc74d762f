"""The report prompt: one fixed layout, and the field note as the plain lines the oracle reads."""

from __future__ import annotations

# One fixed layout for every report: a manager compares this week's report with last week's at a
# glance, the observation lines restate the note's counts instead of paraphrasing them, and the
# reports of a season share their wording, which is what the lookup and history drafters copy.
# Measured on the bundled samples with Qwen2.5-Coder-0.5B (tools/simulate_drafting.py): as many
# fact-check findings as the free-form prompt it replaced (5 in 18 reports each), shorter reports,
# and prompt-lookup drafting at ~1.1x instead of ~1.0x.
SYSTEM_PROMPT = (
    "You are a vineyard IPM assistant. Write a short, factual scouting report from the field note. "
    "Use only the numbers and pests in the note. Use exactly this layout:\n"
    "Summary: <one sentence: block, rows, date, what was found>\n"
    "Observations:\n"
    "- <pest> (<life stage>): <infested> of <sampled> <unit> infested (<percent>%)\n"
    "Risk: <low, moderate or high>, <one sentence why>\n"
    "Action: <one or two sentences>"
)


def describe_observation(o: dict) -> str:
    parts = [f"{o['pest']} ({o['life_stage']}): {o['sampled']} {o['unit']} sampled"]
    if "infested" in o:
        pct = 100.0 * o["infested"] / o["sampled"]
        parts.append(f"{o['infested']} infested ({pct:.0f}%)")
    if "count" in o:
        parts.append(f"{o['count']} counted")
    if "severity_pct" in o:
        parts.append(f"severity {o['severity_pct']:g}%")
    if "defoliation_pct" in o:
        parts.append(f"defoliation {o['defoliation_pct']:g}%")
    return ", ".join(parts)


def note_text(note: dict) -> str:
    """The field note as plain lines: the user message of the report prompt."""
    lines = [
        f"Block: {note['block']}" + (f" ({note['variety']})" if note.get("variety") else ""),
        f"Rows: {note['rows']}",
        f"Date: {note['date']}" + (f" {note['time']}" if note.get("time") else ""),
    ]
    if note.get("scout"):
        lines.append(f"Scout: {note['scout']}")
    if note.get("risk_class"):
        lines.append(f"Block risk class: {note['risk_class']}")
    lines.append("Observations:")
    # a nothing-found walk says so, in the words the schema's data line uses
    lines += [f"- {describe_observation(o)}" for o in note["observations"]] or ["- nothing found"]
    if note.get("weather"):
        lines.append(f"Weather: {note['weather']}")
    if note.get("notes"):
        lines.append(f"Notes: {note['notes']}")
    return "\n".join(lines)


def report_messages(note: dict) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Field note:\n" + note_text(note) + "\n\nWrite the scouting report."},
    ]
