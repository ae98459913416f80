"""The exporter's defaults and bounds: what the server enforces and what the command
line's help quotes, apart from the server so that every ``tamalloc`` command, which
builds that help, does not load sockets and threads to read them."""

# Not among the ports of the Prometheus project's list of exporter defaults that we
# know of; --listen changes it.
DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"

# node_exporter's --web.max-requests default: Prometheus needs one connection per
# server scraping (two for a pair in HA), so 40 leaves room for people and probes.
DEFAULT_MAX_CONNECTIONS = 40
# A scraper sends its whole request head in one packet right after connecting.
DEFAULT_HEADER_TIMEOUT = 10.0
# Prometheus keeps an idle connection up to 5 minutes between scrapes; a scraper that
# vanished never holds a thread for longer.
DEFAULT_IDLE_TIMEOUT = 300.0
# The accepted ranges of the three (the CLI's checks): beyond a day a timeout guards
# nothing, and Python's socket timeouts overflow far beyond.
MAX_CONNECTIONS_RANGE = (1, 10_000)
TIMEOUT_RANGE = (0.1, 86_400.0)
# The request line and headers of one request, in bytes. Prometheus sends about 300;
# http.server alone allows 100 lines of 64 KiB each (6.4 MiB a connection).
MAX_HEAD_BYTES = 16 * 1024

# The OOM forecast's window (--oom-window), in seconds: see exporter.collector. Below
# 10 s a window of scrapes holds no trend; beyond a day none is linear.
DEFAULT_OOM_WINDOW = 600.0
OOM_WINDOW_RANGE = (10.0, 86_400.0)
