"""Webhooks: the AssemblyAI receiver, the reconciler, the relay to callers, live status."""
