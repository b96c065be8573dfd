"""The Proxy side: the API client and the per-install clients built from each
install's settings and secret.
"""
