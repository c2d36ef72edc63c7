"""Temporary tokens for streaming STT and the Voice Agent: clamped, rate-limited, audited."""
