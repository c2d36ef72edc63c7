"""Identity: who is calling. Proxy keys' secrets (`Authorization`), app session cookies and
the app's IdP JWTs all resolve to one `Principal` (principal.py), through one cache with
single-flight lookups (callers.py). Key administration is app/keys/; session login and
logout routes are app/sessions/."""
