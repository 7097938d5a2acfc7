"""Instructions in free language -> the structured task (config/task_schema.json): embedded and LLM parsers."""
