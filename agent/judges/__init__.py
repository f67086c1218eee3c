"""Judges: name and categorise latents from their examples, and detect them in new text.

`make_judge(spec, cfg)` picks a backend (`embedding`, `vllm:URL@MODEL`, `openai:URL@MODEL`,
`transformers:PATH`, `module:Class`, or an entry point in group `latentdiff.judges`).
"""

from latentdiff.agent.judges.base import Judge, JudgeError, JudgeStats, LabelRequest
from latentdiff.agent.judges.registry import make_judge
from latentdiff.agent.judges.taxonomy import Category, Taxonomy, load_taxonomy

__all__ = [
    "Category",
    "Judge",
    "JudgeError",
    "JudgeStats",
    "LabelRequest",
    "Taxonomy",
    "load_taxonomy",
    "make_judge",
]
