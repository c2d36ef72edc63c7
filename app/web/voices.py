"""The Voice Agent's voice catalogue, exactly as AssemblyAI documents it (reference §10).

Voice IDs are exact strings: an invented or outdated one fails at `session.update`, so the
browser only ever offers these.
"""

from __future__ import annotations

from typing import Final

# (id, description, language group)
_US = "English (US)"
_UK = "English (UK)"
VOICES: Final[tuple[tuple[str, str, str], ...]] = (
    ("ivy", "professional, deliberate, smooth", _US),
    ("james", "conversational, professional", _US),
    ("tyler", "theatrical, energetic, chatty", _US),
    ("winter", "empathetic, conversational", _US),
    ("sam", "soft, conversational, young", _US),
    ("mia", "smooth, conversational, young", _US),
    ("bella", "high-pitched, chatty", _US),
    ("david", "deep, calming, conversational", _US),
    ("jack", "smooth, direct, fast-paced", _US),
    ("kyle", "chatty, nasal, expressive", _US),
    ("helen", "soft, older, calming", _US),
    ("martha", "southern, older, warm", _US),
    ("river", "slow, calming, ASMR", _US),
    ("emma", "lively, young, conversational", _US),
    ("victor", "deep, older", _US),
    ("eleanor", "deeper, older, calming", _US),
    ("sophie", "clear, smooth, instructive", _UK),
    ("oliver", "narrative, conversational", _UK),
    ("arjun", "Hindi/Hinglish and English", "Multilingual"),
    ("ethan", "Mandarin and English", "Multilingual"),
    ("mei", "Mandarin and English", "Multilingual"),
    ("dmitri", "Russian and English", "Multilingual"),
    ("lukas", "German and English", "Multilingual"),
    ("lena", "German and English", "Multilingual"),
    ("pierre", "French and English", "Multilingual"),
    ("mina", "Korean and English", "Multilingual"),
    ("joon", "Korean and English", "Multilingual"),
    ("ren", "Japanese and English", "Multilingual"),
    ("hana", "Japanese and English", "Multilingual"),
    ("giulia", "Italian and English", "Multilingual"),
    ("luca", "Italian and English", "Multilingual"),
    ("lucia", "Spanish and English", "Multilingual"),
    ("mateo", "Spanish and English", "Multilingual"),
    ("diego", "Spanish (Latin American) and English", "Multilingual"),
)
DEFAULT_VOICE: Final = "ivy"
