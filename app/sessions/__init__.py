"""App sessions: the login and logout routes (cookie sessions); resolving a caller is
app/identity/."""
