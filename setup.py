"""Packaging for envoy-proxy: explicit packages, templates as package data, one console script."""

import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(
    r'__version__ = "([^"]+)"',
    Path(__file__).with_name("daemon").joinpath("__init__.py").read_text(),
).group(1)

# psycopg 3 (peewee's PostgresqlDatabase prefers it); the binary build brings its own libpq.
POSTGRES_DRIVER = "psycopg[binary]>=3.1"

setup(
    name="envoy-proxy",
    version=VERSION,
    description="Envoy visitor management → Proxy mobile access: credentials in, credentials out.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "daemon",
        "daemon.rules",
        "daemon.access",
        "daemon.envoy",
        "daemon.proxy",
        "daemon.ops",
        "db",
        "web",
        "scheduler",
        "sandbox",
    ],
    package_data={"web": ["templates/*.tpl", "static/*"]},
    include_package_data=True,
    install_requires=[
        "apscheduler>=3.11.3,<4",
        "bottle>=0.13",
        "waitress>=3.0",
        "peewee>=4.5",
        "requests>=2.32",
        # Fernet: authenticated encryption of the Proxy secret at rest.
        "cryptography>=42",
        # /metrics in Prometheus' text format.
        "prometheus_client>=0.20",
    ],
    extras_require={
        # PostgreSQL instead of the embedded SQLite (ENVOY_PROXY_DB=postgresql://…).
        "postgres": [POSTGRES_DRIVER],
        "test": [
            POSTGRES_DRIVER,  # the suite runs the database tests on both engines
            "pytest>=8",
            "time-machine>=2.14",
            "hypothesis>=6.100",
            "playwright>=1.45",
            "ruff>=0.6",
        ],
    },
    entry_points={"console_scripts": ["envoy-proxy = daemon.__main__:main"]},
)
