"""The one secret masker: known secrets become *** in any text we log, show or raise.

A last line of defence behind code that never puts a secret in text in the first place: log
lines (daemon/logs.py), the status report's error texts, and the clients' errors, which quote
what a server answered (a server may echo a credential back).
"""

from collections.abc import Iterable

MASK = "***"
# Shorter values are not treated as secrets: masking every "abc" would garble the text while
# hiding nothing a guess would not find.
MIN_SECRET_LENGTH = 4


class Masker:
    """`masker(text)`: the text with every secret replaced; None stays None."""

    def __init__(self, secrets: Iterable[str | None]):
        kept = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is masked whole, not around it.
        self.secrets = sorted(kept, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with these secrets masked (for secrets that change, such as a refreshed token)."""
    return Masker(secrets)(text)
