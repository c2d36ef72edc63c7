"""Upload proxy: request bodies stream straight into AssemblyAI's /v2/upload."""
