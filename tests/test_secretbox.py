"""The Proxy secret is encrypted at rest with a key file created 0600."""

import pytest

from daemon.secretbox import SecretBox, SecretBoxError


def test_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "k" / "secret.key"
    box = SecretBox.from_key_file(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    token = box.encrypt("app-secret")
    assert "app-secret" not in token
    assert SecretBox.from_key_file(str(path)).decrypt(token) == "app-secret"
    assert "key" in repr(box) and path.read_text() not in repr(box)


def test_a_replaced_key_says_so(tmp_path):
    token = SecretBox.from_key_file(str(tmp_path / "a.key")).encrypt("x")
    with pytest.raises(SecretBoxError, match="key file"):
        SecretBox.from_key_file(str(tmp_path / "b.key")).decrypt(token)


def test_a_garbled_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.key"
    path.write_text("not a key")
    with pytest.raises(SecretBoxError, match="does not hold a valid key"):
        SecretBox.from_key_file(str(path))


def test_a_missing_key_file_is_not_made_when_creating_is_not_allowed(tmp_path):
    path = tmp_path / "secret.key"
    with pytest.raises(SecretBoxError, match=f"key file {path} not found"):
        SecretBox.from_key_file(str(path), create=False)
    assert not path.exists()
