import pytest

from clinic_platform.errors import InvalidArgument
from clinic_platform.pagination import MAX_PAGE_SIZE, page_request


def test_zero_page_size_means_the_default_and_large_sizes_are_capped():
    assert page_request(0, "").size == 50
    assert page_request(10_000, "").size == MAX_PAGE_SIZE


def test_negative_page_size_is_rejected_naming_the_field():
    with pytest.raises(InvalidArgument) as err:
        page_request(-1, "")
    assert err.value.violations[0].field == "page_size"


def test_a_token_resumes_after_the_last_key_of_the_previous_page():
    first = page_request(2, "", {"status": "PENDING"})
    token = first.next_token(["2026-11-22T10:00:00+00:00", "a1"])
    second = page_request(2, token, {"status": "PENDING"})
    assert second.after == ["2026-11-22T10:00:00+00:00", "a1"]


def test_a_token_used_with_other_filters_is_rejected():
    token = page_request(2, "", {"status": "PENDING"}).next_token(["x"])
    with pytest.raises(InvalidArgument) as err:
        page_request(2, token, {"status": "PAID"})
    assert err.value.violations[0].field == "page_token"


@pytest.mark.parametrize("garbage", ["not-base64!", "e30", "eyJhZnRlciI6IDF9"])
def test_a_token_we_did_not_issue_is_invalid_argument(garbage):
    with pytest.raises(InvalidArgument, match="page_token"):
        page_request(10, garbage)
