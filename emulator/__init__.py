"""A stand-in for AssemblyAI's API: REST, webhooks, streaming STT, Voice Agent, LLM Gateway."""
