"""What a chat message may contain (PROTOCOL 5 "Anonymous chat").

Error messages describe the rule broken and never quote the text: they may be logged, and
the service promises that message text stays out of logs.
"""

from __future__ import annotations

import unicodedata

MAX_MESSAGE_CHARS = 2000

# Newline and tab are the only control characters people type. Carriage return is refused
# too: clients send "\n" for line breaks, and a stray "\r" only serves to overwrite what a
# terminal or log viewer shows.
_ALLOWED_CONTROLS = frozenset("\n\t")

# Characters that render as nothing yet are not `isspace()`: a message made of them alone
# looks empty to the recipient, so it counts as blank.
_INVISIBLE_FILLERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")

# The bidirectional embeddings, overrides and isolates (PROTOCOL 5, *1.1*): they reorder
# what follows them, so "txt.exe" can be made to show as "exe.txt". The marks U+200E,
# U+200F and U+061C only nudge neutral characters and stay allowed, as right-to-left
# writers need them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class InvalidMessageText(ValueError):
    """The message text breaks the chat rules; the message names the rule, not the text."""


def _is_blank_char(char: str) -> bool:
    # Category Cf covers zero-width spaces and joiners, the BOM and bidi marks.
    return char.isspace() or char in _INVISIBLE_FILLERS or unicodedata.category(char) == "Cf"


def validate_message_text(text: object) -> str:
    """Return ``text`` unchanged if it is a valid chat message, else raise InvalidMessageText.

    Length is counted in code points, so an emoji of one code point is one character and a
    ZWJ sequence counts each of its parts.
    """
    if not isinstance(text, str):
        raise InvalidMessageText("message must be a string")
    if not text:
        raise InvalidMessageText("message must not be empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidMessageText(f"message must be at most {MAX_MESSAGE_CHARS} characters")
    if all(_is_blank_char(char) for char in text):
        raise InvalidMessageText("message must not be only white space")
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc" and char not in _ALLOWED_CONTROLS:
            raise InvalidMessageText("message must not contain control characters")
        # JSON allows "\ud800" on its own; such a lone surrogate cannot be encoded as UTF-8
        # and would fail later, in the database driver or the outgoing frame.
        if category == "Cs":
            raise InvalidMessageText("message must not contain unpaired surrogates")
        if char in _BIDI_CONTROLS:
            raise InvalidMessageText(
                "message must not contain bidirectional overrides or isolates (U+202A-U+202E, "
                "U+2066-U+2069)"
            )
    return text
