"""The live relay: `/v3/ws` (streaming STT) and `/v1/ws` (Voice Agent) through the service,
authenticated, capped, metered, and terminated upstream when the client goes away."""
