"""envoy-proxy: gives Envoy visitors Proxy mobile credentials and takes them away on time."""

__version__ = "0.1.0"
