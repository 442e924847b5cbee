"""Rules of notifications: channels from preferences, retry backoff, templates and escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from clinic_platform.errors import InvalidArgument
from notification import domain
from notification.domain import NotifierSettings


@pytest.mark.parametrize(
    ("preferences", "has_phone", "expected"),
    [
        ({}, False, ["EMAIL"]),
        ({}, True, ["EMAIL", "SMS"]),
        ({"opted_out_channels": ["SMS"]}, True, ["EMAIL"]),
        ({"messages": {"APPOINTMENT_CONFIRMATION": ["SMS", "PUSH"]}}, True, ["SMS", "PUSH"]),
        ({"messages": {"APPOINTMENT_CONFIRMATION": ["SMS"]}}, False, []),  # no number, no SMS
        ({"messages": {"APPOINTMENT_CONFIRMATION": []}}, True, []),  # opted out of this kind
        ({"messages": {"BILLING": []}}, False, ["EMAIL"]),  # another kind's choice does not apply
    ],
)
def test_channels_follow_the_persons_choice_for_the_kind_of_message(preferences, has_phone, expected):
    assert domain.channels_for("APPOINTMENT_BOOKED", preferences, has_phone=has_phone) == expected


def test_emergency_access_is_always_emailed_even_to_someone_who_opted_out_of_email():
    preferences = {"opted_out_channels": ["EMAIL"], "messages": {"RECORD_ACCESS": ["PUSH"]}}
    assert domain.channels_for("EMERGENCY_ACCESS_USED", preferences, has_phone=False) == ["EMAIL", "PUSH"]
    assert domain.channels_for("RECORD_ACCESS_REQUESTED", preferences, has_phone=False) == ["PUSH"]


def test_retries_back_off_exponentially_up_to_five_minutes():
    delays = [domain.retry_delay(n, 2.0) for n in (1, 2, 3, 10)]
    assert delays == [timedelta(seconds=2), timedelta(seconds=4), timedelta(seconds=8), timedelta(minutes=5)]


def test_times_are_written_in_the_clinic_zone_across_a_clock_change():
    berlin = ZoneInfo("Europe/Berlin")
    assert domain.local_time(datetime(2026, 3, 28, 8, 0, tzinfo=UTC), berlin).endswith(
        "at 09:00 (Europe/Berlin)"
    )
    assert domain.local_time(datetime(2026, 3, 30, 7, 0, tzinfo=UTC), berlin).endswith(
        "at 09:00 (Europe/Berlin)"
    )


def test_rendering_escapes_values_in_html_but_not_in_plain_text():
    subject, text, html = domain.render(
        "Hi {{ name }}", "Dear {{ name }},\n\nsee you.", {"name": "<b>Al</b>"}
    )
    assert subject == "Hi <b>Al</b>" and text == "Dear <b>Al</b>,\n\nsee you."
    assert html == "<p>Dear &lt;b&gt;Al&lt;/b&gt;,</p><p>see you.</p>"


def test_every_default_template_renders_with_the_variables_messages_get():
    variables = dict.fromkeys(domain.VARIABLES, "x")
    for event_type in domain.DEFAULTS:
        for channel in ("EMAIL", "SMS", "PUSH"):
            subject, body = domain.default_template(event_type, channel)
            domain.check_template(channel, subject, body)
            assert domain.render(subject, body, variables)[1]


def test_a_template_that_does_not_compile_or_has_a_subject_on_sms_is_refused_naming_the_field():
    with pytest.raises(InvalidArgument, match=r"template.body.*line 1"):
        domain.check_template("EMAIL", "Hi", "Dear {{ name")
    with pytest.raises(InvalidArgument, match=r"template\.subject"):
        domain.check_template("SMS", "A subject", "text")
    with pytest.raises(InvalidArgument, match=r"template\.body.*required"):
        domain.check_template("EMAIL", "Hi", "  ")


def test_a_template_naming_an_unknown_variable_is_refused_and_one_that_slips_through_does_not_render():
    with pytest.raises(InvalidArgument, match="unknown nme"):
        domain.check_template("EMAIL", "Hi", "Dear {{ nme }}")
    with pytest.raises(Exception, match="undefined"):
        domain.render("", "Dear {{ nme }}", {"name": "Al"})


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r", "\u2028", "\x85"])
def test_a_subject_template_with_a_line_break_is_refused_naming_the_field(line_break):
    with pytest.raises(InvalidArgument, match=r"template\.subject.*one line"):
        domain.check_template("EMAIL", f"Your visit{line_break}Bcc: everyone@example.org", "text")


def test_a_value_with_a_line_break_never_breaks_the_rendered_subject_but_stays_in_the_body():
    variables = {"name": "Al\r\nBcc: everyone@example.org", "clinic": "C\u2028X"}
    subject, text, _ = domain.render("Hi {{ name }} from {{ clinic }}", "Dear {{ name }}", variables)
    assert subject == "Hi Al Bcc: everyone@example.org from C X"
    assert text == "Dear Al\r\nBcc: everyone@example.org"


def test_the_lease_outlives_a_batch_whose_every_send_takes_the_full_timeout():
    settings = NotifierSettings("C", "Europe/Berlin", timedelta(hours=24), send_timeout_seconds=10.0)
    assert (settings.batch_size, settings.concurrency) == (50, 16)
    assert settings.lease_seconds == 4 * 10.0 + settings.lease_margin_seconds  # ceil(50 / 16) rounds
    one_round = NotifierSettings("C", "Europe/Berlin", timedelta(hours=24), batch_size=16, concurrency=16)
    assert one_round.lease_seconds == one_round.send_timeout_seconds + one_round.lease_margin_seconds
    with pytest.raises(ValueError, match="concurrency"):
        NotifierSettings("C", "Europe/Berlin", timedelta(hours=24), concurrency=0)
