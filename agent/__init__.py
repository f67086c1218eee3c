"""latentdiff.agent: judges, the LangGraph labelling agent, aggregation, report and chat."""
