"""Webhooks first (daemon/priority.py): while webhooks are served, background steps go one
at a time, spaced apart; without webhooks they go at once."""

import threading
import time

from daemon.priority import WebhooksFirst


def test_a_background_step_waits_for_the_webhook_being_served():
    first = WebhooksFirst(spacing=10)
    first.give_way()  # no webhook: goes at once
    serving, release = threading.Event(), threading.Event()
    order = []

    def webhook():
        with first.serving():
            serving.set()
            release.wait(10)
            order.append("webhook")

    def background():
        with first.serving():  # another webhook: one step may go now, the next must wait
            first.give_way()
        first.give_way()
        order.append("background")

    threads = [threading.Thread(target=webhook), threading.Thread(target=background)]
    threads[0].start()
    serving.wait(10)
    threads[1].start()
    threads[1].join(0.1)
    assert threads[1].is_alive()  # still giving way
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["webhook", "background"]


def test_under_load_background_steps_are_spaced_and_never_stop():
    first = WebhooksFirst(spacing=0.05)
    with first.serving():
        started = time.monotonic()
        for _ in range(4):
            first.give_way()
        took = time.monotonic() - started
    assert 0.14 <= took < 5  # the first at once, then three spaced 0.05 s apart


def test_without_webhooks_a_background_step_goes_on_at_once():
    first = WebhooksFirst(spacing=30)
    started = time.monotonic()
    first.give_way()
    assert time.monotonic() - started < 5  # far below the bound: it did not wait for it
