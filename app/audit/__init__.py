"""The audit trail (`GET /api/audit`) and usage summaries (`GET /api/usage`)."""
