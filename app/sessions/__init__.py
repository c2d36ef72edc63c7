"""App sessions and caller identity: proxy keys, session cookies, JWTs from the app's IdP."""
