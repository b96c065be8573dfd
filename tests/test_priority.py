"""Webhooks first (daemon/priority.py): background steps wait for a moment without webhooks,
but never longer than the bound."""

import threading
import time

from daemon.priority import WebhooksFirst


def test_a_background_step_waits_for_the_webhook_being_served():
    first = WebhooksFirst(max_wait=10)
    serving, release = threading.Event(), threading.Event()
    order = []

    def webhook():
        with first.serving():
            serving.set()
            release.wait(10)
            order.append("webhook")

    def background():
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


def test_a_background_step_never_waits_longer_than_the_bound():
    first = WebhooksFirst(max_wait=0.05)
    with first.serving():
        started = time.monotonic()
        first.give_way()
        waited = time.monotonic() - started
    assert 0.04 <= waited < 5


def test_without_webhooks_a_background_step_goes_on_at_once():
    first = WebhooksFirst(max_wait=30)
    started = time.monotonic()
    first.give_way()
    assert time.monotonic() - started < 5  # far below the bound: it did not wait for it
