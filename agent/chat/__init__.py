"""The chat over a finished run (read-only): `session` (routing and answers, `ChatSession`), `tools` (typed
lookups over the run, `RunView`), `llm` (the tool-calling LLM agent), `web` (`latentdiff serve`), and
`format` (the text and HTML of answers, shared by the terminal and the web)."""

from latentdiff.agent.chat.session import Answer, ChatSession, ToolCall, checked_citations, read_only_store
from latentdiff.agent.chat.tools import ChatError, RunView

__all__ = ["Answer", "ChatError", "ChatSession", "RunView", "ToolCall", "checked_citations", "read_only_store"]
