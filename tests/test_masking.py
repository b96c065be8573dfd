"""The one secret masker (daemon/masking.py): what it hides, and what it leaves alone."""

from hypothesis import given
from hypothesis import strategies as st

from daemon.masking import MASK, Masker, mask


def test_every_occurrence_of_every_secret_is_masked():
    text = "key s3cret-value, token tok-12345, again s3cret-value"
    assert mask(text, ["s3cret-value", "tok-12345"]) == "key ***, token ***, again ***"


def test_short_and_empty_values_are_not_treated_as_secrets():
    assert Masker(["abc", "", None, "abcd"]).secrets == ["abcd"]
    assert mask("abc abcd", ["abc", "abcd"]) == "abc ***"


def test_a_secret_containing_another_is_masked_whole():
    assert mask("pass: hunter2-long", ["hunter2", "hunter2-long"]) == f"pass: {MASK}"


def test_none_stays_none_for_optional_texts():
    assert Masker(["secret"])(None) is None


@given(
    secret=st.text(min_size=4, max_size=20).filter(lambda s: MASK not in s and "*" not in s),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_secret_never_survives_masking_wherever_it_sits(secret, before, after):
    assert secret not in mask(before + secret + after, [secret])
