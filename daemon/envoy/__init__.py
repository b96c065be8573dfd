"""The Envoy side: the plugin and user API client, the setup steps, the dropdowns and
the plugin manifest.
"""
