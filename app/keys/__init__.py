"""Proxy keys: the admin routes that create, list and revoke them (authentication of a
key is app/identity/)."""
