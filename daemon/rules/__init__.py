"""The access rules as pure functions: Envoy's request and payloads read into facts,
an install's settings, and event + settings + now -> a plan. The standard library only:
no I/O, no clock, no database (tests/test_architecture.py holds this).
"""
