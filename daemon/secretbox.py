"""Encryption at rest for the Proxy App Key Secret.

Fernet (from `cryptography`) is authenticated encryption with a versioned token format; writing
our own with raw primitives would only add ways to get it wrong. The key lives in a file
created 0600 on first start (or handed in by systemd's LoadCredential); once the database holds
a secret, a missing key file is a refusal to start, never a new key (daemon/startup.py).
"""

import os

from cryptography.fernet import Fernet, InvalidToken


class SecretBoxError(RuntimeError):
    pass


class SecretBox:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_key_file(cls, path: str, *, create: bool = True) -> "SecretBox":
        """Load the key, creating it (0600, atomically) if the file does not exist yet.

        With `create=False` a missing file is an error: a new key could not read the secrets
        encrypted with the old one, so making one would only hide the loss.
        """
        if not os.path.exists(path):
            if not create:
                raise SecretBoxError(f"key file {path} not found")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                pass  # another process created it first: use theirs
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
        with open(path, "rb") as handle:
            key = handle.read().strip()
        try:
            return cls(key)
        except ValueError:
            raise SecretBoxError(f"key file {path} does not hold a valid key") from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretBoxError(
                "a stored secret cannot be decrypted with this key file (was the key replaced?)"
            ) from None
