"""The access lifecycle: the intake (one transaction per event), grants, the outbox
and its runner, issuing and revoking in Proxy, Envoy-job outcomes, the identity hook and
the watchlist.
"""
