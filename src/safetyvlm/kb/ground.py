"""Safety fields from the knowledge base, selected by each tool's name: what the service returns by default."""

from __future__ import annotations

from safetyvlm.kb.entries import KnowledgeBase
from safetyvlm.kb.load import load_kb


def ground_report(report, kb: KnowledgeBase | None = None):
    """A copy of `report` (a `schema.SafetyReport`) whose safety fields are the knowledge-base entry of
    each tool's name, selected by that name (an id), never taken from the model's text: a model misled
    by text in the image, or by a planted passage, can then mislabel a tool but never invent advice.
    `sources` become the ids of the tool's corpus passages."""
    kb = kb or load_kb()
    tools = []
    for tool in report.tools:
        fields = kb.safety_fields(tool.name)
        tools.append(tool.model_copy(update={**fields, "sources": [p.id for p in kb.passages_for(tool.name)]}))
    return report.model_copy(update={"tools": tools})
